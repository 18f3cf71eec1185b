"""Pure: what the province takes from a city's batch — checks, dedupe by (city, epoch, seq), acks.

The city side is the edge's protocol one tier up (DESIGN §8), so this is the hub's intake rules
with a city where the hub has a site:

1. A message is decoded from the topic of one city and names that city
   (:func:`shared.messages.decode_city`): a city never speaks for another, whatever the
   broker's ACL let through. Anything that fails is refused whole with a
   :class:`hub.validate.Reason`, quarantined, and the writer goes on.
2. Every ``seq`` and a batch's ``floor_seq`` and thinned ranges are in 1..2^63-1; a batch
   whose seqs repeat within it is refused whole (a sender that broke rule 1 of the outbox).
   A record dated more than ``max_skew_s`` after its receipt is refused alone.
3. Each (city, epoch) is tracked by a :class:`hub.seqs.SiteSeqs` (the hub's own watermark,
   held intervals and gaps): a record is new iff that tracker says so; only new records are
   committed, so each is committed exactly once.
4. Only after the commit does the tracker learn the new seqs and the batch's floor and thinned
   ranges; the ack says ``through_seq`` of that watermark, and ``resend_from`` when a gap has
   outlasted the grace time (:meth:`hub.seqs.SiteSeqs.want_resend`).

No clock is read: ``now`` comes in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.seqs import SiteSeqs
from hub.validate import Reason, Refusal
from shared.messages import MAX_SEQ, CityAck, CityBatch, CityRecord


@dataclass(frozen=True)
class Taken:
    """What a batch brings: the records to commit, and those refused for their time."""

    new: list[CityRecord]
    future: list[CityRecord]
    duplicates: int


def _seq_ok(seq: int) -> bool:
    return 1 <= seq <= MAX_SEQ


def check(batch: CityBatch) -> Refusal | None:
    """Rule 2 for the batch as a whole."""
    if batch.floor_seq is not None and not _seq_ok(batch.floor_seq):
        return Refusal(Reason.SEQ_RANGE, f"floor_seq {batch.floor_seq} is outside 1..2^63-1")
    for lo, hi in batch.thinned:
        if not (_seq_ok(lo) and _seq_ok(hi)):
            return Refusal(Reason.SEQ_RANGE, f"thinned range [{lo}, {hi}] is outside 1..2^63-1")
    seen: set[int] = set()
    for r in batch.records:
        if not _seq_ok(r.seq):
            return Refusal(Reason.SEQ_RANGE, f"record seq {r.seq} is outside 1..2^63-1")
        if r.seq in seen:
            return Refusal(Reason.MALFORMED, f"record seq {r.seq} appears twice in one batch")
        seen.add(r.seq)
    return None


@dataclass
class CityLinks:
    """The seq trackers of every (city, epoch) the province has heard from (rules 3 and 4)."""

    grace_s: float = 1.0
    interval_s: float = 3.0
    seqs: dict[tuple[str, int], SiteSeqs] = field(default_factory=dict)

    def tracker(self, city: str, epoch: int) -> SiteSeqs:
        return self.seqs.setdefault((city, epoch), SiteSeqs())

    def take(self, city: str, batch: CityBatch, received: float, max_skew_s: float) -> Taken:
        """Rule 3: which records of a checked batch are new (nothing is learned yet)."""
        s = self.tracker(city, batch.epoch)
        new: list[CityRecord] = []
        future: list[CityRecord] = []
        dup = 0
        for r in batch.records:
            if not s.is_new(r.seq):
                dup += 1
            elif r.ts > received + max_skew_s:
                future.append(r)
            else:
                new.append(r)
        return Taken(new, future, dup)

    def ack(self, city: str, epoch: int, now: float) -> CityAck:
        """Rule 4: the ack of the watermark, after the commit (with a resend ask when a gap has
        outlasted the grace time)."""
        s = self.tracker(city, epoch)
        resend = s.want_resend(now, self.grace_s, self.interval_s)
        return CityAck(city=city, epoch=epoch, through_seq=s.through, resend_from=resend)


def learn(s: SiteSeqs, batch: CityBatch, seqs: Iterable[int]) -> None:
    """Rule 4: ``s`` learns a committed batch: its new seqs (and those refused alone), its
    thinned ranges and its floor."""
    for seq in sorted(seqs):
        if s.is_new(seq):
            s.add(seq)
    for lo, hi in batch.thinned:
        s.close(lo, hi)
    s.settle(batch.floor_seq)
