"""``jikimi bench ingest``: the hub's ingest limit against a real mTLS Mosquitto, next to the broker's own.

What runs (all on this machine, all real parts):

- a fresh PKI and Mosquitto with the project's mTLS config; the benchmark raises its soft
  ``RLIMIT_NOFILE`` to the hard limit first, so the broker (a child) can hold every connection;
- ``--sites`` simulated edges spread over ``--procs`` load-generator processes, one mutual-TLS
  connection each, every site sending a ``DataBatch`` of ``--batch`` readings every
  ``batch × sites ÷ rate`` seconds, holding every record until acked and resending on
  ``resend_from``, as the contract says;
- the broker's delivery capacity for the same message shape and QoS, to a C subscriber
  (``mosquitto_sub``): before the hub has a session, ``--capacity-msgs`` such batches are queued
  for a persistent ``mosquitto_sub`` session, which then reconnects and takes them all; the rate
  is counted from the first to the last message's arrival stamp (``-F %U``);
- the hub, in this process, with its real writer (SQLite WAL) and its MQTT connection (manual
  PUBACK after commit); then the sweep: each offered rate in ``--rates`` runs ``--warmup`` +
  ``--step`` seconds, the edges pause, and the step is *sustained* if everything sent was
  committed within ``--drain`` seconds and the p99 from the hub's MQTT client reading a message
  off the socket to its commit is ≤ 250 ms. The sweep stops at the first step not sustained.

Reported (JSON): ``sites``, ``sustained_records_per_s`` (the highest sustained offered rate),
``p99_ms`` (at that rate), ``broker_capacity_msgs_per_s``, ``broker_capacity_records_per_s``,
``ratio`` = hub ÷ broker records/s, and ``sweep`` (every step, with the rate the generators
actually offered and the load average).

Then, unless ``--burst-sites 0``, the typhoon burst (lab/bench_burst.py) with the same hub,
broker and generators: for it the hub also serves its API (HTTPS) and forwards alerts to a
reference receiver; its figures are under ``burst``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import heapq
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import random
import resource
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from hub import auth, heap
from hub.config import parse
from hub.inbound import Inbound
from hub.roles import Role as HubRole
from hub.service import running
from lab import bench_burst
from lab.bench_burst import BurstControl, BurstPlan, cpu_seconds, pct
from lab.mqtt_load import LoadClient, LoadClientError
from shared import messages, topics
from shared.errors import JikimiError
from shared.messages import Ack, Birth, DataBatch, DeviceInfo, Priority, Quality, Reading, Record, SiteState, Status
from shared.tls import TlsFiles

HUB = "hub-bench"
COUNTER = "hub-bench-counter"
"""The C subscriber's own identity: the broker binds the client id to the CN, so it cannot share
the hub's."""
CAPACITY_SITE = "bench-capacity"
"""The site whose data the capacity phase queues (never one of the swept sites)."""
SIGNER = f"alert-{HUB}"
"""The hub's CAP alert-signing identity (the burst's alerts)."""
P99_GOAL_MS = 250.0
CONNECTING_PER_PROC = 8
CONNECT_ATTEMPTS = 5


class BenchError(JikimiError):
    """The benchmark could not run."""


@dataclass
class _Latency:
    window: tuple[float, float] = (0.0, 0.0)
    hub_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    crossings: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The burst: each site's first underpass reading, when the hub received it and committed it."""

    def observe(self, items: Sequence[Inbound], committed: float) -> None:
        for item in items:
            msg = item.msg
            if isinstance(msg, DataBatch) and msg.records and msg.site not in self.crossings:
                first = msg.records[0]
                if isinstance(first, Reading) and first.device == bench_burst.BURST_DEVICE:
                    self.crossings[msg.site] = (item.received, committed)
        lo, hi = self.window
        if not lo <= committed <= hi:
            return
        for item in items:
            msg = item.msg
            if isinstance(msg, DataBatch) and msg.records:
                self.hub_ms.append((committed - item.received) * 1000)
                self.e2e_ms.append((committed - msg.records[0].ts) * 1000)


# --- the simulated edges (load-generator processes) --------------------------------------------


