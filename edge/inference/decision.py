"""Pure: the local close decision for an underpass barrier — forecast or the 15 cm fallback.

DESIGN §5: the barrier closes at the edge when the depth reaches the closing depth, or when
the forecast says it will within the lead time; it never waits for the hub. The edge agent's
local policy reuses :func:`should_close` (debouncing of the depth reading is the agent's).
"""

from __future__ import annotations

from edge.inference.features import CLOSING_DEPTH_CM


def should_close(depth_cm: float, forecast_warns: bool, closing_depth_cm: float = CLOSING_DEPTH_CM) -> bool:
    """Close now: the forecast warns, or the depth is at or above the closing depth."""
    return forecast_warns or depth_cm >= closing_depth_cm
