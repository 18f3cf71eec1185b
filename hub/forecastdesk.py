"""The forecast desk: the network forecaster (hub/forecast.py) run over every site's committed depth.

Runs inside the writer's transaction, like the other desks, when ``[forecast]`` is configured
(hub/forecast_config.py). Rules and invariants:

1. Only live, good street-flood depth readings feed it: a reading of the point that the device's
   kind names as its depth (shared/vocabulary.py), for underpasses and semi-basement alarms only
   (``STREET_KINDS``), not ``historical`` and not older than its point's latest
   (the intake calls :meth:`ForecastDesk.observe` where it updates the latest). The forecaster
   needs its samples in time order across sites; batches of different sites arrive out of step,
   so samples wait until they are ``hold_s`` old and are then taken in time order. A sample
   older than one already taken is counted (``late_samples``) and left out: causal, never
   rewritten.
2. Every ``every_s`` the desk scores every site at the newest sample it took (``now - hold_s``
   when none came). Only sites of
   ``sites.registry`` with a position take part; any other site whose depth arrives is skipped
   once with its reason (``skipped``, and the log event ``forecast.site_skipped``).
3. A site whose score reaches the threshold has its forecast alarm (device ``forecast``, rule
   ``network_forecast``, the configured priority) raised through the alarm desk's path for other
   hub parts; the neighbours that drove it are stored with it (``alarms.drivers``, JSON) and the
   alarm is forwarded as CAP (urgency Expected) only when ``cap`` is on. It clears once the site
   has not warned for ``clear_after_s`` (the score flickers around the threshold from minute to
   minute; one storm is one alarm and one prealert, not one per flicker).
4. On a raise, with ``prealert`` on, each device of the site whose kind takes
   ``forecast.prealert`` gets a signed one (the command desk signs and records it; the issuer is
   ``system``), valid for ``prealert_ttl_s``. It is published after commit by the service's
   ``hub.forecast_prealerts`` task. The edge decides what to do with it; its own closing rule
   never depends on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict

from hub.alarmdesk import AlarmDesk
from hub.commanddesk import CommandDesk, CommandOut
from hub.commands import Draft
from hub.config import HubConfig
from hub.errors import Refused
from hub.forecast import Driver, NetworkForecaster, drivers, probability, warns
from hub.forecast_config import ForecastConfig
from hub.roles import Role
from hub.state import HubState
from hub.store import Tx
from shared import vocabulary
from shared.messages import Action, Quality

log = logging.getLogger(__name__)

DEVICE = "forecast"
RULE = "network_forecast"
POINT = "water_depth_cm"
STREET_KINDS = frozenset({"underpass", "flood_alarm"})
"""Kinds whose depth point is street-flood depth, what the model was trained on (FloodNet). A river
gate's ``water_level_cm`` is a river's stage (tens of cm at rest): fed in, it would look like a
flood that never ends."""
PREALERT_QUEUE = 1024
"""Bound of the prealerts waiting to be published; when full a prealert is marked send_failed."""


class ForecastDesk:
    def __init__(self, cfg: HubConfig, fc: ForecastConfig, state: HubState, alarms: AlarmDesk,
                 commands: CommandDesk) -> None:
        self.cfg = cfg
        self.fc = fc
        self.state = state
        self.alarms = alarms
        self.commands = commands
        placed = {s: (e.lat, e.lon) for s, e in sorted(cfg.sites.registry.items())
                  if e.lat is not None and e.lon is not None}
        p = fc.params
        self.forecaster = NetworkForecaster(list(placed), placed, p.closing_depth_cm, p.arm_depth_cm)
        self.skipped: dict[str, str] = {}
        """Sites whose depth arrives but that take no part (rule 2), with the reason."""
        self.late_samples = 0
        self.evaluations = 0
        self._pending: list[tuple[float, str, float]] = []
        self._last_eval = -float("inf")
        self._raised: dict[str, int] = {}
        self._quiet_since: dict[str, float] = {}
        self.outbox: asyncio.Queue[CommandOut] = asyncio.Queue(maxsize=PREALERT_QUEUE)
        """Signed prealerts to publish (rule 4); when full, one is logged and left ``sending``."""

    @property
    def active_count(self) -> int:
        """Forecast alarms this desk holds raised."""
        return len(self._raised)

    def load(self) -> None:
        """After a restart: the forecast alarms still active are this desk's to clear (rule 3)."""
        self._raised = {am.site: am.id for am in self.state.alarms.values()
                        if am.source == DEVICE and am.alarm.active}

    def observe(self, site: str, device: str, point: str, ts: float, num: float | None, quality: Quality,
                kind: str | None) -> None:
        """Rule 1: a committed, live reading (the intake calls it for each new latest)."""
        if (num is None or quality is not Quality.GOOD or kind not in STREET_KINDS
                or point != vocabulary.depth_point(kind)):
            return
        if site not in self.forecaster.index:
            if site not in self.skipped:
                entry = self.cfg.sites.registry.get(site)
                why = ("not in sites.registry" if entry is None
                       else "no position: give [sites.registry.<site>] lat and lon")
                self.skipped[site] = why
                log.warning("forecast.site_skipped", extra={"site": site, "reason": why})
            return
        self._pending.append((ts, site, num))

    def tick(self, tx: Tx) -> None:
        """Rules 1-4, every ``every_s``."""
        if tx.now - self._last_eval < self.fc.every_s:
            return
        self._last_eval = tx.now
        at = tx.now - self.fc.hold_s
        ready = sorted(s for s in self._pending if s[0] <= at)
        self._pending = [s for s in self._pending if s[0] > at]
        fc = self.forecaster
        fed = 0
        for ts, site, depth in ready:
            if ts < fc.latest:
                self.late_samples += 1
                continue
            fc.observe(site, ts, depth)
            fed += 1
        # scored at the newest sample taken (the state it describes), or at now - hold_s when none came
        at = fc.latest if fed else max(at, fc.latest)
        if not fc.sites:
            return
        features = fc.features(at)
        warned = warns(self.fc.params, features)
        prob = probability(self.fc.params, features)
        self.evaluations += 1
        for i, site in enumerate(fc.sites):
            if warned[i]:
                self._quiet_since.pop(site, None)
                if site not in self._raised:
                    self._raise(tx, site, at, float(prob[i]))
            elif site in self._raised:
                since = self._quiet_since.setdefault(site, at)
                if at - since >= self.fc.clear_after_s:
                    del self._quiet_since[site]
                    self.alarms.source_clear(tx, self._raised.pop(site), f"the network forecast has not warned for "
                                             f"{self.fc.clear_after_s:g} s")

    def _raise(self, tx: Tx, site: str, at: float, prob: float) -> None:
        found = drivers(self.forecaster, site, at, self.fc.drivers)
        named = ", ".join(f"{d.site} {d.distance_km:.1f} km" for d in found) or "none nearby"
        minutes = max(1, round(self.fc.params.horizon_s / 60))
        reason = f"network forecast: depth expected to reach closing depth within {minutes} min; neighbours: {named}"
        area = self.cfg.sites.registry[site].area
        alarm_id = self.alarms.source_raise(tx, (site, DEVICE, POINT, RULE), area, self.fc.priority.value, reason)
        tx.conn.execute("UPDATE alarms SET drivers = ? WHERE id = ?",
                        (json.dumps([asdict(d) for d in found]), alarm_id))
        self._raised[site] = alarm_id
        log.info("forecast.raised", extra={"site": site, "alarm": alarm_id, "drivers": [d.site for d in found]})
        if self.fc.prealert:
            self._prealert(tx, site, minutes, prob, found)

    def _prealert(self, tx: Tx, site: str, minutes: int, prob: float, found: list[Driver]) -> None:
        st = self.state
        devices = sorted(d for (s, d), kind in st.kinds.items()
                         if s == site and Action.FORECAST_PREALERT in vocabulary.offers(kind))
        for device in devices:
            draft = Draft(site, device, Action.FORECAST_PREALERT,
                          {"expected_minutes": max(1, min(240, minutes)), "probability": round(prob, 3)})
            try:
                out = self.commands.create_command(tx, draft, "system", Role.OPERATOR,
                                                   f"network forecast: p={prob:.2f}, neighbours "
                                                   + (", ".join(d.site for d in found) or "none"),
                                                   ttl_s=self.fc.prealert_ttl_s)
            except Refused as exc:
                log.warning("forecast.prealert_refused", extra={"site": site, "device": device, "reason": str(exc)})
                continue

            def queue(out: CommandOut = out) -> None:
                try:
                    self.outbox.put_nowait(out)
                except asyncio.QueueFull:
                    log.error("forecast.prealert_queue_full", extra={"cmd_id": out.cmd_id})

            tx.after_commit(queue)