@dataclass(frozen=True)
class _Control:
    """Shared between this process and the generators: the offered rate (records/s over all
    sites; 0 pauses), the records sent, the sites connected, the stop flag, and the burst's."""

    rate: Synchronized[float]
    sent: Synchronized[int]
    connected: Synchronized[int]
    stop: Synchronized[int]
    burst: BurstControl


def _readings(seq0: int, n: int, now: float) -> list[Reading]:
    out = []
    for i in range(n):
        seq = seq0 + i
        depth = i % 2 == 1
        # dry weather: depths below, battery above every alarm limit (no alarm storm)
        out.append(Reading(seq=seq, ts=now, prio=Priority.TELEMETRY, device="gauge-1",
                           point="water_depth_cm" if depth else "battery_v",
                           value=float(seq % 5) if depth else 12.5 + (seq % 10) / 10, quality=Quality.GOOD))
    return out


def _generator_context(files: TlsFiles) -> ssl.SSLContext:
    """The load generator's TLS: what :func:`shared.tls.client_context` sets up (TLS 1.3, the
    broker verified against the PKI's CA and its host name, our certificate sent), without the
    system trust store ``ssl.create_default_context`` loads first: that costs ~195 ms of CPU per
    context here against ~9 ms, and a generator builds one per site (1,000+ per process), where a
    real edge builds one per process."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(files.ca))
    ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    return ctx


@dataclass
class _Pace:
    """One generator process's copy of the control values, read by its pacer once a tick.

    Reading a ``Synchronized`` takes a lock; 6,500 sites each reading the rate and the stop flag
    on every wake made the generators, not the hub, the limit near 10,000 records/s."""

    rate: float = 0.0
    stop: bool = False
    burst_at: float = 0.0
    sent: int = 0
    """Records generated since the pacer last added them to the shared count."""


PACE_TICK_S = 0.02
KEEPALIVE_PING_S = 30.0
"""How often a generator pings each of its connections (the client's keep-alive is 60 s)."""
QUIET_S = 0.3
"""How long the count of records sent must stay still before a drain counts (15 pacer ticks)."""


class _Site:
    """One simulated edge in a generator process: its pacer sets ``due`` when a batch is due."""

    def __init__(self, name: str, files: TlsFiles, crossing_s: float | None) -> None:
        self.name = name
        self.files = files
        self.crossing_s = crossing_s
        self.due = asyncio.Event()


async def _pacer(ctl: _Control, pace: _Pace, sites: list[_Site], n_sites: int, batch: int) -> None:
    """Every tick: copy the shared controls, add what was generated to the shared count, and tell
    each site whose batch is due. A site still busy with its last batch when the next falls due
    skips it (the step then records the lower rate really offered; nothing bursts to catch up)."""
    heap: list[tuple[float, int]] = []
    rate = 0.0
    interval = 0.0
    while True:
        pace.rate = ctl.rate.value
        pace.burst_at = ctl.burst.burst_at.value
        pace.stop = bool(ctl.stop.value)
        if pace.sent:
            with ctl.sent.get_lock():
                ctl.sent.value += pace.sent
            pace.sent = 0
        if pace.stop:
            for s in sites:
                s.due.set()
            return
        now = time.monotonic()
        if pace.rate != rate:  # a new step: a random phase each, so the sites do not send in lockstep
            rate = pace.rate
            interval = batch * n_sites / rate if rate > 0 else 0.0
            heap = [(now + random.uniform(0, interval), i) for i in range(len(sites))] if rate > 0 else []  # noqa: S311 - a phase, not a secret
            heapq.heapify(heap)
        while heap and heap[0][0] <= now:
            t, i = heapq.heappop(heap)
            sites[i].due.set()
            heapq.heappush(heap, (max(t + interval, now), i))
        await asyncio.sleep(PACE_TICK_S)


async def _edge(site: _Site, host: str, port: int, batch: int, pace: _Pace, ctl: _Control,
                gate: asyncio.Semaphore, connected: list[int], clients: list[LoadClient]) -> None:
    """One site; a burst site (``crossing_s``) crosses that long after the burst's start."""
    held: collections.OrderedDict[int, Reading] = collections.OrderedDict()
    seq = 0
    name = site.name
    resends: set[asyncio.Task[None]] = set()

    def on_message(topic: str, payload: bytes) -> None:
        ack = messages.decode(Ack, payload)
        if ack.through_seq is not None:
            while held and next(iter(held)) <= ack.through_seq:
                held.popitem(last=False)
        if ack.resend_from is not None:
            task = asyncio.get_running_loop().create_task(resend(ack.resend_from))
            resends.add(task)
            task.add_done_callback(resends.discard)

    async def resend(start: int) -> None:
        again = [r for s, r in held.items() if s >= start]
        for i in range(0, len(again), batch):
            await publish(again[i:i + batch])

    for attempt in range(CONNECT_ATTEMPTS):
        async with gate:  # a few handshakes at a time: thousands at once time out at the broker
            try:
                client = await LoadClient.connect(host, port, _generator_context(site.files), name, on_message)
                break
            except (LoadClientError, OSError, TimeoutError):
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
        await asyncio.sleep(1.0 + attempt)
    clients.append(client)
    data = topics.site_topic(name, topics.SiteChannel.DATA)

    async def publish(records: list[Reading]) -> None:
        floor = next(iter(held)) if held else seq + 1
        body = DataBatch(site=name, boot="bench", records=list[Record](records), floor_seq=floor)
        await client.publish(data, messages.encode(body))

    try:
        status = Status(site=name, state=SiteState.ONLINE, boot="bench", ts=time.time())
        await client.publish(topics.site_topic(name, topics.SiteChannel.STATUS), messages.encode(status), retain=True)
        # a birth, so the hub knows the device's kind and runs its rules on every reading
        devices = [DeviceInfo(id="gauge-1", kind="flood_alarm", profile="bench", profile_sha256="0" * 64,
                              points=["water_depth_cm", "battery_v"])]
        if site.crossing_s is not None:  # the burst's: an underpass beside the gauge
            devices.append(DeviceInfo(id=bench_burst.BURST_DEVICE, kind=bench_burst.BURST_KIND, profile="bench",
                                      profile_sha256="0" * 64, points=[bench_burst.DEPTH_POINT]))
        birth = Birth(site=name, agent_version="bench", boot="bench", ts=time.time(), devices=devices)
        await client.publish(topics.site_topic(name, topics.SiteChannel.BIRTH), messages.encode(birth), retain=True)
        await client.subscribe(topics.site_topic(name, topics.SiteChannel.ACK))
        connected[0] += 1

        async def crossing(after_s: float) -> None:
            """The burst: the water crosses the closing depth; then the depth again every REPEAT_S."""
            nonlocal seq
            while pace.burst_at <= 0 and not pace.stop:  # noqa: ASYNC110 - set by the pacer
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, pace.burst_at + after_s - time.time()))
            first = True
            while pace.burst_at > 0 and not pace.stop:
                seq += 1
                r = Reading(seq=seq, ts=time.time(), prio=Priority.TELEMETRY, device=bench_burst.BURST_DEVICE,
                            point=bench_burst.DEPTH_POINT, value=closing_cm + bench_burst.RISE_ABOVE_CM,
                            quality=Quality.GOOD)
                held[seq] = r
                pace.sent += 1
                await publish([r])
                if first:
                    ctl.burst.crossings.put((name, r.ts, time.time()))
                    first = False
                again = time.monotonic() + bench_burst.REPEAT_S
                while time.monotonic() < again and pace.burst_at > 0 and not pace.stop:  # noqa: ASYNC110 - set by the pacer
                    await asyncio.sleep(0.5)

        closing_cm = bench_burst.closing_rule()[1]
        async with asyncio.TaskGroup() as tg:
            crosser = None if site.crossing_s is None else tg.create_task(crossing(site.crossing_s),
                                                                          name=f"bench.crossing.{name}")
            while True:
                await site.due.wait()
                site.due.clear()
                if pace.stop:
                    break
                if pace.rate <= 0:
                    continue  # paused after this batch fell due: a drain is counting
                records = _readings(seq + 1, batch, time.time())
                for r in records:
                    held[r.seq] = r
                seq += batch
                pace.sent += batch  # counted before it goes, so a drain waits for it
                await publish(records)
            await asyncio.sleep(2.0)  # let the last acks arrive
            if crosser is not None:
                crosser.cancel()
    finally:
        client.close()


