"""``jikimi bench edge``: the agent's own figures, measured on a real agent process.

Everything runs on this machine: a fresh PKI, Mosquitto with mutual TLS, Modbus TCP
simulators (in this process), and the agent as a separate process (``jikimi edge run``), so
its RSS and CPU are its own. A plain MQTT subscriber with the hub's identity stands in for the
hub: it timestamps what reaches the broker and acks every seq it has (contiguously), so the
agent's outbox holds what it would hold in the field.

- ``rss_mb``, ``cpu_pct``: the agent with 10 devices × N points polled every second, each
  underpass device running the flood model as in the field (``model_loaded``); the same run
  without the model is ``without_model`` (what the model costs). ``rss_mb`` is the median of
  the RSS sampled every second over the run (``rss_samples`` of them, ``rss_min_mb`` to
  ``rss_max_mb``), so a difference of a few MB is not one sample's noise. ``model_engine`` is
  what runs the model (``int8``: the edge's own runner; ``litert``), from the agent's
  ``inference.model_loaded`` log line; ``numpy_loaded`` / ``litert_loaded`` say whether those
  libraries are mapped into the agent process.
- ``bytes_per_sample``: MQTT payload bytes of the data batches per reading they carried.
- ``read_to_broker_ms``: acquisition time of each reading → the subscriber has it.
- ``max_lossless_samples_per_s``: the highest offered rate (10 devices, shorter poll periods)
  at which every sample the agent read reached the subscriber and the agent kept its poll
  period (≥ 90 % of the offered rate); overload shows in ``overload`` as lag, never loss.
- ``close_latency_ms``: the simulated water crossing the closing depth → the barrier write
  arriving at the simulated PLC, with the profile's poll period (``poll_period_ms``).
- ``reconnect_s``: the broker is stopped and restarted; from the broker listening again to the
  agent's ``online`` status arriving.
- ``rss_steady_mb``, ``rss_peak_outage_mb``, ``rss_after_outage_mb``: the loaded site (model on)
  runs a while (its RSS sampled every second, the median is the steady state), the broker is
  stopped for ``outage_s`` (the peak is the highest sample while the agent buffers), then
  restarted; once every record of the outage has reached the subscriber (``drain_s`` after the
  restart) the RSS is sampled again for a settling period, its median is the RSS after the drain.

- ``agent_stop_timeouts``: every agent that did not stop within :data:`STOP_TIMEOUT_S` of
  SIGTERM (then killed), with the end of its log; empty when every stop was clean.

The agent runs as ``jikimi edge run`` with the systemd unit's environment
(:data:`edge.agent_cli.AGENT_ENV`), so its figures are the unit's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiomqtt

from edge.agent_cli import AGENT_ENV
from edge.sim.servers import Simulator, run_simulator
from shared import logs, messages, topics
from shared.paths import profiles_dir
from shared.profiles import load_profile
from shared.tls import TlsFiles, client_context
from trust.broker import BrokerError, RunningBroker
from trust.pki import Pki, Role

SITE = "gg-bench-site-01"
HUB = "hub-bench"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Subscriber:
    """Counts and timestamps what reaches the broker for the site."""

    readings: int = 0
    payload_bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seqs: set[int] = field(default_factory=set)
    online_at: list[float] = field(default_factory=list)
    acked: int = 0
    """Every seq up to this one has arrived, and the subscriber acked it as the hub would."""

    def next_ack(self) -> int | None:
        """The new contiguous ``through_seq`` to ack, if it moved."""
        start = self.acked
        while self.acked + 1 in self.seqs:
            self.acked += 1
        return self.acked if self.acked > start else None


@contextlib.asynccontextmanager
async def _subscriber(broker: RunningBroker, pki: Pki, sub: Subscriber) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier=f"{HUB}-{os.getpid()}",
                                          protocol=aiomqtt.ProtocolVersion.V5,
                                          tls_context=client_context(TlsFiles.from_pki(pki.dir, HUB))) as c:
                    await c.subscribe(topics.site_topic(SITE, topics.SiteChannel.DATA), qos=1)
                    await c.subscribe(topics.site_topic(SITE, topics.SiteChannel.STATUS), qos=1)
                    async for msg in c.messages:
                        now = time.time()
                        assert isinstance(msg.payload, bytes)
                        parsed = topics.parse(str(msg.topic))
                        if isinstance(parsed, topics.SiteTopic) and parsed.channel is topics.SiteChannel.STATUS:
                            st = messages.decode(messages.Status, msg.payload)
                            if st.state is messages.SiteState.ONLINE:
                                sub.online_at.append(time.monotonic())
                            continue
                        batch = messages.decode(messages.DataBatch, msg.payload)
                        sub.payload_bytes += len(msg.payload)
                        for r in batch.records:
                            sub.seqs.add(r.seq)
                            if isinstance(r, messages.Reading):
                                sub.readings += 1
                                if not r.historical:
                                    sub.latencies_ms.append((now - r.ts) * 1000)
                        through = sub.next_ack()
                        if through is not None:  # the agent deletes what the hub acked, as in the field
                            ack = messages.Ack(site=SITE, epoch=batch.epoch, through_seq=through)
                            await c.publish(topics.site_topic(SITE, topics.SiteChannel.ACK), messages.encode(ack),
                                            qos=1)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    task = asyncio.create_task(run(), name="bench-subscriber")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _write_profile(directory: Path, poll_s: float) -> Path:
    src = (profiles_dir() / "underpass-jk-up300.toml").read_text()
    path = directory / f"underpass-poll-{int(poll_s * 1000)}ms.toml"
    path.write_text(src.replace("poll_s = 0.5", f"poll_s = {poll_s}"))
    return path


def _write_config(directory: Path, pki: Pki, broker: RunningBroker, devices: list[tuple[str, Path, str]],
                  model: str | None = None) -> Path:
    lines = [
        "[site]", f'id = "{SITE}"', f'state_dir = "{directory / "state"}"', "",
        "[hub]", f'host = "{broker.host}"', f"port = {broker.port}", f'ca = "{pki.ca_chain}"',
        f'cert = "{pki.cert(SITE)}"', f'key = "{pki.key(SITE)}"', f'command_key = "{pki.command_pub}"', "",
        "[policy]", "verify_timeout_s = 10.0", "",
    ]
    for name, profile, address in devices:
        lines += [f"[devices.{name}]", f'profile = "{profile}"', f'transport = "{address}"']
        lines += [f'model = "{model}"', ""] if model else [""]
    path = directory / "site.toml"
    path.write_text("\n".join(lines))
    return path


STOP_TIMEOUT_S: Final = 30.0
"""How long an agent may take to stop on SIGTERM before the bench kills it (and says so)."""

_stuck_stops: list[dict[str, Any]] = []
"""Agents that did not stop within :data:`STOP_TIMEOUT_S` of SIGTERM in this run (reported as
``agent_stop_timeouts``): a bench must end and report a stuck agent, not wait for it for ever."""


@contextlib.asynccontextmanager
async def _agent(config: Path, log: Path,
                 env: Mapping[str, str] = AGENT_ENV) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(config),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                _stuck_stops.append({"run": log.parent.name, "log_tail": logs.tail(log, 20)})
                print(f"bench edge: the agent of {log.parent.name} did not stop within {STOP_TIMEOUT_S:g} s "
                      "of SIGTERM; killed", file=sys.stderr)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():  # state owned by other tasks
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def _world(work: Path) -> AsyncIterator[tuple[Pki, RunningBroker]]:
    pki = Pki(work / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(HUB, Role.HUB)
    pki.issue(SITE, Role.EDGE)
    (work / "broker").mkdir()
    with RunningBroker.start(pki.dir, work / "broker") as broker:
        yield pki, broker


@dataclass
class _Site:
    """A running loaded site: the agent process, what reached the subscriber, its files."""

    pid: int
    sub: Subscriber
    run_dir: Path
    points: int

    def next_seq(self) -> int:
        """The outbox's next seq: every seq below it has been handed out."""
        db = sqlite3.connect(self.run_dir / "state" / "outbox.db")
        try:
            return int(db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        finally:
            db.close()

    def missing(self, below: int) -> int:
        return sum(1 for s in range(1, below) if s not in self.sub.seqs)


@contextlib.asynccontextmanager
async def _loaded_site(run_dir: Path, pki: Pki, broker: RunningBroker, poll_s: float, n_devices: int,
                       model: str | None, env: Mapping[str, str] = AGENT_ENV) -> AsyncIterator[_Site]:
    """``n_devices`` underpass simulators polled every ``poll_s`` by a real agent, warmed up."""
    run_dir.mkdir()
    profile_path = _write_profile(run_dir, poll_s)
    profile = load_profile(profile_path)
    sub = Subscriber()
    async with contextlib.AsyncExitStack() as stack:
        sims: list[Simulator] = [await stack.enter_async_context(run_simulator(profile, transport="tcp"))
                                 for _ in range(n_devices)]
        config = _write_config(run_dir, pki, broker, [(f"d{i:02d}", profile_path, s.address)
                                                       for i, s in enumerate(sims)], model)
        await stack.enter_async_context(_subscriber(broker, pki, sub))
        proc = await stack.enter_async_context(_agent(config, run_dir / "agent.log", env))
        assert proc.pid is not None
        await _wait(lambda: sub.readings > 0, 20)
        await asyncio.sleep(2.0)  # warm-up: imports done, first polls settled
        yield _Site(proc.pid, sub, run_dir, len(profile.polled))


async def _load_run(work: Path, pki: Pki, broker: RunningBroker, poll_s: float, seconds: float,
                    n_devices: int = 10, model: str | None = "flood",
                    env: Mapping[str, str] = AGENT_ENV) -> dict[str, Any]:
    run_dir = work / f"load-{int(poll_s * 1000)}-{model or 'nomodel'}"
    async with _loaded_site(run_dir, pki, broker, poll_s, n_devices, model, env) as site:
        sub, points = site.sub, site.points
        r0, cpu0, t0, b0 = sub.readings, _proc_cpu_s(site.pid), time.monotonic(), sub.payload_bytes
        lat0 = len(sub.latencies_ms)
        rss_samples = await _rss_samples(site.pid, seconds)
        r1, cpu1, t1, b1 = sub.readings, _proc_cpu_s(site.pid), time.monotonic(), sub.payload_bytes
        engine = _model_engine(site.run_dir / "agent.log")
        loaded = _loaded_libraries(site.pid)
        window = sub.latencies_ms[lat0:]
        # Every seq handed out so far must reach the subscriber while the agent still runs:
        # lag is allowed to drain (up to 15 s), loss is not.
        next_seq = site.next_seq()
        drained = await _wait(lambda: site.missing(next_seq) == 0, 15)
        missing = site.missing(next_seq)
    offered = n_devices * points / poll_s
    achieved = (r1 - r0) / (t1 - t0)
    return {
        "poll_s": poll_s, "devices": n_devices, "points_per_device": points, "model_loaded": model is not None,
        "bytes_per_sample": round((b1 - b0) / max(1, r1 - r0), 1),
        "offered_samples_per_s": round(offered, 1), "delivered_samples_per_s": round(achieved, 1),
        "missing_seqs": missing, "drained": drained,
        "cpu_pct": round((cpu1 - cpu0) / (t1 - t0) * 100, 2), "rss_mb": round(_median(rss_samples), 1),
        "rss_samples": len(rss_samples), "rss_min_mb": round(min(rss_samples), 1),
        "rss_max_mb": round(max(rss_samples), 1), "model_engine": engine, **loaded,
        "read_to_broker_ms": {"p50": round(_pct(window, 0.5), 1), "p99": round(_pct(window, 0.99), 1)},
        "lossless": missing == 0 and drained and achieved >= 0.9 * offered,
    }


def _model_engine(agent_log: Path) -> str | None:
    """What runs the agent's model (``int8`` or ``litert``), from its ``inference.model_loaded`` log line."""
    try:
        lines = agent_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if '"inference.model_loaded"' in line:
            with contextlib.suppress(ValueError):
                engine = json.loads(line).get("engine")
                return str(engine) if engine is not None else None
    return None


LIBRARIES: dict[str, str] = {"numpy_loaded": "/numpy/", "litert_loaded": "/ai_edge_litert/"}
"""Report keys -> a path fragment of the library's shared objects in the process's memory map."""


def _loaded_libraries(pid: int) -> dict[str, bool]:
    """Which heavy libraries the agent process has loaded (their shared objects are mapped)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {key: fragment in maps for key, fragment in LIBRARIES.items()}


async def _rss_samples(pid: int, seconds: float, every_s: float = 1.0) -> list[float]:
    """The process's RSS every ``every_s`` for ``seconds`` (at least one sample)."""
    samples = [_proc_rss_mb(pid)]
    deadline = time.monotonic() + seconds
    while time.monotonic() + every_s <= deadline:
        await asyncio.sleep(every_s)
        samples.append(_proc_rss_mb(pid))
    return samples


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def _restart(broker: RunningBroker, attempts: int = 10) -> None:
    """Restart the broker on its port. The port is in the ephemeral range, and over a long
    outage the agent's own connection attempts can hold it for a moment (a TCP connect to a
    port nobody listens on may pick that port as its source and connect to itself)."""
    for attempt in range(attempts):
        try:
            broker.restart()
            return
        except BrokerError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)


