"""The typhoon burst of ``jikimi bench ingest``: many sites cross their alarm threshold within a minute.

After the sweep, with the same hub, broker and load generators (lab/bench_ingest.py), and the
background load going on at ``--burst-rate`` records/s over all sites:

- ``--burst-sites`` of the connected sites (their births name an underpass device beside the
  gauge, so the hub's underpass rules apply to them) each send one water-depth reading at or
  above the closing depth (hub/rules.py), at an offset from the burst's start: evenly spaced
  over ``--burst-s`` seconds, the sites in a seeded random order (``--burst-seed``). A site that
  crossed keeps sending its depth every :data:`REPEAT_S` seconds, as a flooded underpass does.
- A viewer, in its own process as an operator's browser would be, logs in over HTTPS and reads
  the console's live stream (``GET /api/events``), stamping each ``alarm`` ``activate`` event of
  the closing-depth rule as it arrives; the same viewer polls the alarm list
  (``GET /api/alarms?limit=2000``, what the console fetches) one request at a time,
  :data:`POLL_GAP_S` apart (the console's refresh debounce), and times each request.
- The city centre is the reference receiver (``jikimi receiver``, hub/receiver.py) in its own
  process, validating the CAP schema and verifying each alert's signature; the hub forwards
  every alarm to it. Its acknowledgement of *that* alarm's CAP alert (the forwarding outbox's
  message keyed by the alarm's id and its ``activate``) is read from the hub's database, where
  the hub records the time the acknowledgement came back.

Times are wall-clock on one machine, measured from the reading's own sample time: the load
generator stamps the reading just before it encodes and publishes it (``publish_delay`` reports
how long the publish call then took). Every burst site is accounted for: a crossing not sent, an
alarm not in the stream, an alarm not raised, or an alert not acknowledged within
``--burst-drain`` seconds after the burst is listed by site, and weighs on the percentiles as a
lower bound (the wait until the bench gave up), never left out of them.

Where the time goes: ``stages_ms`` splits each crossing at the hub (the ingest observer's
stamps): reading → the hub's MQTT client reading it off the socket → the writer's commit → the
live stream / the CAP acknowledgement; ``writer_queue`` samples the single writer's queue, which
ingest batches and every other part's writes (the forwarder's included) share. ``cores_used``
and ``busiest_other_processes`` say who else had the machine's two cores meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import random
import secrets
import sqlite3
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Final

from hub.rules import RuleKind, RuleParams, rules_for
from shared.errors import JikimiError

DEFAULT_SITES: Final = 1000
BURST_KIND: Final = "underpass"
BURST_DEVICE: Final = "underpass-1"
DEPTH_POINT: Final = "water_depth_cm"
RECIPIENT: Final = "city-centre"
VIEWER: Final = "burst-viewer"
REPEAT_S: Final = 30.0
"""A crossed site sends its depth again this often (the water stays up; the point never goes stale)."""
RISE_ABOVE_CM: Final = 3.0
"""The crossing reading's depth above the closing depth."""
POLL_GAP_S: Final = 0.12
"""Between two alarm-list requests of the viewer: the console's refresh debounce (hub/web/app.js)."""
TARGETS_MS: Final = {"reading_to_alarm_p99_ms": 2000.0, "reading_to_cap_ack_p99_ms": 5000.0,
                     "api_alarms_p99_ms": 500.0}
"""The Done targets of issue 17, reported next to the figures (never asserted)."""


class BurstError(JikimiError):
    """The burst could not run."""


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank below), rounded to 0.01; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