def _edges_main(sites: list[str], pki: str, host: str, port: int, n_sites: int, batch: int, ctl: _Control,
                crossings: dict[str, float]) -> None:
    async def go() -> None:
        gate = asyncio.Semaphore(CONNECTING_PER_PROC)
        pace = _Pace()
        edges = [_Site(s, TlsFiles.from_pki(Path(pki), s), crossings.get(s)) for s in sites]
        connected = [0]

        async def count_connected() -> None:
            told = 0
            while told < len(edges) and not pace.stop:
                if connected[0] > told:
                    with ctl.connected.get_lock():
                        ctl.connected.value += connected[0] - told
                    told = connected[0]
                await asyncio.sleep(0.2)

        clients: list[LoadClient] = []

        async def pinger() -> None:
            """Keep-alive for every connection of this process: one timer, not one per site."""
            while not pace.stop:
                await asyncio.sleep(KEEPALIVE_PING_S)
                for c in clients:
                    c.ping()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pacer(ctl, pace, edges, n_sites, batch), name="bench.pacer")
            tg.create_task(count_connected(), name="bench.connected")
            ping = tg.create_task(pinger(), name="bench.pinger")
            tasks = [tg.create_task(_edge(e, host, port, batch, pace, ctl, gate, connected, clients),
                                    name=f"bench.edge.{e.name}") for e in edges]
            await asyncio.gather(*tasks)
            ping.cancel()

    asyncio.run(go())


