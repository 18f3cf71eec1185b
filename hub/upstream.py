"""The city hub's side of the province (DESIGN §8): its province outbox and the batches it sends.

A city hub is to the province what an edge is to the city hub, so this is the edge's protocol
with the very same code: the outbox is :class:`shared.outbox.Outbox` holding
:data:`shared.messages.CityRecord` (rules 1-7 of shared/outbox.py: seq per epoch, deleted only
on the province's ack of commit, thinning of site states when full, salvage of a corrupt file),
and a batch is :func:`shared.messages.encode_batch` as a :class:`~shared.messages.CityBatch`.

Rules:

1. Province records (alarms and their transitions, incidents, site states with data age,
   operations, alert deliveries) are appended as they happen; never raw telemetry. Site states
   are the only thinnable records (they are sent at the ``telemetry`` priority: a newer one
   supersedes them); every other record is critical.
2. A batch carries the outbox's epoch, its floor and the thinned holes among its records
   (:func:`shared.outbox.thinned_holes`, as the edge's uplink names them); records are marked
   sent before the batch is published.
3. A :class:`~shared.messages.CityAck` is applied as the edge applies an :class:`Ack`
   (shared/sending.py): ``through_seq`` of the outbox's epoch deletes what was sent; another
   epoch's deletes nothing.

Not here yet: the MQTT publisher task (status, birth, live and replayed batches; its acks through
:class:`shared.sending.Cursors`, as the edge's uplink does), the ``[province]`` section of the
hub's config, and the hub's writer feeding the outbox from its alarms, incidents, sites,
operations and deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from hub.errors import UpstreamError
from shared import messages
from shared.messages import CityAck, CityRecord
from shared.outbox import MIGRATIONS, Outbox, OutboxKind, Replaced, open_outbox, thinned_holes

UPSTREAM_FILE: Final = "province-outbox.db"
"""The province outbox's file name in the hub's data directory."""

KIND: Final = OutboxKind[CityRecord](decoder=msgspec.json.Decoder(CityRecord), migrations=MIGRATIONS,
                                     error=UpstreamError)

ProvinceOutbox = Outbox[CityRecord]


def open_upstream(path: Path, *, max_records: int = 200_000,
                  clock: Callable[[], float]) -> tuple[ProvinceOutbox, Replaced | None]:
    """The province outbox at ``path`` (a corrupt one is moved aside and salvaged, rule 7)."""
    return open_outbox(path, kind=KIND, max_records=max_records, clock=clock)


def next_batch(outbox: ProvinceOutbox, city: str, boot: str, from_seq: int, *, limit: int = 500,
               historical: bool = False) -> tuple[bytes, int] | None:
    """Rule 2: the next :class:`~shared.messages.CityBatch` from ``from_seq``, marked sent, and
    the seq to continue from; None when nothing is held there."""
    rows = outbox.read(from_seq, limit=limit)
    if not rows:
        return None
    floor = outbox.floor_seq()
    payload, n = messages.encode_batch(city, boot, [r.payload for r in rows], floor_seq=floor,
                                       epoch=outbox.epoch, thinned=thinned_holes(rows, max(from_seq, floor)),
                                       historical=historical, sender="city")
    outbox.mark_sent(rows[n - 1].seq)
    return payload, rows[n - 1].seq + 1


def apply_ack(outbox: ProvinceOutbox, ack: CityAck) -> int:
    """Rule 3; returns how many records were deleted."""
    if ack.through_seq is None:
        return 0
    return outbox.ack(ack.through_seq, epoch=ack.epoch)
