"""Upkeep: the hub's once-a-second tick, inside one writer transaction.

In order: resend asks for sites holding records above a gap (intake), shelved alarms whose
time is over (alarm desk), stale data every ``alarms.stale_check_s`` (alarm desk), command
timeouts (command desk), and retention every ``retention.every_s`` (with the quarantine's expiry).

Retention rules:

1. Events and replies older than ``events_days`` are deleted; aggregates older than
   ``downsampled_days`` are deleted.
2. Readings older than ``raw_days`` are folded into per-``downsample_s`` aggregates (count,
   min, max, mean, merged with any aggregate already there) and then deleted, in the same
   transaction, so a reading is never both lost and unaggregated.
3. A retention round is spread over ticks (a bounded number of points per tick), so a tick
   never holds the writer for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from hub.alarmdesk import AlarmDesk
from hub.commanddesk import CommandDesk
from hub.config import HubConfig
from hub.forecastdesk import ForecastDesk
from hub.intake import Intake
from hub.state import HubState, Key
from hub.store import Tx

POINTS_PER_TICK: Final = 200


class Upkeep:
    def __init__(self, cfg: HubConfig, state: HubState, intake: Intake, alarms: AlarmDesk,
                 commands: CommandDesk) -> None:
        self.cfg = cfg
        self.state = state
        self.intake = intake
        self.alarms = alarms
        self.commands = commands
        self._last_stale = 0.0
        self._last_retention = 0.0
        self._retention_todo: list[Key] = []
        self.forecast: ForecastDesk | None = None
        """The network forecast, scored every ``forecast.every_s`` (set by the engine)."""

    def tick(self, tx: Tx) -> None:
        """Once a second: resend asks, shelve expiry, stale data, command timeouts, retention."""
        now = tx.now
        self.intake.ask_resends(tx)
        self.alarms.unshelve_expired(tx)
        if now - self._last_stale >= self.cfg.alarms.stale_check_s:
            self._last_stale = now
            for site in self.state.sites:
                self.alarms.stale_site(tx, site, now)
        self.commands.timeouts(tx)
        if self.forecast is not None:
            self.forecast.tick(tx)
        if now - self._last_retention >= self.cfg.retention.every_s:
            self._last_retention = now
            self._retention_todo = sorted(self.state.latest)
            r = self.cfg.retention
            tx.conn.execute("DELETE FROM records WHERE type <> 'reading' AND ts < ?", (now - r.events_days * 86400,))
            tx.conn.execute("DELETE FROM history_agg WHERE bucket < ?", (now - r.downsampled_days * 86400,))
            self.intake.quarantine.expire(tx)
        if self._retention_todo:
            self._downsample(tx, self._retention_todo[:POINTS_PER_TICK])
            del self._retention_todo[:POINTS_PER_TICK]

    def _downsample(self, tx: Tx, keys: Sequence[Key]) -> None:
        """Rule 2 for some points."""
        step = self.cfg.retention.downsample_s
        cutoff = (tx.now - self.cfg.retention.raw_days * 86400) // step * step
        for site, device, point in keys:
            tx.conn.execute(
                "INSERT INTO history_agg (site, device, point, bucket, n, min, max, avg)"
                " SELECT site, device, point, CAST(ts / ? AS INTEGER) * ?, count(*), min(num), max(num), avg(num)"
                " FROM records WHERE site = ? AND device = ? AND point = ? AND type = 'reading' AND ts < ?"
                " GROUP BY 4 HAVING true ON CONFLICT (site, device, point, bucket) DO UPDATE SET"
                " avg = (coalesce(avg, 0) * n + coalesce(excluded.avg, 0) * excluded.n) / (n + excluded.n),"
                " n = n + excluded.n, min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),"
                " max = max(coalesce(max, excluded.max), coalesce(excluded.max, max))",
                (step, step, site, device, point, cutoff),
            )
            tx.conn.execute(
                "DELETE FROM records WHERE site = ? AND device = ? AND point = ? AND type = 'reading' AND ts < ?",
                (site, device, point, cutoff),
            )
