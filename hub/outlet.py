"""Where the engine's after-commit effects go: PUBACKs and acks to the edges, live events to the
console and the province, and who is listening.

The desks only ever call an :class:`Outlet` from effects registered with ``tx.after_commit``
(hub/store.py rule 4), so nothing leaves the hub before the change it reports is committed.
:class:`HubOutlet` is the hub's: acks and PUBACKs go to the MQTT owner, live events to the
console's :class:`~hub.live.Broadcaster`. Tests pass a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hub.live import Broadcaster, Change, LiveEvent
from hub.store import Tx
from shared.messages import Ack


class Outlet(Protocol):
    def send_ack(self, ack: Ack) -> None: ...

    def puback(self, generation: int, mids: list[int]) -> None: ...

    def live(self, event: LiveEvent) -> None: ...

    def wants_live(self) -> bool: ...

    def changed(self, change: Change) -> None:
        """A committed change, for whoever reports the hub's state onwards (the province)."""


class HubOutlet:
    """The hub's outlet: ``send_ack`` and ``puback`` are the MQTT owner's, ``bus`` the console's."""

    def __init__(self, send_ack: Callable[[Ack], None], puback: Callable[[int, list[int]], None],
                 bus: Broadcaster) -> None:
        self._send_ack = send_ack
        self._puback = puback
        self.bus = bus
        self.on_change: Callable[[Change], None] | None = None
        """The province's reporter (hub/upstream.py), when the hub reports to one."""

    def send_ack(self, ack: Ack) -> None:
        self._send_ack(ack)

    def puback(self, generation: int, mids: list[int]) -> None:
        self._puback(generation, mids)

    def live(self, event: LiveEvent) -> None:
        self.bus.publish(event)

    def wants_live(self) -> bool:
        return self.bus.has_subscribers

    def changed(self, change: Change) -> None:
        if self.on_change is not None:
            self.on_change(change)


def live_after(tx: Tx, outlet: Outlet, change: Change) -> None:
    """Publish ``change`` to the console once ``tx`` has committed."""

    def effect() -> None:
        outlet.live(LiveEvent.of(change))
        outlet.changed(change)

    tx.after_commit(effect)