async def _outage_run(work: Path, pki: Pki, broker: RunningBroker, outage_s: float, steady_s: float,
                      settle_s: float, n_devices: int = 10, poll_s: float = 1.0) -> dict[str, Any]:
    """RSS of the loaded site (model on) before, during and after a broker outage (module docstring)."""
    async with _loaded_site(work / "outage", pki, broker, poll_s, n_devices, "flood") as site:
        steady = await _rss_samples(site.pid, steady_s)
        broker.stop()
        during = await _rss_samples(site.pid, outage_s)
        before_restart = site.next_seq()
        await _restart(broker)
        back = time.monotonic()
        drained = await _wait(lambda: site.missing(before_restart) == 0, max(60.0, outage_s))
        drain_s = time.monotonic() - back
        after = await _rss_samples(site.pid, settle_s)
        missing = site.missing(before_restart)
    return {
        "outage_s": outage_s, "records_in_outage": before_restart - 1, "drained": drained,
        "drain_s": round(drain_s, 1), "missing_seqs": missing,
        "rss_steady_mb": round(_median(steady), 1), "rss_peak_outage_mb": round(max(during + after), 1),
        "rss_end_of_outage_mb": round(during[-1], 1),
        "rss_after_outage_mb": round(_median(after), 1),
        "rss_after_outage_last_mb": round(after[-1], 1),
    }