# --- the broker's own capacity, to a C subscriber ----------------------------------------------


def _mosq_tls(pki: Path, host: str, port: int, identity: str) -> list[str]:
    files = TlsFiles.from_pki(pki, identity)
    return ["-h", host, "-p", str(port), "--cafile", str(files.ca), "--cert", str(files.cert), "--key",
            str(files.key), "-i", identity, "-V", "5", "-q", "1"]


def broker_capacity(pki: Path, host: str, port: int, batch: int, n_msgs: int) -> dict[str, Any]:
    """Queue ``n_msgs`` DataBatches of ``batch`` readings (QoS 1) for a persistent ``mosquitto_sub``
    session, then let it take them all; msgs/s from its first to its last arrival stamp."""
    for tool in ("mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (the broker's capacity is measured with it)")
    topic = topics.site_topic(CAPACITY_SITE, topics.SiteChannel.DATA)
    sub = ["mosquitto_sub", *_mosq_tls(pki, host, port, COUNTER), "-c", "-x", "600", "-t", topic]
    subprocess.run([*sub, "-E"], check=True, timeout=30, capture_output=True)  # the session, then away
    records = list[Record](_readings(1, batch, time.time()))
    payload = messages.encode(DataBatch(site=CAPACITY_SITE, boot="bench", records=records, floor_seq=1))
    lines = (payload + b"\n") * n_msgs
    subprocess.run(["mosquitto_pub", *_mosq_tls(pki, host, port, CAPACITY_SITE), "-t", topic, "-l"],
                   input=lines, check=True, timeout=600, capture_output=True)
    out = subprocess.run([*sub, "-C", str(n_msgs), "-F", "%U"], check=True, timeout=600, capture_output=True)
    stamps = [float(x) for x in out.stdout.split()]
    if len(stamps) != n_msgs:
        raise BenchError(f"mosquitto_sub took {len(stamps)} of {n_msgs} queued messages")
    span = stamps[-1] - stamps[0]
    msgs_per_s = (n_msgs - 1) / span if span > 0 else float("inf")
    return {"msgs": n_msgs, "payload_bytes": len(payload), "seconds": round(span, 3),
            "msgs_per_s": round(msgs_per_s, 1), "records_per_s": round(msgs_per_s * batch, 1)}


# --- the run ---------------------------------------------------------------------------------


