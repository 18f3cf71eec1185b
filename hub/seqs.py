"""Pure: per-site sequence tracking — dedupe, the ``through_seq`` watermark and gaps.

Rules and invariants (DESIGN §3):

1. ``through`` is the watermark: every seq at or below it is committed at the hub, or the
   edge no longer holds it (acknowledged before, or thinned — the batch's ``floor_seq`` says
   so). Only ``through`` is ever acknowledged, so the edge never deletes a record the hub
   lacks.
2. Seqs above ``through`` that are committed are *held* as disjoint, sorted intervals. A
   record is new iff its seq is above ``through`` and not held; a new record is committed
   exactly once (dedupe by (site, seq)).
3. After every batch: ``through`` rises to ``floor_seq - 1`` when that is higher, then
   through every held interval that starts right above it.
4. A *gap* is the range between ``through`` and the first held interval. It is asked for with
   ``resend_from = through + 1`` once it has lasted ``grace_s`` (live records may overtake a
   replay, so a short gap is normal), and asked again only after ``interval_s`` without the
   watermark moving.
5. Seqs start at 1 (the edge's outbox counter); a site the hub has never seen starts with
   ``through = 0``. One tracker serves one (site, outbox epoch).
6. A batch's ``thinned`` ranges are seqs the edge will never send: :meth:`close` counts them
   as held at once, so the watermark passes every hole thinning left between held records in
   one round trip.

No clock is read: every method that needs the time takes ``now``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field


@dataclass
class SiteSeqs:
    through: int = 0
    held: list[list[int]] = field(default_factory=list)
    """Sorted, disjoint [lo, hi] intervals above through + 1."""
    gap_since: float | None = None
    asked_at: float | None = None
    progress_at: float | None = None
    progress_through: int = 0

    def is_new(self, seq: int) -> bool:
        if seq <= self.through:
            return False
        held = self.held
        if not held:
            return True
        i = bisect_right(held, [seq, 2**64]) - 1
        return not (i >= 0 and held[i][0] <= seq <= held[i][1])

    def add(self, seq: int) -> None:
        """Record that ``seq`` (new, per :meth:`is_new`) is committed."""
        if seq == self.through + 1 and not self.held:
            self.through = seq
            return
        held = self.held
        if held and held[-1][1] + 1 == seq:
            held[-1][1] = seq
        elif not held or seq > held[-1][1]:
            held.append([seq, seq])
        else:
            i = bisect_right(held, [seq, 2**64])
            # merge with the neighbours where adjacent
            left = held[i - 1] if i > 0 else None
            right = held[i] if i < len(held) else None
            if left is not None and left[1] + 1 == seq:
                left[1] = seq
                if right is not None and right[0] == seq + 1:
                    left[1] = right[1]
                    del held[i]
            elif right is not None and right[0] == seq + 1:
                right[0] = seq
            else:
                held.insert(i, [seq, seq])
        self._advance()

    def close(self, lo: int, hi: int) -> int:
        """Rule 6: seqs ``lo..hi`` will never come; returns how many of them were not held."""
        lo = max(lo, self.through + 1)
        if lo > hi:
            return 0
        held = self.held
        i = bisect_left(held, [lo, -1])
        if i > 0 and held[i - 1][1] >= lo - 1:
            i -= 1
        j, new_lo, new_hi, covered = i, lo, hi, 0
        while j < len(held) and held[j][0] <= hi + 1:
            covered += max(0, min(held[j][1], hi) - max(held[j][0], lo) + 1)
            new_lo, new_hi = min(new_lo, held[j][0]), max(new_hi, held[j][1])
            j += 1
        held[i:j] = [[new_lo, new_hi]]
        self._advance()
        return hi - lo + 1 - covered

    def settle(self, floor_seq: int | None) -> int:
        """Apply a batch's ``floor_seq``; returns how many seqs the floor closed (never held)."""
        closed = 0
        if floor_seq is not None and floor_seq - 1 > self.through:
            top = floor_seq - 1
            closed = top - self.through
            for lo, hi in self.held:
                if lo > top:
                    break
                closed -= min(hi, top) - lo + 1
            self.through = top
            self.held = [[max(lo, top + 1), hi] for lo, hi in self.held if hi > top]
            self._advance()
        return closed

    def _advance(self) -> None:
        held = self.held
        while held and held[0][0] <= self.through + 1:
            self.through = max(self.through, held[0][1])
            del held[0]

    def gap(self) -> tuple[int, int] | None:
        """The first missing range (inclusive), if any."""
        if not self.held:
            return None
        return self.through + 1, self.held[0][0] - 1

    def want_resend(self, now: float, grace_s: float, interval_s: float) -> int | None:
        """``resend_from`` to ask for now, or None (rule 4). Call after each batch and tick."""
        if not self.held:
            self.gap_since = self.asked_at = self.progress_at = None
            return None
        if self.gap_since is None:
            self.gap_since = now
            self.progress_through = self.through
        if self.through > self.progress_through:
            self.progress_through = self.through
            self.progress_at = now
        if self.asked_at is None:
            if now - self.gap_since < grace_s:
                return None
        else:
            last = max(self.asked_at, self.progress_at or self.asked_at)
            if now - last < interval_s:
                return None
        self.asked_at = now
        return self.through + 1
