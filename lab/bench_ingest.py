"""``jikimi bench ingest``: the hub's ingest throughput and latency against a real mTLS Mosquitto.

What runs (all on this machine, all real parts):

- a fresh PKI and Mosquitto with the project's mTLS config;
- the hub, in this process, with its real writer (SQLite WAL, synchronous=FULL) and its MQTT
  connection (manual PUBACK after commit);
- ``--sites`` simulated edges in a second process, one MQTT connection each, publishing
  ``DataBatch``es of ``--batch`` readings at ``--rate`` records/s in total, holding every record
  until acked and resending on ``resend_from``, as the contract says;
- a plain subscriber in a third process that only counts what the broker delivers (the raw
  delivery rate of the same run).

Reported (JSON): ``records_per_s`` committed by the hub in the measured window,
``raw_broker_msgs_per_s`` and ``raw_broker_records_per_s`` delivered to the plain subscriber in
the same window, ``ratio`` = hub records/s over raw records/s (1.0: the hub keeps up with
everything the broker delivers), ``p50_ms``/``p99_ms`` from the hub taking a message from the
broker to its commit, and ``e2e_p50_ms``/``e2e_p99_ms`` from the edge's publish to the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from hub.config import parse
from hub.inbound import Inbound
from hub.service import running
from shared import messages, topics
from shared.errors import JikimiError
from shared.messages import Ack, Birth, DataBatch, DeviceInfo, Priority, Quality, Reading, SiteState, Status
from shared.tls import TlsFiles, client_context

HUB = "hub-bench"
COUNTER = "hub-bench-counter"
"""The plain subscriber's own identity: the broker binds the client id to the CN, so it cannot
share the hub's."""


class BenchError(JikimiError):
    """The benchmark could not run."""


@dataclass
class _Latency:
    window: tuple[float, float] = (0.0, 0.0)
    hub_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)

    def observe(self, items: Sequence[Inbound], committed: float) -> None:
        lo, hi = self.window
        if not lo <= committed <= hi:
            return
        for item in items:
            msg = item.msg
            if isinstance(msg, DataBatch) and msg.records:
                self.hub_ms.append((committed - item.received) * 1000)
                self.e2e_ms.append((committed - msg.records[0].ts) * 1000)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


# --- the simulated edges (a process of their own) --------------------------------------------


async def _edge(site: str, files: TlsFiles, host: str, port: int, per_s: float, batch: int,
                stop_at: float, sent: Synchronized[int], ready: asyncio.Event) -> None:
    import aiomqtt

    held: dict[int, Reading] = {}
    seq = 0
    async with aiomqtt.Client(hostname=host, port=port, identifier=site, protocol=aiomqtt.ProtocolVersion.V5,
                              tls_context=client_context(files), timeout=30, max_inflight_messages=200) as client:
        client.pending_calls_threshold = 100_000
        data = topics.site_topic(site, topics.SiteChannel.DATA)
        status = Status(site=site, state=SiteState.ONLINE, boot="bench", ts=time.time())
        await client.publish(topics.site_topic(site, topics.SiteChannel.STATUS), messages.encode(status), qos=1,
                             retain=True)
        # a birth, so the hub knows the device's kind and runs its rules on every reading
        birth = Birth(site=site, agent_version="bench", boot="bench", ts=time.time(), devices=[
            DeviceInfo(id="gauge-1", kind="flood_alarm", profile="bench", profile_sha256="0" * 64,
                       points=["water_depth_cm", "battery_v"])])
        await client.publish(topics.site_topic(site, topics.SiteChannel.BIRTH), messages.encode(birth), qos=1,
                             retain=True)
        await client.subscribe(topics.site_topic(site, topics.SiteChannel.ACK), qos=1)

        async def acks() -> None:
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                ack = messages.decode(Ack, msg.payload)
                if ack.through_seq is not None:
                    for s in [s for s in held if s <= ack.through_seq]:
                        del held[s]
                if ack.resend_from is not None:
                    again = [r for s, r in sorted(held.items()) if s >= ack.resend_from]
                    for i in range(0, len(again), batch):
                        await publish(again[i:i + batch])

        async def publish(records: list[Reading]) -> None:
            floor = min(held) if held else seq + 1
            body = DataBatch(site=site, boot="bench", records=list(records), floor_seq=floor)
            await client.publish(data, messages.encode(body), qos=1)

        interval = batch / per_s
        async with asyncio.TaskGroup() as tg:
            receiver = tg.create_task(acks(), name=f"bench.acks.{site}")
            ready.set()
            nxt = time.monotonic()
            while time.time() < stop_at:
                now = time.time()
                records = []
                for i in range(batch):
                    seq += 1
                    # dry weather: depths below, battery above every alarm limit (no alarm storm)
                    depth = i % 2 == 1
                    r = Reading(seq=seq, ts=now, prio=Priority.TELEMETRY, device="gauge-1",
                                point="water_depth_cm" if depth else "battery_v",
                                value=float(seq % 5) if depth else 12.5 + (seq % 10) / 10, quality=Quality.GOOD)
                    held[seq] = r
                    records.append(r)
                await publish(records)
                with sent.get_lock():
                    sent.value += batch
                nxt += interval
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.sleep(3.0)  # let the last acks arrive
            receiver.cancel()