async def _close_latency(work: Path, pki: Pki, broker: RunningBroker, trials: int) -> dict[str, Any]:
    run_dir = work / "close"
    run_dir.mkdir()
    profile_path = profiles_dir() / "underpass-jk-up300.toml"
    profile = load_profile(profile_path)
    poll_s = profile.points["water_depth_cm"].poll_s
    latencies: list[float] = []
    async with run_simulator(profile, transport="tcp") as sim:
        sim.physics.barrier.travel_s = 0.5
        writes: list[float] = []
        original = sim.physics.command

        def spy(point: str, value: Any) -> None:  # instrumentation: when the write arrives
            if point == "barrier_cmd" and value == "close":
                writes.append(time.monotonic())
            original(point, value)

        sim.physics.command = spy  # type: ignore[method-assign]
        config = _write_config(run_dir, pki, broker, [("barrier", profile_path, sim.address)])
        async with _agent(config, run_dir / "agent.log"):
            await asyncio.sleep(3.0)
            rng = random.Random(7)  # noqa: S311 - phases of a benchmark, not secrets
            for _ in range(trials):
                sim.physics.water.depth_cm = 10.0
                sim.physics.barrier.position, sim.physics.barrier.moving = 0.0, 0
                await asyncio.sleep(1.0 + rng.uniform(0, poll_s))  # random phase against the polls
                before = len(writes)
                crossed = time.monotonic()
                sim.physics.water.depth_cm = 16.0
                if await _wait(lambda b=before: len(writes) > b, 10):  # type: ignore[misc]
                    latencies.append((writes[before] - crossed) * 1000)
                await _wait(lambda: sim.physics.barrier.limit_closed, 10)
                await asyncio.sleep(0.3)
    return {"poll_period_ms": round(poll_s * 1000), "trials": trials, "closed": len(latencies),
            "close_latency_ms": {"p50": round(_pct(latencies, 0.5), 1), "p99": round(_pct(latencies, 0.99), 1),
                                 "max": round(max(latencies, default=float("nan")), 1)}}


