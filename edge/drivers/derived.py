"""Derived points (pure): values the edge computes from a polled point, e.g. 10-minute rain.

``window_delta``: value(now) = source(now) - source(then), where *then* is the newest sample at
least ``window_s`` old. Until the history covers the window there is no value (never a guess).
A counter that goes backwards (the device restarted) starts the history again.
"""

from __future__ import annotations

from collections import deque

from shared.profiles import Derived


class WindowDelta:
    """Difference of a counter over a sliding window."""

    def __init__(self, spec: Derived) -> None:
        self.window_s = spec.window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, ts: float, value: float) -> float | None:
        """Take one good sample of the source; the derived value at ``ts``, if known."""
        if self._samples and value < self._samples[-1][1]:
            self._samples.clear()  # counter reset
        self._samples.append((ts, value))
        cutoff = ts - self.window_s
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()
        base_ts, base = self._samples[0]
        if base_ts > cutoff:
            return None
        return value - base