def _edges_main(sites: list[str], pki: str, host: str, port: int, per_s: float, batch: int, stop_at: float,
                sent: Synchronized[int]) -> None:
    async def go() -> None:
        readies = [asyncio.Event() for _ in sites]
        async with asyncio.TaskGroup() as tg:
            for site, ready in zip(sites, readies, strict=True):
                tg.create_task(_edge(site, TlsFiles.from_pki(Path(pki), site), host, port, per_s, batch, stop_at,
                                     sent, ready), name=f"bench.edge.{site}")
                await asyncio.sleep(0.005)  # stagger the TLS handshakes

    asyncio.run(go())


def _counter_main(pki: str, host: str, port: int, count: Synchronized[int], ready: multiprocessing.synchronize.Event,
                  stop_at: float) -> None:
    """The plain subscriber: counts every data message the broker delivers, nothing else."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    files = TlsFiles.from_pki(Path(pki), COUNTER)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=COUNTER, protocol=paho.MQTTv5)
    client.tls_set_context(client_context(files))

    def on_connect(c: paho.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)

    def on_subscribe(_c: paho.Client, _u: object, _m: object, _rc: object, _p: object) -> None:
        ready.set()

    def on_message(_c: paho.Client, _u: object, _msg: object) -> None:
        count.value += 1  # one thread writes; the parent only reads

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    while time.time() < stop_at:
        client.loop(timeout=0.5)
    client.disconnect()


# --- the run ---------------------------------------------------------------------------------


def _pki(root: Path, sites: list[str]) -> Path:
    from trust.pki import Pki, Role

    pki = Pki(root / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(HUB, Role.HUB)
    pki.issue(COUNTER, Role.HUB)
    for s in sites:
        pki.issue(s, Role.EDGE)
    return pki.dir


async def run_bench(n_sites: int, duration: float, batch: int, rate: float, warmup: float,
                    workdir: Path) -> dict[str, Any]:
    from trust.broker import RunningBroker

    if n_sites < 1 or duration <= 0 or batch < 1 or rate <= 0:
        raise BenchError("--sites, --duration, --batch and --rate must be positive")
    sites = [f"bench-{i:04d}" for i in range(n_sites)]
    pki = _pki(workdir, sites)
    (workdir / "broker").mkdir()
    ctx = multiprocessing.get_context("spawn")
    with RunningBroker.start(pki, workdir / "broker") as broker:
        cfg = parse({
            "hub": {"id": HUB},
            "broker": {"host": broker.host, "port": broker.port, "ca": str(pki / "ca.pem"),
                       "cert": str(pki / HUB / "cert.pem"), "key": str(pki / HUB / "key.pem")},
            "database": {"path": str(workdir / "hub.db")},
            "commands": {"signing_key": str(pki / "command-signing" / "key.pem")},
            "api": {"enabled": False},
        }, workdir / "hub.toml")
        lat = _Latency()
        raw: Synchronized[int] = ctx.Value("q", 0)
        sent: Synchronized[int] = ctx.Value("q", 0)
        counter_ready = ctx.Event()
        t0 = time.time()
        start_at = t0 + 5.0
        stop_at = start_at + warmup + duration
        counter = ctx.Process(target=_counter_main, args=(str(pki), broker.host, broker.port, raw, counter_ready,
                                                          stop_at + 10), name="bench-raw-counter")
        counter.start()
        if not await asyncio.to_thread(counter_ready.wait, 30):
            raise BenchError("the raw counter did not subscribe")
        async with running(cfg, observer=lat.observe) as hub:
            edges = ctx.Process(target=_edges_main, args=(sites, str(pki), broker.host, broker.port, rate / n_sites,
                                                          batch, stop_at, sent), name="bench-edges")
            edges.start()
            try:
                await asyncio.sleep(max(0.0, start_at + warmup - time.time()))
                c = hub.engine.counters
                w0, r0, m0, cpu0 = time.time(), c.records, raw.value, _thread_cpu()
                busy0, commit0 = hub.writer.stats.busy_s, hub.writer.stats.commit_s
                lat.window = (w0, w0 + duration)
                await asyncio.sleep(duration)
                w1, r1, m1, cpu1 = time.time(), c.records, raw.value, _thread_cpu()
                busy1, commit1 = hub.writer.stats.busy_s, hub.writer.stats.commit_s
                # drain: wait until everything published is committed (or give up after 30 s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        while edges.is_alive() or c.records < sent.value:  # noqa: ASYNC110 - another process
                            await asyncio.sleep(0.2)
                drained = c.records >= sent.value
                stats = hub.writer.stats
                result_hub = {"transactions": stats.transactions, "max_tx_ms": round(stats.max_tx_ms, 1),
                              "duplicates": c.duplicates, "resend_asks": c.resend_asks,
                              "queue_high_water": stats.queue_high_water, "overflow": hub.mqtt.overflow,
                              "cpu_s_in_window": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
                              "writer_busy_s_in_window": round(busy1 - busy0, 2),
                              "commit_s_in_window": round(commit1 - commit0, 2),
                              "load_average": os.getloadavg()}
            finally:
                edges.join(timeout=40)
                if edges.is_alive():
                    edges.terminate()
        counter.join(timeout=20)
        if counter.is_alive():
            counter.terminate()
    elapsed = w1 - w0
    records_per_s = (r1 - r0) / elapsed
    raw_msgs = (m1 - m0) / elapsed
    raw_records = raw_msgs * batch
    return {
        "records_per_s": round(records_per_s, 1),
        "raw_broker_msgs_per_s": round(raw_msgs, 1),
        "raw_broker_records_per_s": round(raw_records, 1),
        "ratio": round(records_per_s / raw_records, 4) if raw_records else None,
        "p50_ms": _pct(lat.hub_ms, 50),
        "p99_ms": _pct(lat.hub_ms, 99),
        "e2e_p50_ms": _pct(lat.e2e_ms, 50),
        "e2e_p99_ms": _pct(lat.e2e_ms, 99),
        "offered_records_per_s": rate,
        "sites": n_sites,
        "batch": batch,
        "duration_s": round(elapsed, 2),
        "records_sent": sent.value,
        "records_committed": hub.engine.counters.records,
        "all_committed": drained,
        "hub": result_hub,
        "machine": _machine(),
    }


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process: the event-loop (main) thread and all other threads."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"main": 0.0, "other_threads": 0.0}
    pid = os.getpid()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            out["main" if int(task.name) == pid else "other_threads"] += cpu
    return out


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
        result = asyncio.run(run_bench(args.sites, args.duration, args.batch, args.rate, args.warmup, Path(tmp)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("records_per_s", "raw_broker_msgs_per_s", "ratio", "p50_ms", "p99_ms",
                                             "e2e_p50_ms", "e2e_p99_ms", "all_committed")}))
    return 0
