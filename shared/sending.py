"""The sending side's cursors over an outbox: what is live, what is replayed, and what an ack does.

Shared by every sender of the delivery protocol (DESIGN §3, §8): the edge's uplink
(edge/uplink.py) and a city hub's sender to the province (hub/upstream.py). No I/O but the
outbox's own calls; no clock.

Rules (edge/uplink.py rules 3, 4 and 9 state them for the wire):

1. On connect everything the outbox holds is *replay* (``replay .. replay_end``, exclusive) and
   everything from ``next_seq`` on is *live*.
2. An ack for another epoch than the outbox's does nothing (:attr:`Ack.FOREIGN`).
3. ``through_seq`` deletes what was sent and acked (shared/outbox.py rule 6); when that makes the
   outbox start a new epoch, every held record (renumbered) is replayed (:attr:`Ack.NEW_EPOCH`).
4. ``resend_from`` (not below the outbox's floor) below the live cursor widens the replay range
   to start there (:attr:`Ack.RESEND`); at or above it there is nothing to resend.
"""

from __future__ import annotations

import enum
from typing import Any

from shared.outbox import Outbox


class Ack(enum.Enum):
    """What an ack changed for the sender."""

    NOTHING = "nothing"
    FOREIGN = "foreign"
    NEW_EPOCH = "new_epoch"
    RESEND = "resend"


class Cursors:
    """The live and replay cursors of one sender over ``outbox`` (valid while connected)."""

    def __init__(self, outbox: Outbox[Any]) -> None:
        self.outbox = outbox
        self.live = 0
        self.replay = 0
        self.replay_end = 0

    def connected(self) -> int:
        """Rule 1; returns how many seqs are to be replayed."""
        self.replay = self.outbox.floor_seq()
        self.replay_end = self.live = self.outbox.next_seq
        return self.replay_end - self.replay

    @property
    def replaying(self) -> bool:
        return self.replay < self.replay_end

    def on_ack(self, epoch: int, through_seq: int | None, resend_from: int | None) -> Ack:
        """Rules 2-4 for one ack."""
        outbox = self.outbox
        held_epoch = outbox.epoch
        if epoch != held_epoch:
            return Ack.FOREIGN
        if through_seq is not None:
            outbox.ack(through_seq, epoch=epoch)
            if outbox.epoch != held_epoch:
                self.connected()
                return Ack.NEW_EPOCH
        if resend_from is not None:
            start = max(resend_from, outbox.floor_seq())
            if start < self.live:
                self.replay = min(self.replay, start) if self.replaying else start
                self.replay_end = max(self.replay_end, self.live)
                return Ack.RESEND
        return Ack.NOTHING