def cpu_seconds(*pids: int | None) -> list[float]:
    """CPU seconds (user + system) each process has used so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all cores, not idle or iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def every_process_cpu() -> dict[int, tuple[str, float]]:
    """Every process on the machine: pid → (its command line, shortened; CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
            fields = tail.split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        cmd = cmd or f"[{head.split('(', 1)[-1]}]"  # a kernel thread: its name
        out[int(entry.name)] = (cmd[:100], cpu)
    return out


def busiest_others(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int],
                   span_s: float, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` processes not of this run that used the most CPU between two snapshots (cores)."""
    used = [(after[pid][1] - before.get(pid, ("", 0.0))[1], after[pid][0]) for pid in after if pid not in ours]
    used.sort(reverse=True)
    return [{"cores": round(cpu / span_s, 2), "command": cmd} for cpu, cmd in used[:n] if cpu > 0]


def closing_rule() -> tuple[str, float]:
    """The hub's threshold rule on an underpass's depth (hub/rules.py): its name and limit."""
    for rule in rules_for(BURST_KIND, RuleParams())[DEPTH_POINT]:
        if rule.kind is RuleKind.THRESHOLD and not rule.below:
            return rule.name, rule.limit
    raise BurstError(f"hub/rules.py has no threshold rule on {BURST_KIND} {DEPTH_POINT}")


def schedule(sites: Sequence[str], seconds: float, seed: int) -> dict[str, float]:
    """Each site's crossing offset from the burst's start (pure): evenly spaced over ``seconds``,
    the sites in a random order drawn from ``seed``."""
    order = list(sites)
    random.Random(seed).shuffle(order)  # noqa: S311 - an order, not a secret
    return {site: i * seconds / len(order) for i, site in enumerate(order)}


@dataclass(frozen=True)
class BurstPlan:
    sites: int
    seconds: float = 60.0
    background_rate: float = 10_000.0
    seed: int = 1
    drain_s: float = 60.0

    def check(self, connected_sites: int) -> None:
        if self.sites > connected_sites:
            raise BurstError(f"--burst-sites ({self.sites}) is more than --sites ({connected_sites})")
        if self.sites < 0 or self.seconds <= 0 or self.background_rate < 0 or self.drain_s <= 0:
            raise BurstError("--burst-sites, --burst-rate must not be negative; --burst-s and --burst-drain "
                             "must be positive")


@dataclass(frozen=True)
class BurstControl:
    """Shared with the load generators: when the burst starts (wall time; 0 before it, -1 once
    it is over and crossed sites stop repeating) and where each site says it crossed."""

    burst_at: Synchronized[float]
    crossings: multiprocessing.queues.Queue[tuple[str, float, float]]
    """(site, the reading's sample time, when its publish returned)."""


# --- the city centre: the reference receiver in its own process --------------------------------


@contextlib.asynccontextmanager
async def receiver_process(ca_bundle: Path, workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """``jikimi receiver`` verifying signatures against ``ca_bundle``; yields its URL and pid."""
    log = workdir / "receiver.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "receiver", "--listen", "tcp://127.0.0.1:0",
            "--db", str(workdir / "centre.db"), "--ca-bundle", str(ca_bundle),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict) and entry.get("event") == "receiver.listening":
                        url = str(entry["url"])
            if url is None:
                if proc.returncode is not None or time.monotonic() > deadline:
                    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                    raise BurstError(f"the receiver did not start: {tail}")
                await asyncio.sleep(0.1)
        yield url, proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- the viewer: an operator's browser, in its own process -------------------------------------

ViewerNote = tuple[Any, ...]
"""What the viewer tells the bench: ``("ready",)``, ``("alarm", site, id, t)``, ``("listed", sites, t)``,
``("resync", t)``, ``("ended", t)``, ``("error", text)`` and at last ``("polls", [(t, ms, status)])``."""


def viewer_main(base_url: str, ca: str, password: str, rule: str, out: multiprocessing.queues.Queue[ViewerNote],
                stop: multiprocessing.synchronize.Event) -> None:
    """The viewer process (a spawn target)."""
    try:
        asyncio.run(_viewer(base_url, ca, password, rule, out, stop))
    except Exception as exc:  # the process's last word goes to the bench, which reports it
        out.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def _viewer(base_url: str, ca: str, password: str, rule: str, out: multiprocessing.queues.Queue[ViewerNote],
                  stop: multiprocessing.synchronize.Event) -> None:
    import aiohttp

    ctx = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession(base_url=base_url, connector=aiohttp.TCPConnector(ssl=ctx),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post("/api/session", json={"username": VIEWER, "password": password}) as r:
            r.raise_for_status()
        polls: list[tuple[float, float, int]] = []

        async def stream() -> None:
            async with session.get("/api/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
                resp.raise_for_status()
                kind = ""
                async for raw in resp.content:
                    now = time.time()
                    line = raw.decode().rstrip("\n")
                    if line.startswith(": connected"):
                        out.put(("ready",))
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                        if kind in ("resync", "session_ended"):
                            out.put(("resync" if kind == "resync" else "ended", now))
                    elif line.startswith("data:") and kind == "alarm":
                        body = json.loads(line[5:])
                        if body.get("rule") == rule and body.get("event") == "activate":
                            out.put(("alarm", str(body["site"]), int(body["id"]), now))

        async def poll() -> None:
            listed: set[str] = set()
            while True:
                t0, p0 = time.time(), time.perf_counter()
                try:
                    async with session.get("/api/alarms", params={"limit": "2000"}) as r:
                        body = await r.read()
                        status = r.status
                except aiohttp.ClientError:
                    status, body = 0, b""
                polls.append((t0, (time.perf_counter() - p0) * 1000, status))
                if status == 200:
                    new = [a["site"] for a in json.loads(body) if a.get("rule") == rule and a["site"] not in listed]
                    if new:
                        listed.update(new)
                        out.put(("listed", new, time.time()))
                await asyncio.sleep(POLL_GAP_S)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(stream(), name="viewer.stream"), tg.create_task(poll(), name="viewer.poll")]
            while not stop.is_set():  # noqa: ASYNC110 - set by another process
                await asyncio.sleep(0.1)
            for t in tasks:
                t.cancel()
        out.put(("polls", polls))


# --- the burst -------------------------------------------------------------------------------


def _acks(db: Path, rule: str, since: float) -> tuple[dict[str, int], dict[str, float]]:
    """From the hub's database: each site's alarm of ``rule`` (site → id), and the city centre's
    acknowledgement of each alarm's ``activate`` alert created after ``since`` (site → acked_at)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        alarms = {str(s): int(i) for s, i in conn.execute("SELECT site, id FROM alarms WHERE rule = ?", (rule,))}
        by_id = {i: s for s, i in alarms.items()}
        acked: dict[str, float] = {}
        for key, at in conn.execute(
                "SELECT m.notice_key, d.acked_at FROM fwd_messages m JOIN fwd_deliveries d"
                " ON d.identifier = m.identifier WHERE m.created_at >= ? AND d.recipient = ?"
                " AND d.acked_at IS NOT NULL AND m.notice_key LIKE 'alarm:%:activate:%'", (since, RECIPIENT)):
            site = by_id.get(int(str(key).split(":")[1]))
            if site is not None:
                acked[site] = min(float(at), acked.get(site, float("inf")))
        return alarms, acked
    finally:
        conn.close()


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": round(max(values), 2) if values else None,
            "n": len(values)}


def waits(sites: Sequence[str], sent_at: dict[str, float], arrived_at: dict[str, float],
          until: float) -> dict[str, Any]:
    """Pure: ms from each site's reading (``sent_at``) to its arrival, summarised. A site whose
    reading went out but whose arrival never came by ``until`` counts as ``until`` − its reading,
    a lower bound, so it weighs on the percentiles instead of vanishing from them: then
    ``lower_bound`` is true and ``missing`` says how many."""
    ms = [(arrived_at.get(s, until) - sent_at[s]) * 1000 for s in sites if s in sent_at]
    missing = sum(1 for s in sites if s in sent_at and s not in arrived_at)
    return {**_summary(ms), "missing": missing, "lower_bound": missing > 0}


@dataclass
class Probes:
    """What the burst runs beside the hub, and how its CPU use is read."""

    api_port: int
    ca: Path
    db: Path
    rate: Synchronized[float]
    sent: Synchronized[int]
    ctl: BurstControl
    cpu: Callable[[], dict[str, float]]
    """CPU seconds so far of the hub, the broker, the generators and the receiver (by name)."""
    pids: set[int]
    """The processes of this run (the viewer's is added)."""
    add_viewer: Callable[[str], None]
    """Make the viewer's account (role viewer) with this password."""
    writer_queue: Callable[[], int]
    """Items waiting for the hub's single writer (ingest batches and every other part's calls)."""
    at_hub: dict[str, tuple[float, float]]
    """Filled by the hub's ingest observer: each burst site's crossing, when the hub's MQTT client
    read it off the socket and when the writer committed it."""


async def run_burst(plan: BurstPlan, sites: Sequence[str], probes: Probes) -> dict[str, Any]:
    """Run the burst against a running hub whose generators hold ``sites``' connections."""
    rule, closing_cm = closing_rule()
    burst_sites = list(sites[:plan.sites])
    password = secrets.token_urlsafe(16)
    await asyncio.to_thread(probes.add_viewer, password)
    ctx = multiprocessing.get_context("spawn")
    notes: multiprocessing.queues.Queue[ViewerNote] = ctx.Queue()
    stop = ctx.Event()
    viewer = ctx.Process(target=viewer_main, name="bench-viewer", args=(
        f"https://localhost:{probes.api_port}", str(probes.ca), password, rule, notes, stop))
    viewer.start()
    alarm_at: dict[str, float] = {}
    listed_at: dict[str, float] = {}
    resyncs: list[float] = []
    polls: list[tuple[float, float, int]] = []
    crossed: dict[str, tuple[float, float]] = {}
    problems: list[str] = []

    def take_notes() -> None:
        while True:
            try:
                note = notes.get_nowait()
            except queue.Empty:
                return
            match note:
                case ("alarm", site, _id, t):
                    alarm_at.setdefault(site, t)
                case ("listed", new, t):
                    for site in new:
                        listed_at.setdefault(site, t)
                case ("resync", t):
                    resyncs.append(t)
                case ("ended", _t):
                    problems.append("the viewer's session ended during the burst")
                case ("error", text):
                    problems.append(f"viewer: {text}")
                case ("polls", got):
                    polls.extend(got)
                case _:
                    pass

    def take_crossings() -> None:
        while True:
            try:
                site, ts, published = probes.ctl.crossings.get_nowait()
            except queue.Empty:
                return
            crossed[site] = (ts, published)

    try:
        deadline = time.monotonic() + 60
        while True:  # the viewer logged in and its live stream is open
            try:
                note = await asyncio.to_thread(notes.get, timeout=1.0)
            except queue.Empty:
                note = None
            if note == ("ready",):
                break
            if (note is not None and note[0] == "error") or time.monotonic() > deadline or not viewer.is_alive():
                raise BurstError(f"the viewer did not start: {note[1] if note else 'no live stream in 60 s'}")
        probes.rate.value = plan.background_rate
        await asyncio.sleep(2.0)  # the background load is on before the first crossing
        w0 = time.time()
        start = w0 + 1.0
        cpu0, busy0, s0 = {**probes.cpu(), "viewer": cpu_seconds(viewer.pid)[0]}, machine_busy_seconds(), \
            probes.sent.value
        every0 = every_process_cpu()
        probes.ctl.burst_at.value = start
        end = start + plan.seconds
        acked: dict[str, float] = {}
        alarms: dict[str, int] = {}
        give_up = end + plan.drain_s
        depths: list[int] = []
        while time.time() < give_up:
            await asyncio.sleep(1.0)
            depths.append(probes.writer_queue())
            take_notes()
            take_crossings()
            if time.time() < end:
                continue
            alarms, acked = await asyncio.to_thread(_acks, probes.db, rule, start - 1.0)
            if all(s in alarm_at and s in acked for s in burst_sites):
                break
        t1 = time.time()
        cpu1, busy1, s1 = {**probes.cpu(), "viewer": cpu_seconds(viewer.pid)[0]}, machine_busy_seconds(), \
            probes.sent.value
        every1 = every_process_cpu()
        load = [round(x, 2) for x in os.getloadavg()]
        probes.ctl.burst_at.value = -1.0  # crossed sites stop repeating
        probes.rate.value = 0.0
    finally:
        stop.set()
        await asyncio.to_thread(viewer.join, 30)
        take_notes()
        take_crossings()
        if viewer.is_alive():
            viewer.terminate()
    alarms, acked = await asyncio.to_thread(_acks, probes.db, rule, start - 1.0)
    span = t1 - w0
    cores = {k: round((cpu1[k] - cpu0.get(k, 0.0)) / span, 2) for k in cpu1}
    cores["machine"] = round((busy1 - busy0) / span, 2)
    cores["others"] = round(cores["machine"] - sum(v for k, v in cores.items() if k != "machine"), 2)
    sample_ts = {site: ts for site, (ts, _published) in crossed.items()}
    to_alarm = waits(burst_sites, sample_ts, alarm_at, t1)
    to_ack = waits(burst_sites, sample_ts, acked, t1)
    received = {site: r for site, (r, _c) in probes.at_hub.items()}
    committed = {site: c for site, (_r, c) in probes.at_hub.items()}
    stages = {  # where the time went, stage by stage (sites missing a stage count as lower bounds)
        "reading_to_hub_receive": waits(burst_sites, sample_ts, received, t1),
        "hub_receive_to_commit": waits(burst_sites, received, committed, t1),
        "commit_to_stream": waits(burst_sites, committed, alarm_at, t1),
        "commit_to_cap_ack": waits(burst_sites, committed, acked, t1),
    }
    publish = [(p - ts) * 1000 for ts, p in crossed.values()]
    during = [ms for t, ms, status in polls if start <= t <= end and status == 200]
    failed = [status for t, _ms, status in polls if start <= t <= end and status != 200]
    not_in_stream = [s for s in burst_sites if s not in alarm_at]
    out: dict[str, Any] = {
        "sites": len(burst_sites),
        "seconds": plan.seconds,
        "seed": plan.seed,
        "spread": "evenly spaced over the burst, sites in a seeded random order",
        "closing_depth_cm": closing_cm,
        "crossing_depth_cm": closing_cm + RISE_ABOVE_CM,
        "rule": rule,
        "measured_from": "the reading's sample time, stamped by the load generator just before it publishes",
        "background_records_per_s": plan.background_rate,
        "generated_records_per_s": round((s1 - s0) / span, 1),
        "crossings_sent": len(crossed),
        "crossings_not_sent": [s for s in burst_sites if s not in crossed],
        "publish_delay_ms": _summary(publish),
        "alarms_in_stream": len(burst_sites) - len(not_in_stream),
        "alarms_missing_from_stream": not_in_stream,
        "of_which_in_alarm_list": [s for s in not_in_stream if s in listed_at],
        "alarms_raised": sum(1 for s in burst_sites if s in alarms),
        "alarms_not_raised": [s for s in burst_sites if s not in alarms],
        "cap_acked": sum(1 for s in burst_sites if s in acked),
        "cap_not_acked": [s for s in burst_sites if s not in acked],
        "resyncs": len(resyncs),
        "reading_to_alarm_ms": to_alarm,
        "reading_to_alarm_p50_ms": to_alarm["p50"],
        "reading_to_alarm_p99_ms": to_alarm["p99"],
        "reading_to_cap_ack_ms": to_ack,
        "reading_to_cap_ack_p50_ms": to_ack["p50"],
        "reading_to_cap_ack_p99_ms": to_ack["p99"],
        "stages_ms": stages,
        "api_alarms_ms": _summary(during),
        "api_alarms_p50_ms": pct(during, 50),
        "api_alarms_p99_ms": pct(during, 99),
        "api_alarms_polls": len(during) + len(failed),
        "api_alarms_failed": len(failed),
        "api_poll": f"GET /api/alarms?limit=2000 by one viewer, one request at a time, {POLL_GAP_S} s apart",
        "targets": TARGETS_MS,
        "problems": problems,
        "window_s": round(span, 1),
        "writer_queue": {"p50": pct(depths, 50), "max": max(depths, default=0), "samples": len(depths)},
        "load_average": load,
        "cores_used": cores,
        "busiest_other_processes": busiest_others(every0, every1, {*probes.pids, viewer.pid or 0}, span),
    }
    return out
