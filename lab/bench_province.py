"""``jikimi bench province``: the provincial hub's ingest of many cities' streams, and where it stops keeping up.

What runs (all on this machine, all real parts but the city hubs themselves):

- a fresh province PKI (its CA, the provincial broker's certificate, the provincial hub's identity
  ``province-bench``, one ``bridge-<city>`` identity per city, and two identities of the broker
  reference); no city PKI is made, since no city broker runs: the cities' bridge identities are
  the province's (trust/broker.py ``Bridge``);
- the provincial Mosquitto (``Scope.PROVINCE``: mutual TLS 1.3, the ACL that lets a bridge write
  only its own city's up channels), and ``jikimi province run`` as a subprocess (ingest only: no
  API, no CAP forwarding);
- ``--cities`` simulated city hubs in this process, each a real province outbox
  (hub/upstream.py ``open_upstream``) sent by the real sender (shared/uplink.py ``Uplink`` on a
  city :class:`~shared.uplink.Wire`, as hub/upstream.py builds it), connected as ``bridge-<city>``
  straight to the provincial broker. A real deployment puts a city broker and its bridge in
  between; 31 bridged city brokers (and 31 hubs behind them) would not fit this machine;
- each city's typhoon mix (:class:`Mix`), appended to its outbox every ``TICK_S`` at the offered
  rate, stamped with the time of the append.

The typhoon rate (``--rate``, records/s over all cities) defaults to ``TYPHOON_RATE``: per city
and second, 33 site states (1,000 sites, each reported every 30 s because its data keeps changing:
hub/province_config.py ``site_state_every_s``), 3 alarm transitions, 1 operation record and 2
alert-delivery records, i.e. 39 records/s (about 10 kB/s) per city, 1,209 for 31 cities. The
mix is spread evenly over the ticks; a real hub appends its changed sites' states in one go every
``site_state_every_s`` (fewer, larger batches), and each alarm or operation change in its own
writer transaction.

1. **Sweep**: each step runs ``--warmup-s`` then ``--step-s`` measured; the cities pause and the
   step must commit everything within ``--drain-s`` (the next step starts once what is left is
   committed). A step is *kept up* when everything appended in it was committed and the p99 of
   a record's city → province latency (its ``ts`` at append → its ``committed_at`` in the
   province's SQLite: the moment the province's one writer took its batch) is ≤ ``--p99-ms``,
   and the cities really offered the rate (≥ 95 %; otherwise this process, not the province,
   is the limit, and the row says so). The rates (:func:`next_rate`): from ``--rate`` up by
   ``--factor`` until a step is not kept up (down by ``--factor``² when the typhoon rate itself
   is not), then the middle of the bracket until it is within ``--factor``, at most
   ``--max-steps`` steps. The highest kept-up step is the limit; the lowest step above it that
   was not, and why, is where it broke.
2. **Broker reference**: the provincial broker's own delivery rate for the same message shape
   (a ``CityBatch`` of the mix, as many records as the cities' batches held at the limit, or at
   the first step when none was kept up; QoS 1)
   to a C subscriber (``mosquitto_sub``): ``--capacity-msgs`` batches are queued for a persistent
   ``mosquitto_sub`` session, which then takes them all, timed from its first to its last
   arrival stamp. They go over the capacity city's down channel (``jk/v1/city/<city>/ack``,
   published by a province identity, read by that city's bridge identity), which neither the
   province nor any city reads, so the running province never sees them.
3. **Catch-up**: every city's link is cut (its sender stops) while the province runs on; what a
   ``--outage-s`` outage at the typhoon rate produces is appended straight into the outboxes
   (dated over the outage); then the links come back with the typhoon still blowing, and the
   time until every outage record is committed at the province is measured. The backlog comes
   through each outbox's replay (at most ``UplinkConfig.replay_rate`` records/s per city, live
   records first), the path of a city whose own link was cut or whose bridge queue overflowed;
   a bridge that held its queue would deliver it at broker speed.
4. Everything drains, the province stops, and its file is checked: every (city, epoch, seq)
   each city appended committed exactly once (no gap, nothing extra, each city's record count
   equal to what it appended, nothing quarantined).

Not asserted anywhere: the figures are this machine's, with its other load (the report carries
the load average and the cores each part used).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import tomli_w

from hub.alarms import AlarmState
from hub.upstream import ProvinceOutbox, city_wire, open_upstream
from shared import messages
from shared.errors import JikimiError
from shared.messages import (
    AlarmRecord,
    CityRecord,
    DeliveryRecord,
    Operation,
    OperationRecord,
    Place,
    Priority,
    SiteStateRecord,
)
from shared.tls import TlsFiles
from shared.topics import CityChannel, city_topic
from shared.uplink import Uplink, UplinkConfig
from trust.broker import RunningBroker, Scope
from trust.pki import Pki, Role, bridge_cn

GYEONGGI: Final = (
    "suwon", "seongnam", "uijeongbu", "anyang", "bucheon", "gwangmyeong", "pyeongtaek", "dongducheon",
    "ansan", "goyang", "gwacheon", "guri", "namyangju", "osan", "siheung", "gunpo", "uiwang", "hanam",
    "yongin", "paju", "icheon", "anseong", "gimpo", "hwaseong", "gwangju", "yangju", "pocheon", "yeoju",
    "yeoncheon", "gapyeong", "yangpyeong")
"""Gyeonggi's 31 cities and counties: the simulated cities' ids (``city-NNN`` beyond them)."""
PROVINCE: Final = "province-bench"
COUNTER: Final = "province-bench-counter"
"""The broker reference's publisher: a province identity of its own (the broker binds the client
id to the CN, so it cannot share the running province's)."""
CAPACITY_CITY: Final = "bench-capacity"
"""The city whose bridge identity takes the broker reference's messages (never a swept city)."""
TYPHOON_RATE: Final = 1200.0
SITES_PER_CITY: Final = 1000
MIX_CYCLE: Final = 39
"""Of every 39 records of a city: 33 site states, 3 alarm transitions, 1 operation, 2 deliveries."""
TICK_S: Final = 0.1
"""How often a city appends what its rate has produced (the hub appends per writer transaction)."""
OFFERED_SHARE: Final = 0.95
"""Below this share of the target rate, the step was limited by the cities (this process)."""
BACKLOG_CHUNK: Final = 5000
"""Outage records appended per outbox transaction while the backlog is made."""