async def _reconnect(work: Path, pki: Pki, broker: RunningBroker, outage_s: float) -> dict[str, Any]:
    run_dir = work / "reconnect"
    run_dir.mkdir()
    profile_path = profiles_dir() / "underpass-jk-up300.toml"
    sub = Subscriber()
    async with run_simulator(load_profile(profile_path), transport="tcp") as sim:
        config = _write_config(run_dir, pki, broker, [("barrier", profile_path, sim.address)])
        async with _subscriber(broker, pki, sub), _agent(config, run_dir / "agent.log"):
            await _wait(lambda: bool(sub.online_at), 20)
            broker.stop()
            await asyncio.sleep(outage_s)
            before = len(sub.online_at)
            broker.restart()
            back = time.monotonic()
            ok = await _wait(lambda: len(sub.online_at) > before, 60)
    return {"reconnect_s": round(sub.online_at[-1] - back, 2) if ok else None, "outage_s": outage_s}


async def agent_section(seconds: float, outage_s: float = 240.0) -> dict[str, Any]:
    """The agent's figures; ``outage_s`` 0 leaves out the RSS-after-outage run."""
    _stuck_stops.clear()
    with tempfile.TemporaryDirectory(prefix="jikimi-bench-") as tmp:
        work = Path(tmp)
        async with _world(work) as (pki, broker):
            outage = (await _outage_run(work, pki, broker, outage_s, steady_s=max(3 * seconds, 3.0),
                                        settle_s=max(3 * seconds, 3.0)) if outage_s > 0 else None)
            load = [await _load_run(work, pki, broker, 1.0, max(seconds, 10.0))]
            bare = await _load_run(work, pki, broker, 1.0, max(seconds, 10.0), model=None)
            for poll_s in (0.2, 0.1, 0.05, 0.025):
                load.append(await _load_run(work, pki, broker, poll_s, max(seconds / 2, 5.0)))
                if not load[-1]["lossless"]:
                    break
            close = await _close_latency(work, pki, broker, trials=20)
            reconnect = await _reconnect(work, pki, broker, outage_s=10.0)
    base = load[0]
    lossless = [r["offered_samples_per_s"] for r in load if r["lossless"]]
    return {
        "model_loaded": base["model_loaded"], "rss_mb": base["rss_mb"], "cpu_pct": base["cpu_pct"],
        "model_engine": base["model_engine"], "numpy_loaded": base["numpy_loaded"],
        "litert_loaded": base["litert_loaded"],
        "rss_samples": base["rss_samples"], "rss_min_mb": base["rss_min_mb"], "rss_max_mb": base["rss_max_mb"],
        "bytes_per_sample": base["bytes_per_sample"],
        "without_model": {"rss_mb": bare["rss_mb"], "cpu_pct": bare["cpu_pct"], "numpy_loaded": bare["numpy_loaded"]},
        "load_devices_x_points": f"{base['devices']}x{base['points_per_device']} at {base['poll_s']} s",
        "read_to_broker_ms": base["read_to_broker_ms"],
        "max_lossless_samples_per_s": max(lossless, default=0.0),
        "load_steps": load,
        "poll_period_ms": close["poll_period_ms"], "close_latency_ms": close["close_latency_ms"],
        "close_trials": {"trials": close["trials"], "closed": close["closed"]},
        "reconnect_s": reconnect["reconnect_s"], "reconnect_outage_s": reconnect["outage_s"],
        **({} if outage is None else {
            "rss_steady_mb": outage["rss_steady_mb"], "rss_peak_outage_mb": outage["rss_peak_outage_mb"],
            "rss_after_outage_mb": outage["rss_after_outage_mb"], "outage": outage}),
        "agent_stop_timeouts": list(_stuck_stops),
    }