def _pki(folder: Path, sites: list[str], *, signer: bool) -> tuple[Path, float | None]:
    """A PKI with every identity the run needs: issued into ``folder``, or, when ``folder`` holds a
    PKI already (``--pki``, kept from an earlier run), taken as it is (``signer``: it must hold
    the hub's alert-signing identity)."""
    from trust.pki import Pki, Role

    if (folder / "ca.pem").is_file():
        needed = [HUB, COUNTER, CAPACITY_SITE, *([SIGNER] if signer else []), *sites]
        missing = [s for s in needed if not (folder / s / "cert.pem").is_file()]
        if missing:
            raise BenchError(f"{folder}: the PKI has no identity {missing[0]} ({len(missing)} missing)")
        return folder, None
    pki = Pki(folder)
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(HUB, Role.HUB)
    pki.issue(COUNTER, Role.HUB)
    pki.issue(CAPACITY_SITE, Role.EDGE)
    pki.issue(SIGNER, Role.ALERT)
    t0 = time.perf_counter()
    pki.issue_many(sites, Role.EDGE)
    return pki.dir, time.perf_counter() - t0


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft file-descriptor limit to its hard limit (the broker and the
    generators are children and inherit it); returns (soft, hard)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard, hard


async def run_bench(n_sites: int, rates: list[float], step: float, warmup: float, drain: float, batch: int,
                    procs: int, capacity_msgs: int, workdir: Path, pki_dir: Path | None = None,
                    burst: BurstPlan | None = None, client_process: bool = True) -> dict[str, Any]:
    from trust.broker import RunningBroker

    if n_sites < 1 or step <= 0 or batch < 1 or procs < 1 or capacity_msgs < 2 or not rates \
            or any(r <= 0 for r in rates):
        raise BenchError("--sites, --step, --batch, --procs, --capacity-msgs and every --rates value must be positive")
    if burst is not None:
        burst.check(n_sites)
        if burst.sites == 0:
            burst = None
    nofile = raise_nofile()
    if nofile[0] < n_sites + 100:
        raise BenchError(f"the file-descriptor limit ({nofile[0]}) is below --sites ({n_sites}) + 100")
    sites = [f"bench-{i:05d}" for i in range(n_sites)]
    pki, issue_s = _pki(pki_dir or workdir / "pki", sites, signer=burst is not None)
    (workdir / "broker").mkdir()
    ctx = multiprocessing.get_context("spawn")
    ctl = _Control(rate=ctx.Value("d", 0.0), sent=ctx.Value("q", 0), connected=ctx.Value("q", 0),
                   stop=ctx.Value("i", 0), burst=BurstControl(burst_at=ctx.Value("d", 0.0), crossings=ctx.Queue()))
    crossings = {} if burst is None else bench_burst.schedule(sites[:burst.sites], burst.seconds, burst.seed)
    points: list[dict[str, Any]] = []
    burst_out: dict[str, Any] | None = None
    async with contextlib.AsyncExitStack() as stack:
        broker = stack.enter_context(RunningBroker.start(pki, workdir / "broker"))
        raw: dict[str, Any] = {
            "hub": {"id": HUB},
            "broker": {"host": broker.host, "port": broker.port, "ca": str(pki / "ca.pem"),
                       "cert": str(pki / HUB / "cert.pem"), "key": str(pki / HUB / "key.pem"),
                       "client_process": client_process},
            "database": {"path": str(workdir / "hub.db")},
            "commands": {"signing_key": str(pki / "command-signing" / "key.pem")},
            "api": {"enabled": False},
        }
        receiver_pid: int | None = None
        if burst is not None:  # the console's API and a city centre to forward to
            centre_url, receiver_pid = await stack.enter_async_context(
                bench_burst.receiver_process(pki / "ca.pem", workdir))
            raw["api"] = {"listen": "127.0.0.1:0"}
            raw["forward"] = {"signing_key": str(pki / SIGNER / "key.pem"),
                              "signing_cert": str(pki / SIGNER / "cert.pem"),
                              "recipients": {bench_burst.RECIPIENT: {"kind": "city_centre", "url": centre_url}}}
        cfg = parse(raw, workdir / "hub.toml")
        per = -(-n_sites // procs)
        gens = [ctx.Process(target=_edges_main, args=(sites[i:i + per], str(pki), broker.host, broker.port, n_sites,
                                                      batch, ctl, {s: crossings[s] for s in sites[i:i + per]
                                                                   if s in crossings}),
                            name=f"bench-edges-{i // per}")
                for i in range(0, n_sites, per)]
        for g in gens:
            g.start()
        try:
            t0 = time.time()
            connect_deadline = t0 + 60 + n_sites * 0.02
            while ctl.connected.value < n_sites:
                if time.time() > connect_deadline or not all(g.is_alive() for g in gens):
                    raise BenchError(f"only {ctl.connected.value} of {n_sites} sites connected")
                await asyncio.sleep(0.5)
            connect_s = time.time() - t0
            # before the hub has a session, so nothing is queued for it
            capacity = await asyncio.to_thread(broker_capacity, pki, broker.host, broker.port, batch, capacity_msgs)
            lat = _Latency()
            # the hub as `jikimi hub run` runs it, its heap kept (hub/heap.py rule 3)
            keeper = stack.enter_context(heap.kept(asyncio.get_running_loop()))
            async with running(cfg, observer=lat.observe) as hub:
                c = hub.engine.counters
                for rate in rates:
                    lat.hub_ms.clear()
                    lat.e2e_ms.clear()
                    ctl.rate.value = rate
                    await asyncio.sleep(warmup)
                    w0, s0, r0 = time.time(), ctl.sent.value, c.records
                    client = hub.mqtt.client_pid
                    cpu0 = cpu_seconds(os.getpid(), client, broker.proc.pid, *(g.pid for g in gens))
                    lat.window = (w0, w0 + step)
                    await asyncio.sleep(step)
                    w1, s1, r1 = time.time(), ctl.sent.value, c.records
                    cpu1 = cpu_seconds(os.getpid(), client, broker.proc.pid, *(g.pid for g in gens))
                    cores = [round((b - a) / (w1 - w0), 2) for a, b in zip(cpu0, cpu1, strict=True)]
                    ctl.rate.value = 0.0
                    drained = await _drain(lambda: c.records, ctl, drain)
                    lat.window = (0.0, 0.0)
                    p99 = pct(lat.hub_ms, 99)
                    offered = (s1 - s0) / (w1 - w0)
                    points.append({
                        "offered_records_per_s": rate,
                        "generated_records_per_s": round(offered, 1),
                        "committed_records_per_s": round((r1 - r0) / (w1 - w0), 1),
                        "p50_ms": pct(lat.hub_ms, 50), "p99_ms": p99,
                        "e2e_p99_ms": pct(lat.e2e_ms, 99),
                        "all_committed": drained,
                        "generator_limited": offered < 0.95 * rate,
                        "sustained": drained and p99 <= P99_GOAL_MS and offered >= 0.95 * rate,
                        "overflow": hub.mqtt.overflow, "resend_asks": c.resend_asks,
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        # CPU used in the window, in cores: where the two cores went
                        "cores_used": {"hub": round(cores[0] + cores[1], 2), "hub_mqtt_process": cores[1],
                                       "broker": cores[2], "generators": round(sum(cores[3:]), 2)},
                        "writer": _writer_window(hub.writer.stats.recent, w0, w1),
                    })
                    if not points[-1]["sustained"]:
                        break
                if burst is not None:
                    assert hub.api_port is not None

                    def cpu() -> dict[str, float]:
                        hub_s, client_s, broker_s, receiver_s, *gen_s = cpu_seconds(
                            os.getpid(), hub.mqtt.client_pid, broker.proc.pid, receiver_pid, *(g.pid for g in gens))
                        return {"hub": hub_s + client_s, "broker": broker_s, "receiver": receiver_s,
                                "generators": sum(gen_s)}

                    def add_viewer(password: str) -> None:
                        auth.add_user(cfg.db_path, bench_burst.VIEWER, HubRole.VIEWER, password, actor="bench")

                    burst_out = await bench_burst.run_burst(burst, sites, bench_burst.Probes(
                        api_port=hub.api_port, ca=pki / "ca.pem", db=cfg.db_path, rate=ctl.rate, sent=ctl.sent,
                        ctl=ctl.burst, cpu=cpu, add_viewer=add_viewer, writer_queue=hub.writer.qsize,
                        at_hub=lat.crossings,
                        pids={os.getpid(), broker.proc.pid, receiver_pid or 0, *(g.pid or 0 for g in gens)}))
                    await _drain(lambda: c.records, ctl, drain)
                stats = hub.writer.stats
                hub_stats = {"transactions": stats.transactions, "max_tx_ms": round(stats.max_tx_ms, 1),
                             "duplicates": c.duplicates, "queue_high_water": stats.queue_high_water,
                             "records_committed": c.records, "records_sent": ctl.sent.value,
                             "heap_freezes": keeper.freezes}
        finally:
            ctl.stop.value = 1
            for g in gens:
                g.join(timeout=30)
                if g.is_alive():
                    g.terminate()
    sustained = [p for p in points if p["sustained"]]
    best = max(sustained, key=lambda p: p["offered_records_per_s"]) if sustained else None
    hub_rate = best["offered_records_per_s"] if best else 0.0
    return {
        "sites": n_sites,
        "sustained_records_per_s": hub_rate,
        "p99_ms": best["p99_ms"] if best else None,
        "broker_capacity_msgs_per_s": capacity["msgs_per_s"],
        "broker_capacity_records_per_s": capacity["records_per_s"],
        "ratio": round(hub_rate / capacity["records_per_s"], 4),
        "sweep": points,
        "batch": batch,
        "client_process": client_process,
        "p99_goal_ms": P99_GOAL_MS,
        "capacity": capacity,
        "setup": {"procs": len(gens), "nofile_limit": nofile[0],
                  "pki_issue_s": None if issue_s is None else round(issue_s, 2),
                  "pki_issue_ms_per_site": None if issue_s is None else round(issue_s / n_sites * 1000, 2),
                  "connect_s": round(connect_s, 1)},
        "hub": hub_stats,
        "machine": _machine(),
        **({} if burst_out is None else {"burst": {**burst_out, "machine": _machine()}}),
    }


async def _drain(committed: Callable[[], int], ctl: _Control, within_s: float) -> bool:
    """After the edges were paused: wait until they have gone quiet (the count of records sent
    has not moved for ``QUIET_S``: a batch already due goes out first) and the hub has committed
    everything sent. True if both happened within ``within_s``."""
    deadline = time.monotonic() + within_s
    last, still_since = ctl.sent.value, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        sent = ctl.sent.value
        if sent != last:
            last, still_since = sent, time.monotonic()
        elif time.monotonic() - still_since >= QUIET_S and committed() >= sent:
            return True
    return False


def _writer_window(recent: Sequence[tuple[float, int, float, float]], lo: float, hi: float) -> dict[str, Any]:
    """The writer's transactions that ended in the window: how many, their size, their time and
    the part of it in COMMIT (where a p99 over the goal comes from)."""
    txs = [t for t in recent if lo <= t[0] <= hi]
    sizes = [float(t[1]) for t in txs]
    return {"transactions": len(txs), "records_p50": pct(sizes, 50), "records_max": max(sizes, default=0),
            "tx_ms_p50": pct([t[2] for t in txs], 50), "tx_ms_p99": pct([t[2] for t in txs], 99),
            "tx_ms_max": round(max((t[2] for t in txs), default=0.0), 1),
            "commit_ms_p50": pct([t[3] for t in txs], 50), "commit_ms_p99": pct([t[3] for t in txs], 99),
            "commit_ms_max": round(max((t[3] for t in txs), default=0.0), 1),
            "busy": round(sum(t[2] for t in txs) / 1000 / (hi - lo), 2) if hi > lo else None}


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform()}


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="jikimi-bench-") as tmp:
        n_burst = min(bench_burst.DEFAULT_SITES, args.sites) if args.burst_sites is None else args.burst_sites
        burst = BurstPlan(sites=n_burst, seconds=args.burst_s, background_rate=args.burst_rate,
                          seed=args.burst_seed, drain_s=args.burst_drain)
        result = asyncio.run(run_bench(args.sites, args.rates, args.step, args.warmup, args.drain, args.batch,
                                       args.procs, args.capacity_msgs, Path(tmp), args.pki, burst,
                                       args.client_process))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("sites", "sustained_records_per_s", "p99_ms", "broker_capacity_records_per_s",
                                      "ratio")}
    if "burst" in result:
        b = result["burst"]
        summary["burst"] = {k: b[k] for k in ("sites", "reading_to_alarm_p99_ms", "reading_to_cap_ack_p99_ms",
                                              "api_alarms_p99_ms", "alarms_in_stream", "cap_acked")}
    print(json.dumps(summary))
    return 0
