"""The edge agent: one process per site, a systemd ``Type=notify`` service.

``main()`` opens one TaskGroup; every long-lived loop is a named task in it:

    bus:<line>      one bus scheduler per physical line (polls and writes, breakers, counters)
    recorder        readings → outbox (batched), wakes the uplink, feeds the watchdog
    inference       depth samples → flood forecaster (the model in its worker thread) → policy
    local-actions   the policy's actions → device writes → read-back → events
    uplink          MQTT 5 / mTLS to the broker (edge/uplink.py)
    commands        signed hub commands → checks → write → read-back → replies
    health          periodic device/outbox/uplink health as an event

The policy runs synchronously on every reading of a point it watches, so a depth crossing is
acted on within the poll that saw it; sensing and local action never wait for the uplink.
Storage never stands between a reading and the local policy: a corrupt outbox is moved aside
and replaced at start (edge/outbox.py rule 7), and a storage error at run time keeps records in
memory (bounded by ``MAX_PENDING``, telemetry shed first and counted) while acquisition, the
policy and local actions go on; the uplink's session ends and retries.
systemd is told READY=1 once every device has been read once, WATCHDOG=1 only while readings
keep coming (fed by acquisition progress, not a timer), and STOPPING=1 on shutdown.

Queues between tasks are bounded: readings wait at most ``RECORD_FLUSH_S`` in memory
(the recorder flushes every 100 ms; it never drops), local actions wait in a map holding the
newest action per (device, written point): bounded by the site's devices, it coalesces instead
of dropping, so a close is never lost behind other actions (a newer action for the same
actuator replaces an older one not yet started), and the command
queue holds 64 (more is refused with a reply, never dropped). The inference queue holds 256
depth samples; if the forecaster falls that far behind, the oldest samples are dropped and
counted (``inference.dropped``): the forecaster resamples its input, and the 15 cm rule acts
on every reading regardless.

**Stale.** A point's *age limit* is ``STALE_AFTER_POLLS`` (3) times its poll interval from the
profile (a derived point: its source's): a value not read again within two missed polls and
a period of slack is no longer the device's present state. The recorder checks every
``RECORD_FLUSH_S``; a ``good`` value older than its limit becomes ``stale`` in ``latest`` and
goes out as a ``stale`` reading with its original value and acquisition time (never
re-stamped), once; the policy then treats it as untrusted. A failed poll is ``comm_fail``, not
stale: stale is what a stalled or lagging line produces.

**Slope.** Every displacement meter's ``displacement_mm`` feeds a :class:`SlopeDetector`
(edge/inference/slope.py, settings from the site's ``[slope]``), one sample per
``slope.sample_every_s``. A meter's grade is the more severe of the detector's level
(normal, watch, warning, alarm) and the policy's velocity grade (normal, warning, alarm);
each change of it is one ``displacement.<grade>`` event, of ``alarm`` priority for
``displacement.alarm``, naming both sources.

A device whose config names ``model = "flood"`` gets a :class:`FloodForecaster` on its
``water_depth_cm``; the forecaster's history restarts when the surface goes from dry to wet
(the FloodNet events the model learnt from start that way). Its warning is the policy's
"forecast says it will reach the closing depth". A missing or corrupt model is reported in
the birth message and health, and the rules stay in charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import gc
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from edge import commands as cmdmod
from edge.commands import Bus, CommandExecutor
from edge.config import DeviceConfig, SiteConfig
from edge.drivers import readings as drv
from edge.drivers.modbus import ModbusDevice, ModbusLine
from edge.drivers.scheduler import BusScheduler, DeviceLink
from edge.drivers.serial_line import SerialLineDevice
from edge.errors import DeviceError, OutboxError
from edge.outbox import OUTBOX_FILE, open_outbox
from edge.policy import Decision, LocalAction, PolicyDevice, PolicyEvent, PolicyState, decide, default_depth
from edge.uplink import Uplink, UplinkConfig
from shared import messages as m
from shared import site_events, vocabulary
from shared.errors import ConfigError
from shared.profiles import Kind, Point, Profile
from shared.signing import load_verify_key
from shared.version import VERSION

if TYPE_CHECKING:
    from edge.inference.slope import SlopeDetector

log = logging.getLogger(__name__)

AGENT_VERSION: Final = VERSION
RECORD_FLUSH_S: Final = 0.1
WET_CM: Final = 0.5  # below this a surface counts as dry (a new flood event starts when it gets wet)
HEALTH_EVERY_S: Final = 60.0
MAX_PENDING: Final = 100_000  # records held in memory while the outbox cannot take them
STALE_AFTER_POLLS: Final = 3.0
BACKLOG_RECORDS: Final = 1_000
"""Records held at once that make an outage's backlog: once it drains below a tenth of this,
the agent gives the memory it took back (:meth:`Agent.release_memory`)."""
DISPLACEMENT_GRADES: Final = ("normal", "watch", "warning", "alarm")  # in rising severity


def age_limit_s(profile: Profile, point: Point) -> float:
    """How old a point's value may be before it is ``stale`` (see the module docstring)."""
    source = profile.points.get(point.derived.source, point) if point.derived is not None else point
    return STALE_AFTER_POLLS * source.poll_s


