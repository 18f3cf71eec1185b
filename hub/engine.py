"""The hub's write side, composed: one in-memory state (hub/state.py) and the desks over it.

    intake (hub/intake.py)        edge messages → records, latest, status, birth, acks
      ├─ alarm desk (alarmdesk)   rules → ISA-18.2 transitions → incidents → alerting
      └─ command desk (commanddesk) replies; operators' commands and operations
    upkeep (hub/upkeep.py)        the tick: resend asks, shelve expiry, stale, timeouts, retention

Everything here runs inside the single writer's transaction (hub/store.py), on its thread;
nothing else touches this memory. Calls go down the list above, never back up. The engine only
wires the desks and is what the writer binds to (``load`` on open, ``ingest`` per batch,
``tick`` once a second); callers reach a desk's requests through it.
"""

from __future__ import annotations

import sqlite3
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.alarmdesk import AlarmDesk
from hub.alerting import AlarmAlerts
from hub.commanddesk import CommandDesk
from hub.config import HubConfig
from hub.forecastdesk import ForecastDesk
from hub.intake import IngestCounters, Intake, Observer
from hub.outlet import Outlet
from hub.seqs import SiteSeqs
from hub.state import HubState
from hub.store import Clock
from hub.upkeep import Upkeep


class Engine:
    def __init__(self, cfg: HubConfig, signing_key: Ed25519PrivateKey, outlet: Outlet,
                 observer: Observer | None = None, *, clock: Clock = time.time) -> None:
        self.cfg = cfg
        self.outlet = outlet
        self.state = HubState()
        self.alarms = AlarmDesk(cfg, self.state, outlet)
        self.commands = CommandDesk(cfg, self.state, signing_key, outlet)
        self.intake = Intake(cfg, self.state, self.alarms, self.commands, outlet, clock=clock, observer=observer)
        self.upkeep = Upkeep(cfg, self.state, self.intake, self.alarms, self.commands)
        self.intake.reload = self.reload
        self.forecast: ForecastDesk | None = None
        """The network forecast (``[forecast]``, hub/forecastdesk.py), fed by the intake, run by the tick."""
        if cfg.forecast is not None:
            self.forecast = ForecastDesk(cfg, cfg.forecast, self.state, self.alarms, self.commands)
            self.intake.on_latest = self.forecast.observe
            self.upkeep.forecast = self.forecast
            self.alarms.forecast_cap = cfg.forecast.cap
        # the writer's entry points
        self.ingest = self.intake.ingest
        self.tick = self.upkeep.tick

    def load(self, conn: sqlite3.Connection) -> None:
        """Rebuild the memory from the database (the writer calls it once, on its thread)."""
        self.state.load(conn)
        self.alarms.load(conn)
        self.intake.quarantine.load(conn)
        if self.forecast is not None:
            self.forecast.load()

    def reload(self, conn: sqlite3.Connection) -> None:
        """Rebuild the memory from the database inside the open transaction, in place (the desks
        share the one state): after a message was rolled back that had already changed it."""
        fresh = HubState()
        fresh.load(conn)
        vars(self.state).update(vars(fresh))
        self.alarms.reload(conn)

    @property
    def counters(self) -> IngestCounters:
        return self.intake.counters

    @property
    def seqs(self) -> dict[str, SiteSeqs]:
        """Each site's tracker for the epoch it last sent (all epochs: ``state.seqs``)."""
        return {site: tr for site, epoch in self.state.epochs.items()
                if (tr := self.state.seqs.get((site, epoch))) is not None}

    @property
    def alerts(self) -> AlarmAlerts | None:
        return self.alarms.alerts

    @alerts.setter
    def alerts(self, alerts: AlarmAlerts | None) -> None:
        self.alarms.alerts = alerts
