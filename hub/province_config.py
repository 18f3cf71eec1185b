"""The hub's ``[province]`` section: whether the city hub reports to the province (DESIGN §8).

Example (every key has a default; the section itself may be left out: the city stands alone)::

    [province]
    enabled = true              # the section alone turns it on
    max_records = 200000        # the province outbox's size (site states are thinned when full)
    site_state_every_s = 30     # how often each site's state and data age is reported when it changed
    auto_accept = []            # provincial requests accepted without a city operator, e.g. ["block"]
                                # in a declared emergency (hub/requestdesk.py); others wait for one

The records go out on the hub's own broker connection (its certificate is the city's voice:
``hub-<city>`` may write ``jk/v1/city/<city>/…``); the city broker's bridge carries them to the
provincial broker (``jikimi broker config --bridge-to``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages import Operation
from shared.tomlread import Table


@dataclass(frozen=True)
class ProvinceLinkConfig:
    max_records: int = 200_000
    site_state_every_s: float = 30.0
    auto_accept: frozenset[Operation] = frozenset()


def parse_province_link(t: Table, *, present: bool) -> ProvinceLinkConfig | None:
    """``[province]``; None when it is absent or ``enabled = false``. Errors name file and key."""
    enabled = t.flag("enabled", present)
    max_records = t.integer("max_records", 200_000, lo=1_000, hi=50_000_000)
    every_s = t.number("site_state_every_s", 30.0, lo=1.0, hi=3600.0)
    auto: set[Operation] = set()
    for i, name in enumerate(t.strings("auto_accept", ())):
        try:
            auto.add(Operation(name))
        except ValueError:
            raise t.item_error("auto_accept", i, f"{name!r} is not an area operation"
                                                 f" ({', '.join(o.value for o in Operation)})") from None
    t.done()
    if not enabled:
        return None
    return ProvinceLinkConfig(max_records=max_records, site_state_every_s=every_s, auto_accept=frozenset(auto))