class Forecaster(Protocol):
    """What the agent needs of a forecaster (edge.inference.flood.FloodForecaster)."""

    @property
    def model_sha256(self) -> str | None: ...
    @property
    def health(self) -> enum.Enum: ...
    def reset(self) -> None: ...
    def update(self, t_secs: float, depth_cm: float) -> _Forecast: ...
    def close(self) -> None: ...


class _Forecast(Protocol):
    @property
    def warns(self) -> bool: ...


# --- systemd notification ----------------------------------------------------------------------


def sd_notify(message: str) -> bool:
    """Send one sd_notify message (``READY=1`` ...) if systemd asked for them; no dependency."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())
    return True


def watchdog_period_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 1e6 if usec and usec.isdigit() else None


# --- the agent ---------------------------------------------------------------------------------


@dataclass
class AgentStats:
    readings: int = 0
    local_actions: int = 0
    policy_events: int = 0
    ready: bool = False
    stale: int = 0
    read_once: set[str] = field(default_factory=set)


def _scalar(value: object) -> m.Scalar:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class Agent:
    """One site's agent. Build with :meth:`open` inside an ``AsyncExitStack``, run with :meth:`run`."""

    def __init__(self, cfg: SiteConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.forecasters: dict[str, Forecaster] = {}
        for d in cfg.devices:
            if d.model is not None:
                if d.model != "flood":
                    raise ConfigError(str(cfg.source), f"devices.{d.name}.model",
                                      f"unknown model {d.model!r} (known: flood)")
                from edge.inference.flood import FloodForecaster  # only when used

                # One interpreter (and its worker thread) for every device: the model keeps no
                # state between calls, each forecaster keeps its own series. Ten devices once
                # held ten interpreters, ~30 MB more RSS.
                shared = next((f for f in self.forecasters.values() if isinstance(f, FloodForecaster)), None)
                self.forecasters[d.name] = FloodForecaster(runner=shared.runner if shared else None)
        self.slope: dict[str, SlopeDetector] = {}
        if any(d.profile.kind is Kind.DISPLACEMENT for d in cfg.devices):
            from edge.inference.slope import SlopeConfig, SlopeDetector  # numpy only when used

            sc = cfg.slope
            slope_cfg = SlopeConfig(noise_mm=sc.noise_mm, baseline_mm_per_day=sc.baseline_mm_per_day,
                                    watch_mm_per_day=sc.watch_mm_per_day,
                                    velocity_window_days=sc.velocity_window_days, downslope_sign=sc.downslope_sign,
                                    alarm_horizon_days=sc.alarm_horizon_days)
            self.slope = {d.name: SlopeDetector(slope_cfg) for d in cfg.devices if d.profile.kind is Kind.DISPLACEMENT}
        self._slope_fed: dict[str, float] = {}
        # device -> (grade, detail, values) from each source; the grade last sent per device
        self._slope_grade: dict[str, tuple[str, str, dict[str, float | str]]] = {}
        self._velocity_grade: dict[str, tuple[str, str, dict[str, float | str]]] = {}
        self._displacement_sent: dict[str, str] = {}
        self._age_limit = {(d.name, p.name): age_limit_s(d.profile, p)
                           for d in cfg.devices for p in d.profile.points.values()}
        self._samples: asyncio.Queue[tuple[str, float, float]] = asyncio.Queue(maxsize=256)
        self._wet: dict[str, bool] = {}
        self.inference_dropped = 0
        self.clock = clock
        self.boot = uuid.uuid4().hex[:12]
        self.stats = AgentStats()
        # A corrupt outbox is moved aside and replaced, never a reason not to start (rule: storage
        # never stands between a reading and the local policy).
        self.outbox, self.outbox_replaced = open_outbox(cfg.state_dir / OUTBOX_FILE,
                                                        max_records=cfg.outbox.max_records, clock=clock)
        self.storage_failures = 0
        self.pending_dropped = 0
        self._storage_logged_at = -math.inf
        self.latest: dict[tuple[str, str], m.Reading] = {}
        self._pending: list[m.Record] = []
        self._policy_state = PolicyState()
        self._policy_devices = tuple(
            PolicyDevice(d.name, d.profile.kind, d.depth_source or default_depth(d.name, d.profile.kind))
            for d in cfg.devices
        )
        self._watched = {pd.depth for pd in self._policy_devices if pd.depth} | {
            (d.name, p) for d in cfg.devices for p in ("barrier_state", "gate_state", "displacement_mm", "siren_on")
        }
        self.forecast_warns: frozenset[str] = frozenset()
        self.prealerts: dict[str, float] = {}
        """Devices holding a hub forecast prealert, until its not_after (edge/policy.py rule 7)."""
        self._actions: dict[tuple[str, str], LocalAction] = {}
        """Local actions not yet started, the newest per (device, point written); never dropped."""
        self._actions_ready = asyncio.Event()
        self.schedulers: dict[str, BusScheduler] = {}
        self._scheduler_of: dict[str, BusScheduler] = {}
        self._hub_key = load_verify_key(cfg.command_key)
        self.executor = CommandExecutor(
            store=self.outbox,
            reply=self._reply,
            bus=Bus(write=self._write, read=self._read, read_fresh=self._read_fresh),
            planner=self._plan,
            authenticate=lambda cmd: cmdmod.authenticate(cmd, site=cfg.site.id, key=self._hub_key),
            clock=clock,
            on_prealert=self._prealert,
        )
        self.uplink = Uplink(
            UplinkConfig(sender=cfg.site.id, host=cfg.hub.host, port=cfg.hub.port, tls=cfg.tls,
                         replay_rate=cfg.outbox.replay_rate),
            self.outbox,
            boot=self.boot,
            birth=self._birth,
            on_command=self.executor.submit,
            clock=clock,
        )

    # --- wiring ------------------------------------------------------------------------------

    async def open(self, stack: AsyncExitStack) -> None:
        """Open every line and build one bus scheduler per line."""
        by_bus: dict[str, list[DeviceConfig]] = {}
        for d in self.cfg.devices:
            by_bus.setdefault(d.endpoint.bus, []).append(d)
        for bus, devs in by_bus.items():
            links: list[DeviceLink] = []
            first = devs[0]
            if first.endpoint.scheme == "serial":
                for d in devs:
                    links.append(await stack.enter_async_context(
                        SerialLineDevice(d.name, d.profile, d.endpoint.path, unit_id=d.unit_id)))
            else:
                line = (ModbusLine.tcp(first.endpoint.host, first.endpoint.port, first.profile.transport.timeout_s)
                        if first.endpoint.scheme == "tcp" else ModbusLine.rtu(first.endpoint.path,
                                                                              first.profile.transport))
                await stack.enter_async_context(line)
                links += [ModbusDevice(d.name, d.profile, line, d.unit_id) for d in devs]
            sched = BusScheduler(links, sink=self._on_reading, clock=self.clock)
            self.schedulers[bus] = sched
            for d in devs:
                self._scheduler_of[d.name] = sched

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for bus, sched in self.schedulers.items():
                tg.create_task(sched.run(), name=f"bus:{bus}")
            tg.create_task(self._recorder(), name="recorder")
            if self.forecasters:
                tg.create_task(self._inference(), name="inference")
            tg.create_task(self._local_actions(), name="local-actions")
            tg.create_task(self.uplink.run(), name="uplink")
            tg.create_task(self.executor.run(), name="commands")
            tg.create_task(self._health(), name="health")

    # --- acquisition → policy → outbox ---------------------------------------------------------

    def _on_reading(self, r: drv.Reading) -> None:
        point = self.cfg.device(r.device).profile.points.get(r.point)
        rec = m.Reading(
            seq=0, ts=r.ts, prio=m.Priority.TELEMETRY, device=r.device, point=r.point,
            value=_scalar(r.value), quality=r.quality, unit=point.unit if point else "",
        )
        key = (r.device, r.point)
        self.latest[key] = rec
        if (r.point == "water_depth_cm" and r.device in self.forecasters and rec.quality is m.Quality.GOOD
                and isinstance(rec.value, int | float)):
            self._sample(r.device, rec.ts, float(rec.value))
        if (r.point == "displacement_mm" and r.device in self.slope and rec.quality is m.Quality.GOOD
                and isinstance(rec.value, int | float)):
            self._slope_sample(r.device, rec.ts, float(rec.value))
        self._pending.append(rec)
        self.stats.readings += 1
        self.stats.read_once.add(r.device)
        if key in self._watched:
            self._evaluate()

    def _evaluate(self) -> None:
        d: Decision = decide(self._policy_state, self._policy_devices, self.latest, self.cfg.policy, self.clock(),
                             self.forecast_warns, self.prealerts)
        self._policy_state = d.state
        for ev in d.events:
            self._event(ev)
        for action in d.actions:
            self.stats.local_actions += 1
            self._pending.append(m.Event(
                seq=0, ts=self.clock(), prio=m.Priority.ALARM, kind=site_events.local(action.action),
                device=action.device, detail=action.reason, values=dict(action.values),
            ))
            self.enqueue_action(action)
        if d.actions or d.events:
            self.flush()  # alarms and events are on disk before anything else happens

    def _prealert(self, p: cmdmod.Prealert) -> str:
        """A hub's forecast prealert (edge/commands.py rule 10): the policy holds it until it expires."""
        self.prealerts[p.device] = max(p.until, self.prealerts.get(p.device, p.until))
        self._evaluate()
        pol = self.cfg.policy
        does = [w for w, on in (("siren early", pol.prealert_warn), ("close early", pol.prealert_close)) if on]
        return (f"prealert held until not_after (expected in {p.expected_minutes} min, p={p.probability:.2f}); "
                f"policy: {', '.join(does) or 'nothing early'}")

    def _sample(self, device: str, ts: float, depth: float) -> None:
        if self._samples.full():
            self._samples.get_nowait()
            self.inference_dropped += 1
        self._samples.put_nowait((device, ts, depth))

    async def _inference(self) -> None:
        while True:
            device, ts, depth = await self._samples.get()
            forecaster = self.forecasters[device]
            wet = depth >= WET_CM
            if wet and not self._wet.get(device, False):
                forecaster.reset()  # a new flood event starts
            self._wet[device] = wet
            if not wet:
                warns = False
            else:
                forecast = await asyncio.to_thread(forecaster.update, ts, depth)
                warns = forecast.warns
            was = device in self.forecast_warns
            if warns != was:
                self.forecast_warns = (self.forecast_warns | {device}) if warns else (self.forecast_warns - {device})
                if warns:
                    self._pending.append(m.Event(
                        seq=0, ts=ts, prio=m.Priority.EVENT, kind=site_events.FORECAST_FLOOD_WARNING, device=device,
                        detail=f"forecast: depth reaches {self.cfg.policy.closing_depth_cm:g} cm soon",
                        values={"water_depth_cm": depth},
                    ))
                self._evaluate()

    def _slope_sample(self, device: str, ts: float, displacement_mm: float) -> None:
        last = self._slope_fed.get(device)
        if last is not None and ts - last < self.cfg.slope.sample_every_s:
            return
        self._slope_fed[device] = ts
        a = self.slope[device].update(ts, displacement_mm)  # a few hundred samples at most: microseconds
        level = a.level.name.lower()
        if level == self._slope_grade.get(device, ("normal", "", {}))[0]:
            return
        values: dict[str, float | str] = {}
        parts = []
        if a.velocity_mm_per_day is not None:
            values["slope_velocity_mm_per_day"] = round(a.velocity_mm_per_day, 3)
            parts.append(f"velocity {a.velocity_mm_per_day:.2f} mm/day")
        if a.acceleration_mm_per_day2 is not None:
            values["slope_acceleration_mm_per_day2"] = round(a.acceleration_mm_per_day2, 3)
            parts.append(f"acceleration {a.acceleration_mm_per_day2:.2f} mm/day²")
        if a.time_of_failure_secs is not None:
            days = (a.time_of_failure_secs - ts) / 86400.0
            values["time_of_failure_in_days"] = round(days, 4)
            parts.append(f"inverse-velocity time of failure in {days:.2f} days")
        self._slope_grade[device] = (level, ", ".join(parts), values)
        self._grade_displacement(device)

    def _grade_displacement(self, device: str) -> None:
        """Send ``displacement.<grade>`` when the more severe of the two sources changes."""
        det, det_why, det_values = self._slope_grade.get(device, ("normal", "", {}))
        vel, vel_why, vel_values = self._velocity_grade.get(device, ("normal", "", {}))
        grade = max(det, vel, key=DISPLACEMENT_GRADES.index)
        if grade == self._displacement_sent.get(device, "normal"):
            return
        self._displacement_sent[device] = grade
        self.stats.policy_events += 1
        detail = (f"slope detector: {det}" + (f" ({det_why})" if det_why else "")
                  + f"; velocity grade: {vel}" + (f" ({vel_why})" if vel_why else ""))
        self._pending.append(m.Event(
            seq=0, ts=self.clock(), prio=m.Priority.ALARM if grade == "alarm" else m.Priority.EVENT,
            kind=f"displacement.{grade}", device=device, detail=detail[:1024],
            values={**vel_values, **det_values, "detector": det, "velocity_grade": vel},
        ))
        self.flush()

    def _event(self, ev: PolicyEvent) -> None:
        if ev.kind.startswith("displacement.") and ev.device in self.slope:
            self._velocity_grade[ev.device] = (ev.kind.removeprefix("displacement."), ev.detail, dict(ev.values))
            self._grade_displacement(ev.device)
            return
        self.stats.policy_events += 1
        self._pending.append(m.Event(seq=0, ts=self.clock(), prio=m.Priority.EVENT, kind=ev.kind, device=ev.device,
                                     detail=ev.detail, values=dict(ev.values)))

    def flush(self) -> None:
        """Move pending records into the outbox (one transaction) and wake the uplink.

        A storage error keeps them pending (up to ``MAX_PENDING``; beyond it the oldest telemetry
        goes, counted) and never reaches the caller: acquisition and the local policy run on.
        """
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self.outbox.append(batch)
        except OutboxError as exc:
            self._pending = batch + self._pending
            self.storage_failures += 1
            if len(self._pending) > MAX_PENDING:
                self._shed_pending()
            now = time.monotonic()
            if now - self._storage_logged_at >= 10.0:
                self._storage_logged_at = now
                log.error("outbox.write_failed", extra={"error": str(exc), "pending": len(self._pending),
                                                        "failures": self.storage_failures})
            return
        self.uplink.notify()

    def mark_stale(self) -> None:
        """Downgrade good values older than their point's age limit to ``stale`` (module docstring)."""
        now = self.clock()
        watched = False
        for key, rec in list(self.latest.items()):
            if rec.quality is m.Quality.GOOD and now - rec.ts > self._age_limit.get(key, math.inf):
                stale = rec.__replace__(quality=m.Quality.STALE)  # same value, same acquisition time
                self.latest[key] = stale
                self._pending.append(stale)
                self.stats.stale += 1
                watched = watched or key in self._watched
        if watched:
            self._evaluate()

    def _shed_pending(self) -> None:
        excess = len(self._pending) - MAX_PENDING
        kept: list[m.Record] = []
        for r in self._pending:
            if excess > 0 and r.prio is m.Priority.TELEMETRY:
                excess -= 1
                self.pending_dropped += 1
                continue
            kept.append(r)
        self._pending = kept

    def release_memory(self) -> None:
        """After a backlog drained: SQLite's page cache, the garbage of an outage's reconnect
        attempts and the allocator's free pages go back to the system (RSS returns to its
        steady state; measured by ``jikimi bench edge``)."""
        started = time.monotonic()
        with contextlib.suppress(OutboxError):  # a storage error is the flush's to report
            self.outbox.release_memory()
        gc.collect()
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; other C libraries differ
        if trim is not None:
            trim(0)
        log.info("agent.memory_released", extra={"site": self.cfg.site.id,
                                                 "ms": round((time.monotonic() - started) * 1000, 1)})

    async def _recorder(self) -> None:
        period = watchdog_period_s()
        last_feed, fed_at_count = time.monotonic(), -1
        backlog = 0
        while True:
            await asyncio.sleep(RECORD_FLUSH_S)
            self.mark_stale()
            self.flush()
            backlog = max(backlog, self.outbox.held)
            if backlog >= BACKLOG_RECORDS and self.outbox.held < BACKLOG_RECORDS // 10:
                backlog = 0
                self.release_memory()
            if not self.stats.ready and self.stats.read_once >= {d.name for d in self.cfg.devices}:
                self.stats.ready = True
                sd_notify("READY=1")
                log.info("agent.ready", extra={"site": self.cfg.site.id, "boot": self.boot})
            progressed = self.stats.readings != fed_at_count  # acquisition, not a timer, feeds it
            if period is not None and progressed and time.monotonic() - last_feed >= period / 3:
                sd_notify("WATCHDOG=1")
                fed_at_count = self.stats.readings
                last_feed = time.monotonic()

    # --- local actions ------------------------------------------------------------------------

    def enqueue_action(self, action: LocalAction) -> None:
        """Queue a local action; one not yet started for the same actuator is replaced by it."""
        write = vocabulary.write_of(action.action, {})
        self._actions[(action.device, write[0] if write is not None else action.action.value)] = action
        self._actions_ready.set()

    def pending_actions(self) -> list[LocalAction]:
        return list(self._actions.values())

    async def _local_actions(self) -> None:
        while True:
            await self._actions_ready.wait()
            self._actions_ready.clear()
            while self._actions:
                key = next(iter(self._actions))
                await self._run_action(self._actions.pop(key))

    async def _run_action(self, action: LocalAction) -> None:
        write = vocabulary.write_of(action.action, {})  # local actions write fixed values
        point, value = write if write is not None else ("", None)
        profile = self.cfg.device(action.device).profile
        p = profile.points.get(point)
        if p is None or p.readback is None or not isinstance(value, bool | int | float | str):
            self._pending.append(m.Event(seq=0, ts=self.clock(), prio=m.Priority.ALARM,
                                         kind=site_events.local_outcome(action.action, False),
                                         device=action.device, detail=f"profile has no writable {point}"))
            self.flush()
            return
        expect = p.expect.get(str(value), value) if isinstance(value, str) else value
        plan = cmdmod.WritePlan(action.device, point, value, p.readback, expect, self.cfg.policy.verify_timeout_s)
        status, reason = await self.executor.write_and_verify(plan)
        self._pending.append(m.Event(
            seq=0, ts=self.clock(), prio=m.Priority.ALARM,
            kind=site_events.local_outcome(action.action, status is m.ReplyStatus.VERIFIED),
            device=action.device, detail=reason,
        ))
        self.flush()

    # --- commands ---------------------------------------------------------------------------

    def _plan(self, cmd: m.Command) -> (cmdmod.Refusal | cmdmod.WritePlan | cmdmod.SelfTest | cmdmod.DryRun
                                        | cmdmod.Prealert):
        depth_of = {pd.name: pd.depth for pd in self._policy_devices if pd.depth}
        return cmdmod.plan(
            cmd, site=self.cfg.site.id, key=self._hub_key,
            devices={d.name: d.profile for d in self.cfg.devices}, depth_of=depth_of,
            latest=self.latest, policy=self.cfg.policy, now=self.clock(),
        )

    async def _reply(self, cmd_id: str, status: m.ReplyStatus, reason: str,
                     report: Sequence[m.PointCheck] = ()) -> None:
        self._pending.append(m.Reply(seq=0, ts=self.clock(), prio=m.Priority.REPLY, cmd_id=cmd_id, status=status,
                                     reason=reason[:1024], report=list(report)))
        self.flush()

    async def _write(self, device: str, point: str, value: m.Scalar) -> None:
        if value is None:
            raise DeviceError(f"{device}.{point}: nothing to write")
        await self._scheduler_of[device].write(device, point, value)

    async def _read(self, device: str, point: str) -> tuple[m.Scalar, m.Quality]:
        got = await self._scheduler_of[device].read_now(device, [point])
        for r in got:
            if r.point == point:
                return _scalar(r.value), r.quality
        raise DeviceError(f"{device}.{point}: no reading")

    async def _read_fresh(self, device: str, points: Sequence[str]) -> dict[str, tuple[m.Scalar, m.Quality]]:
        got = await self._scheduler_of[device].read_now(device, points)
        return {r.point: (_scalar(r.value), r.quality) for r in got}

    # --- birth and health ---------------------------------------------------------------------

    def _birth(self) -> m.Birth:
        return m.Birth(
            site=self.cfg.site.id, agent_version=AGENT_VERSION, boot=self.boot, ts=self.clock(),
            devices=[
                m.DeviceInfo(id=d.name, kind=d.profile.kind.value, profile=d.profile_path.name,
                             profile_sha256=d.profile.hash, points=sorted(d.profile.points))
                for d in self.cfg.devices
            ],
            models=[
                m.ModelInfo(name=f"{name}.flood", sha256=f.model_sha256, health=f.health.value)
                for name, f in self.forecasters.items()
            ],
        )

    def health(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {}
        try:
            st = self.outbox.stats()
            out |= {"outbox.held": st.held, "outbox.critical_held": st.critical_held,
                    "outbox.thinned": st.thinned_total}
        except OutboxError as exc:
            out["outbox.error"] = str(exc)[:200]
        out |= {"outbox.storage_failures": self.storage_failures, "outbox.pending": len(self._pending),
                "outbox.pending_dropped": self.pending_dropped}
        for name, f in self.forecasters.items():
            out[f"model.{name}.health"] = f.health.value
        out["inference.dropped"] = self.inference_dropped
        c = self.uplink.counters
        out |= {"uplink.connects": c.connects, "uplink.records_sent": c.records_sent, "uplink.last_error": c.last_error}
        for sched in self.schedulers.values():
            for d in self.cfg.devices:
                if self._scheduler_of.get(d.name) is sched:
                    for k, v in sched.counters(d.name).snapshot().items():
                        out[f"device.{d.name}.{k}"] = v
        return out

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            values = {k: v for k, v in self.health().items()}
            self._pending.append(m.Event(seq=0, ts=self.clock(), prio=m.Priority.TELEMETRY,
                                         kind=site_events.AGENT_HEALTH,
                                         values=msgspec.convert(values, dict[str, m.Scalar])))

    def close(self) -> None:
        self.flush()
        self.outbox.close()
        for f in self.forecasters.values():
            f.close()


async def run_agent(cfg: SiteConfig) -> None:
    """Run until SIGTERM/SIGINT; then flush, say STOPPING=1 and close."""
    agent = Agent(cfg)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        async with AsyncExitStack() as stack:
            await agent.open(stack)
            await agent.run()
    except asyncio.CancelledError:
        log.info("agent.stopping", extra={"site": cfg.site.id})
        sd_notify("STOPPING=1")
    finally:
        agent.close()
        with contextlib.suppress(NotImplementedError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