class BenchError(JikimiError):
    """The benchmark could not run (or its arguments make no sense)."""


@dataclass(frozen=True)
class Settings:
    cities: int = 31
    rate: float = TYPHOON_RATE
    factor: float = 1.5
    max_steps: int = 10
    warmup_s: float = 3.0
    step_s: float = 10.0
    drain_s: float = 20.0
    outage_s: float = 600.0
    sites_per_city: int = SITES_PER_CITY
    capacity_msgs: int = 20_000
    p99_ms: float = 1000.0
    catch_up_timeout_s: float = 900.0
    outbox_max_records: int = 200_000
    """The city outbox's size (hub/province_config.py's default): a backlog beyond it is thinned."""

    def check(self) -> None:
        """Every problem with the arguments, as one :class:`BenchError` naming the option."""
        if not 1 <= self.cities <= 500:
            raise BenchError("--cities: between 1 and 500")
        for name, value in (("--rate", self.rate), ("--step-s", self.step_s), ("--drain-s", self.drain_s),
                            ("--p99-ms", self.p99_ms), ("--catch-up-timeout-s", self.catch_up_timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise BenchError(f"{name}: must be a positive number, not {value}")
        for name, value in (("--warmup-s", self.warmup_s), ("--outage-s", self.outage_s)):
            if not (math.isfinite(value) and value >= 0):
                raise BenchError(f"{name}: must be zero or more, not {value}")
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise BenchError(f"--factor: must be above 1, not {self.factor}")
        if not 1 <= self.max_steps <= 50:
            raise BenchError("--max-steps: between 1 and 50")
        if not 1 <= self.sites_per_city <= messages.MAX_CITY_SITES:
            raise BenchError(f"--sites-per-city: between 1 and {messages.MAX_CITY_SITES} (a city's birth lists them)")
        if self.capacity_msgs < 2:
            raise BenchError("--capacity-msgs: at least 2")
        backlog = self.backlog_per_city
        if backlog > self.outbox_max_records:
            raise BenchError(f"--outage-s {self.outage_s:g} at --rate {self.rate:g} leaves {backlog} records in each"
                             f" city's outbox, over its {self.outbox_max_records}: they would be thinned")

    @property
    def backlog_per_city(self) -> int:
        return round(self.rate / self.cities * self.outage_s)


def city_ids(n: int) -> list[str]:
    return [GYEONGGI[i] if i < len(GYEONGGI) else f"city-{i + 1:03d}" for i in range(n)]


# --- pure: a city's typhoon mix ------------------------------------------------------------------


class Mix:
    """Pure: one city's records in the typhoon mix, in a fixed cycle (``MIX_CYCLE``); alarms go
    unacknowledged → acknowledged → normal, operations started → done, deliveries pending →
    acked."""

    _ALARM: Final = (AlarmState.UNACK.value, AlarmState.ACKED.value, AlarmState.NORMAL.value)

    def __init__(self, city: str, index: int, n_sites: int) -> None:
        self.city = city
        self.sites = [f"gg-{city}-fa-{i:04d}" for i in range(n_sites)]
        # each city its own patch of the province, its sites spread over ~10 km
        self.lat0 = 36.95 + (index % 7) * 0.15
        self.lon0 = 126.65 + (index // 7 % 7) * 0.2
        self.n = 0
        self._raised: dict[str, float] = {}

    def place(self, i: int) -> Place:
        return Place(lat=self.lat0 + (i % 100) * 0.001, lon=self.lon0 + (i // 100 % 100) * 0.001)

    def records(self, count: int, ts: float) -> list[CityRecord]:
        out: list[CityRecord] = []
        for _ in range(count):
            k, slot = divmod(self.n, MIX_CYCLE)
            self.n += 1
            if slot < 33:
                i = (k * 33 + slot) % len(self.sites)
                out.append(SiteStateRecord(seq=0, ts=ts, prio=Priority.TELEMETRY, site=self.sites[i], online=True,
                                           last_data_ts=ts - (i % 30), place=self.place(i)))
            elif slot < 36:
                j = k * 3 + slot - 33
                alarm, step = f"a-{j // 3}", j % 3
                raised = self._raised.setdefault(alarm, ts)
                if step == 2:
                    del self._raised[alarm]
                i = (j // 3 * 7) % len(self.sites)
                out.append(AlarmRecord(seq=0, ts=ts, prio=Priority.ALARM, alarm_id=alarm, site=self.sites[i],
                                       rule="closing_depth", severity="high", state=self._ALARM[step],
                                       raised_at=raised, place=self.place(i)))
            elif slot == 36:
                action = Operation.BLOCK if k // 2 % 2 == 0 else Operation.EVACUATE
                done = k % 2 == 1
                out.append(OperationRecord(seq=0, ts=ts, prio=Priority.EVENT, op_id=f"op-{k // 2}", action=action,
                                           area=f"{self.city}-area-{k // 2 % 5}", state="done" if done else "started",
                                           commands=12 if done else 0, verified=12 if done else 0))
            else:
                acked = slot == 38
                out.append(DeliveryRecord(seq=0, ts=ts, prio=Priority.EVENT, delivery_id=f"d-{k}",
                                          alert_id=f"alert-{self.city}-{k}", recipient="city-centre",
                                          state="acked" if acked else "pending", attempts=1))
        return out


def _progress(what: str, row: dict[str, Any], keys: tuple[str, ...]) -> None:
    """One line per phase on stderr, so a long run shows where it is."""
    print(f"bench province: {what} " + json.dumps({k: row.get(k) for k in keys}), file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 1)


def bracket(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Pure: the highest step kept up, and the lowest step above it that was not (None: none)."""
    kept = [r for r in rows if r["kept_up"]]
    best = max(kept, key=lambda r: r["offered_records_per_s"]) if kept else None
    floor = best["offered_records_per_s"] if best else -1.0
    above = [r for r in rows if not r["kept_up"] and r["offered_records_per_s"] > floor]
    return best, min(above, key=lambda r: r["offered_records_per_s"]) if above else None


def next_rate(rows: list[dict[str, Any]], factor: float) -> float | None:
    """Pure: the sweep's next offered rate after ``rows``: up by ``factor`` while every step is
    kept up; down by ``factor``² while none is; then the geometric middle of the bracket until
    it is within ``factor`` (None: done)."""
    best, broke = bracket(rows)
    tried = [float(r["offered_records_per_s"]) for r in rows]
    if broke is None:
        return round(max(tried) * factor, 1)
    if best is None:
        return round(min(tried) / factor ** 2, 1)
    lo, hi = float(best["offered_records_per_s"]), float(broke["offered_records_per_s"])
    return None if hi <= lo * factor * 1.001 else round(math.sqrt(lo * hi), 1)


def judge(target: float, generated: float, uncommitted: int, p99_ms: float | None, bound_ms: float) -> str | None:
    """Pure: why a sweep step was not kept up, or None when it was."""
    if generated < OFFERED_SHARE * target:
        return (f"the simulated cities offered only {generated:.0f} of {target:.0f} records/s: this process, not"
                " the province, was the limit")
    if uncommitted:
        return f"{uncommitted} records were not committed within the drain time"
    if p99_ms is None or p99_ms > bound_ms:
        return f"p99 city → province latency {p99_ms} ms is over the {bound_ms:g} ms bound"
    return None


# --- a simulated city hub ------------------------------------------------------------------------


@dataclass
class City:
    """A city hub's province outbox and its sender, as hub/upstream.py makes them, and the
    generator of its typhoon mix."""

    name: str
    outbox: ProvinceOutbox
    uplink: Uplink
    mix: Mix
    rate: float = 0.0
    """Records/s this city appends now (0 pauses it)."""
    appended: int = 0
    link: asyncio.Task[None] | None = None
    gen: asyncio.Task[None] | None = None

    @classmethod
    def make(cls, name: str, index: int, work: Path, pki: Path, broker: RunningBroker, n_sites: int,
             outbox_max: int) -> City:
        outbox, _ = open_upstream(work / name / "province-outbox.db", max_records=outbox_max, clock=time.time)
        mix = Mix(name, index, n_sites)
        hub = f"hub-{name}"
        boot = f"bench-{os.getpid()}"

        # the city's Wire as hub/upstream.py's Upstream has it; the province sends no request here
        wire = city_wire(name, hub, boot, sites=lambda: mix.sites, on_request=lambda _req: None, clock=time.time)
        cn = bridge_cn(name)
        uplink = Uplink(UplinkConfig(sender=name, host=broker.host, port=broker.port, tls=TlsFiles.from_pki(pki, cn),
                                     client_id=cn), wire, outbox, boot=boot, clock=time.time)
        return cls(name, outbox, uplink, mix)

    def append(self, records: list[CityRecord]) -> None:
        self.outbox.append(records)
        self.appended += len(records)
        self.uplink.notify()

    async def generate(self) -> None:
        """Append what ``rate`` has produced every ``TICK_S``, stamped now; a city that falls more
        than a second behind drops the rest (the step then records the rate really offered)."""
        await asyncio.sleep(random.uniform(0, TICK_S))  # noqa: S311 - a phase, so cities do not append in lockstep
        carry, last = 0.0, time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            carry = min(carry + self.rate * (now - last), self.rate) if self.rate > 0 else 0.0
            last = now
            n = int(carry)
            if n:
                carry -= n
                self.append(self.mix.records(n, time.time()))

    def connect(self, tg: asyncio.TaskGroup) -> None:
        self.link = tg.create_task(self.uplink.run(), name=f"bench.uplink.{self.name}")

    async def cut(self) -> None:
        """The city's link goes down: its sender stops; its outbox keeps everything unacked."""
        if self.link is not None:
            self.link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.link
            self.link = None


# --- the province's file, read beside its writer -------------------------------------------------


class ProvinceFile:
    """Read-only queries on the running province's SQLite (WAL: its writer is never blocked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.path.exists():
                return None
            try:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            except sqlite3.Error:
                return None
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def born(self) -> int:
        """How many cities' births the province has committed."""
        db = self._conn()
        try:
            return int(db.execute("SELECT count(*) FROM cities WHERE boot IS NOT NULL").fetchone()[0]) if db else 0
        except sqlite3.Error:
            return 0  # its migrations are not done yet

    def through(self) -> dict[tuple[str, int], int]:
        """(city, epoch) → the seq through which everything is committed."""
        db = self._conn()
        if db is None:
            return {}
        return {(str(c), int(e)): int(t) for c, e, t in db.execute("SELECT city, epoch, through FROM city_seqs")}

    def latencies_ms(self, city: str, epoch: int, lo: int, hi: int) -> list[float]:
        """City → province latency of seqs ``lo``..``hi`` (append ``ts`` → ``committed_at``), in ms."""
        db = self._conn()
        assert db is not None
        return [(c - t) * 1000 for t, c in db.execute(
            "SELECT ts, committed_at FROM city_records WHERE city=? AND epoch=? AND seq BETWEEN ? AND ?",
            (city, epoch, lo, hi))]


def _behind(cities: list[City], through: dict[tuple[str, int], int], upto: dict[str, int] | None = None) -> int:
    """Records appended (up to ``upto``'s seq per city, else all) not yet committed."""
    n = 0
    for c in cities:
        last = (upto or {}).get(c.name, c.outbox.next_seq - 1)
        n += max(0, last - through.get((c.name, c.outbox.epoch), 0))
    return n


async def _until_committed(cities: list[City], pf: ProvinceFile, timeout_s: float,
                           upto: dict[str, int] | None = None) -> int:
    """Wait until the province has committed what the cities appended (up to ``upto``); returns
    how many are still missing (0: all)."""
    deadline = time.monotonic() + timeout_s
    while (left := _behind(cities, pf.through(), upto)) and time.monotonic() < deadline:  # noqa: ASYNC110 - another process's file
        await asyncio.sleep(0.1)
    return left


# --- processes -----------------------------------------------------------------------------------


def _cpu_s(*pids: int | None) -> list[float]:
    """CPU seconds (user + system) each process has used so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(f[11]) + int(f[12])) / tick)
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out


@contextlib.asynccontextmanager
async def _province(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``jikimi province run`` as a subprocess of this checkout; SIGTERM (then SIGKILL) at the end."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "province", "run", "--config", str(config),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _province_config(work: Path, pki: Pki, broker: RunningBroker) -> Path:
    path = work / "province" / "province.toml"
    path.parent.mkdir(parents=True)
    path.write_text(tomli_w.dumps({
        "province": {"id": PROVINCE},
        "broker": {"host": broker.host, "port": broker.port, "ca": str(pki.ca_chain),
                   "cert": str(pki.cert(PROVINCE)), "key": str(pki.key(PROVINCE))},
        "database": {"path": str(path.parent / "province.db")},
    }))
    return path


# --- the broker's own delivery rate, to a C subscriber -------------------------------------------


def _mosq(pki: Path, broker: RunningBroker, identity: str) -> list[str]:
    files = TlsFiles.from_pki(pki, identity)
    return ["-h", broker.host, "-p", str(broker.port), "--cafile", str(files.ca), "--cert", str(files.cert),
            "--key", str(files.key), "-i", identity, "-V", "5", "-q", "1"]


def capacity_payload(records_per_msg: int) -> bytes:
    """A ``CityBatch`` of the typhoon mix, as a city's sender encodes it."""
    mix = Mix(CAPACITY_CITY, 0, SITES_PER_CITY)
    now = time.time()
    recs = [msgspec.structs.replace(r, seq=i + 1) for i, r in enumerate(mix.records(records_per_msg, now))]
    payload, n = messages.encode_batch(CAPACITY_CITY, "bench", [messages.encode_record(r) for r in recs],
                                       floor_seq=1, epoch=1, sender="city")
    if n != records_per_msg:
        raise BenchError(f"{records_per_msg} records do not fit one batch (only {n})")
    return payload


def broker_capacity(pki: Path, broker: RunningBroker, records_per_msg: int, n_msgs: int) -> dict[str, Any]:
    """Queue ``n_msgs`` such batches (QoS 1) for a persistent ``mosquitto_sub`` session, then let
    it take them all; msgs/s from its first to its last arrival stamp."""
    for tool in ("mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (the broker reference is measured with it)")
    topic = city_topic(CAPACITY_CITY, CityChannel.ACK)
    sub = ["mosquitto_sub", *_mosq(pki, broker, bridge_cn(CAPACITY_CITY)), "-c", "-x", "600", "-t", topic]
    subprocess.run([*sub, "-E"], check=True, timeout=30, capture_output=True)  # the session, then away
    payload = capacity_payload(records_per_msg)
    subprocess.run(["mosquitto_pub", *_mosq(pki, broker, COUNTER), "-t", topic, "-l"],
                   input=(payload + b"\n") * n_msgs, check=True, timeout=600, capture_output=True)
    out = subprocess.run([*sub, "-C", str(n_msgs), "-F", "%U"], check=True, timeout=600, capture_output=True)
    stamps = [float(x) for x in out.stdout.split()]
    if len(stamps) != n_msgs:
        raise BenchError(f"mosquitto_sub took {len(stamps)} of {n_msgs} queued messages")
    span = stamps[-1] - stamps[0]
    msgs_per_s = (n_msgs - 1) / span if span > 0 else float("inf")
    return {"msgs": n_msgs, "records_per_msg": records_per_msg, "payload_bytes": len(payload),
            "seconds": round(span, 3), "msgs_per_s": round(msgs_per_s, 1),
            "records_per_s": round(msgs_per_s * records_per_msg, 1), "topic": topic}


# --- the run -------------------------------------------------------------------------------------


def _pki(folder: Path, cities: list[str]) -> Pki:
    pki = Pki(folder)
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(PROVINCE, Role.PROVINCE)
    pki.issue(COUNTER, Role.PROVINCE)
    for c in [*cities, CAPACITY_CITY]:
        pki.issue(bridge_cn(c), Role.BRIDGE)
    return pki


async def run_bench(s: Settings, work: Path) -> dict[str, Any]:
    """The whole benchmark in ``work`` (which must be empty or absent); returns the report."""
    s.check()
    names = city_ids(s.cities)
    pki = _pki(work / "pki", names)
    (work / "broker").mkdir()
    with RunningBroker.start(pki.dir, work / "broker", scope=Scope.PROVINCE) as broker:
        config = _province_config(work, pki, broker)
        pf = ProvinceFile(config.parent / "province.db")
        cities = [City.make(n, i, work / "cities", pki.dir, broker, s.sites_per_city, s.outbox_max_records)
                  for i, n in enumerate(names)]
        try:
            async with _province(config, work / "province" / "province.log") as proc, asyncio.TaskGroup() as tg:
                for c in cities:
                    c.connect(tg)
                    c.gen = tg.create_task(c.generate(), name=f"bench.generate.{c.name}")
                try:
                    report = await _phases(s, pki, broker, proc, cities, pf, tg)
                finally:
                    for c in cities:
                        await c.cut()
                        if c.gen is not None:
                            c.gen.cancel()
        except* BenchError as group:  # one line for the CLI, not a TaskGroup's traceback
            raise group.exceptions[0] from None
        finally:
            pf.close()
            for c in cities:
                c.outbox.close()
    report["exactly_once"] = verify(config.parent / "province.db", cities)
    report["parts"] = ("provincial Mosquitto (mutual TLS 1.3, the province ACL) and `jikimi province run` as"
                       " processes; the cities' outboxes and senders (hub/upstream.py, shared/uplink.py) in the"
                       " benchmark's process, connected as their bridge identities straight to the provincial"
                       " broker (no city brokers: 31 bridged city brokers would not fit this machine)")
    return report


async def _phases(s: Settings, pki: Pki, broker: RunningBroker, proc: asyncio.subprocess.Process,
                  cities: list[City], pf: ProvinceFile, tg: asyncio.TaskGroup) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while pf.born() < len(cities):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise BenchError(f"the province did not take every city's birth ({pf.born()} of {len(cities)}); see"
                             f" {pf.path.parent / 'province.log'}")
        await asyncio.sleep(0.2)
    pids = (proc.pid, broker.proc.pid, os.getpid())
    rows: list[dict[str, Any]] = []
    rate: float | None = s.rate
    while rate is not None and len(rows) < s.max_steps:
        rows.append(await _step(s, rate, cities, pf, pids))
        _progress("step", rows[-1], ("offered_records_per_s", "committed_records_per_s", "p99_ms", "why_not"))
        rate = next_rate(rows, s.factor)
    best, broke = bracket(rows)
    shape = (best or rows[0])["records_per_batch"]
    capacity = await asyncio.to_thread(broker_capacity, pki.dir, broker, max(1, round(shape)), s.capacity_msgs)
    sustained = best["offered_records_per_s"] if best else 0.0
    _progress("broker reference", capacity, ("records_per_msg", "msgs_per_s", "records_per_s"))
    catch_up = await _catch_up(s, cities, pf, tg) if s.outage_s > 0 else None
    if catch_up is not None:
        _progress("catch-up", catch_up, ("backlog_records", "seconds", "records_per_s", "not_committed"))
    for c in cities:
        c.rate = 0.0
    left = await _until_committed(cities, pf, max(s.catch_up_timeout_s, s.drain_s))  # what the typhoon left queued
    acked_by = time.monotonic() + 30
    while any(c.outbox.held for c in cities) and time.monotonic() < acked_by:  # noqa: ASYNC110 - the last acks
        await asyncio.sleep(0.1)
    from lab.bench_edge import machine

    return {
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cities": len(cities),
        "sites_per_city": s.sites_per_city,
        "typhoon_records_per_s": s.rate,
        "p99_bound_ms": s.p99_ms,
        "sweep": rows,
        "limit": {
            "sustained_records_per_s": sustained,
            "times_typhoon": round(sustained / s.rate, 2),
            "p99_ms": best["p99_ms"] if best else None,
            "broke_at_records_per_s": broke["offered_records_per_s"] if broke else None,
            "why": broke["why_not"] if broke else f"not reached within {s.max_steps} steps",
        },
        "broker_reference": capacity,
        "ratio": round(sustained / capacity["records_per_s"], 4) if capacity["records_per_s"] else None,
        "catch_up": catch_up,
        "uncommitted_at_end": left,
        "unacked_at_end": sum(c.outbox.held for c in cities),
        "records_per_city": {c.name: c.appended for c in cities},
    }


async def _step(s: Settings, rate: float, cities: list[City], pf: ProvinceFile,
                pids: tuple[int, ...]) -> dict[str, Any]:
    """One sweep step (phase 1); it starts once what earlier steps left is committed (or a
    generous wait is over: the row says how many were still behind)."""
    behind = await _until_committed(cities, pf, max(60.0, 6 * s.drain_s))
    for c in cities:
        c.rate = rate / len(cities)
    await asyncio.sleep(s.warmup_s)
    t0, th0 = time.time(), pf.through()
    first = {c.name: c.outbox.next_seq for c in cities}
    a0 = sum(c.appended for c in cities)
    b0 = sum(c.uplink.counters.batches_sent for c in cities), sum(c.uplink.counters.records_sent for c in cities)
    cpu0 = _cpu_s(*pids)
    await asyncio.sleep(s.step_s)
    t1, th1 = time.time(), pf.through()
    last = {c.name: c.outbox.next_seq - 1 for c in cities}
    a1 = sum(c.appended for c in cities)
    b1 = sum(c.uplink.counters.batches_sent for c in cities), sum(c.uplink.counters.records_sent for c in cities)
    cpu1 = _cpu_s(*pids)
    for c in cities:
        c.rate = 0.0
    left = await _until_committed(cities, pf, s.drain_s, upto=last)
    span = t1 - t0
    lat: list[float] = []
    for c in cities:
        lat += await asyncio.to_thread(pf.latencies_ms, c.name, c.outbox.epoch, first[c.name], last[c.name])
    committed = sum(th1.get((c.name, c.outbox.epoch), 0) - th0.get((c.name, c.outbox.epoch), 0) for c in cities)
    generated = (a1 - a0) / span
    p99 = pct(lat, 99)
    why = judge(rate, generated, left, p99, s.p99_ms)
    cores = [round((b - a) / span, 2) for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "offered_records_per_s": rate,
        "generated_records_per_s": round(generated, 1),
        "committed_records_per_s": round(committed / span, 1),
        "p50_ms": pct(lat, 50), "p99_ms": p99, "max_ms": round(max(lat), 1) if lat else None,
        "records_measured": len(lat),
        "records_per_batch": round((b1[1] - b0[1]) / (b1[0] - b0[0]), 1) if b1[0] > b0[0] else 0.0,
        "all_committed": left == 0,
        "behind_at_start": behind,
        "kept_up": why is None,
        "why_not": why,
        "cores_used": {"province": cores[0], "broker": cores[1], "cities": cores[2]},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def _catch_up(s: Settings, cities: list[City], pf: ProvinceFile, tg: asyncio.TaskGroup) -> dict[str, Any]:
    """Phase 3: cut every link, append an outage's records, restore the links under typhoon load."""
    for c in cities:
        c.rate = 0.0
    behind = await _until_committed(cities, pf, max(60.0, 6 * s.drain_s))  # what the sweep left
    for c in cities:
        await c.cut()
    made0 = time.monotonic()
    end = time.time()
    per_city = s.backlog_per_city
    for c in cities:
        for lo in range(0, per_city, BACKLOG_CHUNK):
            n = min(BACKLOG_CHUNK, per_city - lo)
            c.append(c.mix.records(n, end - s.outage_s * (1 - (lo + n / 2) / per_city)))
            await asyncio.sleep(0)
    made_s = time.monotonic() - made0
    upto = {c.name: c.outbox.next_seq - 1 for c in cities}
    held = sum(c.outbox.held for c in cities)
    replayed0 = sum(c.uplink.counters.records_replayed for c in cities)
    asks0 = sum(c.uplink.counters.resend_requests for c in cities)
    t0 = time.monotonic()
    for c in cities:
        c.rate = s.rate / len(cities)
        c.connect(tg)
    left = await _until_committed(cities, pf, s.catch_up_timeout_s, upto=upto)
    took = time.monotonic() - t0
    replayed = sum(c.uplink.counters.records_replayed for c in cities) - replayed0
    asks = sum(c.uplink.counters.resend_requests for c in cities) - asks0
    return {
        "outage_s": s.outage_s,
        "behind_at_start": behind,
        "backlog_records": per_city * len(cities),
        "records_per_city": per_city,
        "held_at_reconnect": held,
        "seconds": round(took, 2) if not left else None,
        "records_per_s": round(held / took, 1) if not left and took > 0 else None,
        "not_committed": left,
        "live_rate_during": s.rate,
        "replay_rate_per_city": UplinkConfig.replay_rate,
        "backlog_made_s": round(made_s, 1),
        "records_replayed": replayed,
        "resend_asks": asks,
        "replays_per_backlog_record": round(replayed / held, 2) if held else None,
    }


def verify(db: Path, cities: list[City]) -> dict[str, Any]:
    """Every (city, epoch, seq) each city appended committed exactly once, and nothing else."""
    from province.store import ProvinceStore

    store = ProvinceStore(db)
    try:
        views = {v.city: v for v in store.cities(time.time())}
        missing = extra = 0
        bad: list[str] = []
        for c in cities:
            want = c.outbox.next_seq - 1
            got = store.committed(c.name)
            seqs = {s for e, s, _ in got if e == c.outbox.epoch}
            m = want - len(seqs & set(range(1, want + 1)))
            x = len(got) - (want - m)
            v = views.get(c.name)
            if m or x or v is None or v.records != want or want != c.appended:
                bad.append(c.name)
            missing += m
            extra += x
        quarantined = len(store.quarantined())
    finally:
        store.close()
    appended = sum(c.appended for c in cities)
    return {"records_appended": appended, "records_committed": appended - missing + extra, "missing": missing,
            "extra": extra, "quarantined": quarantined, "cities_wrong": bad,
            "ok": not (missing or extra or quarantined or bad)}


def main(args: argparse.Namespace) -> int:
    """``jikimi bench province`` (lab/cli.py): an option left out takes :class:`Settings`' default."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    s = Settings(**{k: v for k, v in given.items() if v is not None})
    s.check()
    if args.dir is not None:
        shutil.rmtree(args.dir, ignore_errors=True)
        args.dir.mkdir(parents=True)
        report = asyncio.run(run_bench(s, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="jikimi-bench-province-") as tmp:
            report = asyncio.run(run_bench(s, Path(tmp)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"cities": report["cities"], **report["limit"], "broker_records_per_s":
                      report["broker_reference"]["records_per_s"], "ratio": report["ratio"],
                      "catch_up_s": (report["catch_up"] or {}).get("seconds"),
                      "exactly_once": report["exactly_once"]["ok"]}))
    return 0 if report["exactly_once"]["ok"] else 1
