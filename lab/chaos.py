"""``jikimi chaos``: a real multi-process deployment on this machine, a seeded schedule of faults,
and a count of what was lost.

What runs, each part a separate process started the way systemd would start it: Mosquitto with
mutual TLS (a dev PKI like the demo's), ``jikimi hub run --config``, and per site ``jikimi sim
run --listen ... --control ...`` (an underpass barrier on Modbus TCP) beside ``jikimi edge run
--config``. Each edge reaches the broker through a TCP proxy of this process's own, so a
partition cuts exactly one edge off.

The faults (``KINDS``), drawn from ``random.Random(seed)``, one at a time: first every kind
asked for once (in a shuffled order, however long that takes), then random ones until the time
is up:

- ``broker_kill`` / ``broker_kill_volatile``: SIGKILL Mosquitto, start it again with its
  persistence, or without it (its saved state deleted);
- ``hub_kill``: SIGKILL the hub and start it again;
- ``edge_kill``: SIGKILL one edge agent and start it again;
- ``partition``: the edge's proxy resets every connection and refuses new ones, or holds them
  (a black hole: bytes wait as TCP would retransmit them), for 5–12 s;
- ``box_replaced``: SIGKILL the edge, delete its state directory, start it again;
- ``outbox_torn``: SIGKILL the edge, cut its outbox's write-ahead log at a random byte (a write
  torn by a power cut: SQLite falls back to an older state), start it again;
- ``outbox_garbage``: SIGKILL the edge, overwrite part of its outbox with random bytes;
- ``edge_kill_flooding``: raise the water above the closing depth and SIGKILL the edge a moment
  later (before or while it closes the barrier), start it again.

Meanwhile every site floods now and then (the water set over the simulator's control API above
the closing depth, then lowered; the barrier is opened again from its cabinet panel, which is not
a bus write).

What is counted, per site and outbox epoch, at the end (after a drain):

- *produced*: the highest seq the edge's outbox ever held for the epoch (sampled from the file
  every half second and at every kill), and the content of every record seen there;
- *committed*: the hub's ``records`` rows of (site, epoch);
- *lost*: a produced seq the hub never committed and that is neither still in the outbox
  (pending) nor moved to a later epoch (the same record, by content, committed there), nor was
  destroyed with the storage by the fault itself (a wiped box, garbage, a torn tail: what only
  that file held is reported as ``destroyed_with_storage``); also a record seen in an outbox
  whose seq the hub holds with other content (a reused seq) and whose content is nowhere at
  the hub;
- *committed twice*: the same record (by content) committed more than once
  (``committed_twice_across_epochs``: of those, the copies in another epoch: records an outbox
  carried into a new epoch although the hub already held them);
- *double actuations*: more than one ``close`` written at the device during one flood, counted
  by the simulator (never by the agent); any other write at the device is *unexpected*;
- *barriers*: every flood must end with the barrier closed (its limit switch);
- *recovery*: from the end of a fault (the part started again, the partition healed) to the
  first record acquired after it committed at the hub, for every site it touched;
- *crashes*: every exit of an edge or the hub that no fault asked for (``edge_exits`` per site,
  ``hub_exits``), with its exit code and the last lines of its log; the part is started again
  a second later, as its unit would be.

Any invariant failing makes the exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec

from edge.outbox import Row, decode_row
from lab.demo import HUB, fresh_pki
from shared import logs
from shared.errors import JikimiError
from shared.messages import Event, Reading, Record
from shared.paths import profiles_dir
from trust.broker import free_port, mosquitto_binary, write_config
from trust.pki import Pki

KINDS: Final = ("broker_kill", "broker_kill_volatile", "hub_kill", "edge_kill", "partition", "box_replaced",
                "outbox_torn", "outbox_garbage", "edge_kill_flooding")
EDGE_KINDS: Final = frozenset({"edge_kill", "partition", "box_replaced", "outbox_torn", "outbox_garbage",
                               "edge_kill_flooding"})
PROFILE: Final = "underpass-jk-up300.toml"
CLOSING_CM: Final = 15.0
TRAVEL_S: Final = 3.0
RECOVERY_TIMEOUT_S: Final = 60.0
REPO: Final = Path(__file__).resolve().parents[1]

class ChaosError(JikimiError):
    """The deployment could not be brought up (or back up) at all."""


Key = tuple[str, float, str, str]
"""A record's identity across epochs: (type, acquisition ts, device, point / event kind / cmd_id:status)."""


def record_key(rec: Record) -> Key:
    if isinstance(rec, Reading):
        return ("reading", round(rec.ts, 6), rec.device, rec.point)
    if isinstance(rec, Event):
        return ("event", round(rec.ts, 6), rec.device or "", rec.kind)
    return ("reply", round(rec.ts, 6), "", f"{rec.cmd_id}:{rec.status.value}")


def hub_key(type_: str, ts: float, device: str | None, point: str | None, body: str | None) -> Key:
    if type_ == "reading":
        return ("reading", round(ts, 6), device or "", point or "")
    doc = json.loads(body or "{}")
    if type_ == "event":
        return ("event", round(ts, 6), device or "", str(doc.get("kind", "")))
    return ("reply", round(ts, 6), "", f"{doc.get('cmd_id', '')}:{doc.get('status', '')}")


# --- processes ---------------------------------------------------------------------------------


EXIT_TAIL_LINES: Final = 40


class Part:
    """One process of the deployment, started again after a kill like systemd's Restart=always
    would; an exit nobody asked for is counted."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.unexpected_exits = 0
        self.exits: list[dict[str, Any]] = []
        """Each exit nobody asked for: when, the exit code, and the log's last lines before it."""
        self._expect_exit = False

    async def start(self) -> None:
        # Until the new process exists, the old one's exit is expected: a supervisor looking
        # while fork and exec take their time must not restart it a second time.
        self._expect_exit = True
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self._expect_exit = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        self._expect_exit = True
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``)."""
        self._expect_exit = True
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def supervise(self) -> None:
        """Restart after an exit nobody asked for (1 s later, as the units do)."""
        while True:
            await asyncio.sleep(0.5)
            dead = self.proc
            if dead is not None and dead.returncode is not None and not self._expect_exit:
                self.unexpected_exits += 1
                self.exits.append({"at": time.time(), "code": dead.returncode,
                                   "log_tail": await asyncio.to_thread(logs.tail, self.log, EXIT_TAIL_LINES)})
                await asyncio.sleep(1.0)
                if self.proc is dead and not self._expect_exit:  # nobody started or stopped it meanwhile
                    await self.start()


class Proxy:
    """A TCP proxy between one edge and the broker that can be cut: ``drop`` resets every
    connection and refuses new ones; ``hold`` relays nothing until healed (a black hole)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "up"
        self.port = 0
        self._healed = asyncio.Event()
        self._healed.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    def cut(self, how: str) -> None:
        self.mode = how
        self._healed.clear()
        if how == "drop":
            for w in list(self._writers):
                w.transport.abort()

    def heal(self) -> None:
        self.mode = "up"
        self._healed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._healed.wait()
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.add(up_w)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pump(reader, up_w), name="proxy.up")
                    tg.create_task(self._pump(up_r, writer), name="proxy.down")
            except* (ConnectionError, OSError):
                pass
            finally:
                self._writers.discard(up_w)
                up_w.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            await self._healed.wait()
            data = await src.read(65536)
            if not data:
                dst.transport.abort()
                raise ConnectionResetError("closed")
            await self._healed.wait()
            dst.write(data)
            await dst.drain()


# --- what the outboxes held ------------------------------------------------------------------


@dataclass
class Snapshot:
    epoch: int
    next_seq: int
    rows: dict[int, Key]


def read_outbox(conn: sqlite3.Connection, after: dict[int, int] | None = None) -> Snapshot:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    epoch, next_seq = int(meta.get("epoch", 0)), int(meta["next_seq"])
    low = (after or {}).get(epoch, 0)
    rows: dict[int, Key] = {}
    for seq, prio, ts, payload in conn.execute("SELECT seq, prio, ts, payload FROM records WHERE seq > ?", (low,)):
        with contextlib.suppress(msgspec.DecodeError):
            rows[int(seq)] = record_key(decode_row(Row(int(seq), int(prio), float(ts), bytes(payload))))
    return Snapshot(epoch, next_seq, rows)


def sample_live(path: Path, after: dict[int, int]) -> Snapshot | None:
    """What a running agent's outbox holds now (read-only; the agent keeps writing)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        return read_outbox(conn, after)
    except (sqlite3.Error, KeyError):
        return None
    finally:
        conn.close()


def snapshot_dead(path: Path) -> Snapshot | None:
    """What a stopped agent will find in its outbox at its next start: a copy opened (and
    recovered) the way SQLite will open the file itself; None if it cannot be read at all."""
    if not path.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "outbox.db"
        for suffix in ("", "-wal"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                shutil.copyfile(src, f"{copy}{suffix}")
        try:
            conn = sqlite3.connect(copy)
            try:
                return read_outbox(conn)
            finally:
                conn.close()
        except (sqlite3.Error, KeyError, ValueError):
            return None


@dataclass
class SiteBook:
    """Everything seen of one site's outboxes."""

    produced: dict[int, int] = field(default_factory=dict)
    """epoch -> highest seq seen."""
    contents: dict[tuple[int, int], set[Key]] = field(default_factory=dict)
    cursor: dict[int, int] = field(default_factory=dict)
    destroyed: set[tuple[int, int]] = field(default_factory=set)
    """(epoch, seq) whose only copy a fault destroyed (with their contents, if known)."""
    destroyed_keys: set[Key] = field(default_factory=set)
    final: Snapshot | None = None
    current: int | None = None
    """The epoch of the last look at the outbox."""

    def note(self, snap: Snapshot) -> None:
        self.current = snap.epoch
        top = max([snap.next_seq - 1, *snap.rows])
        self.produced[snap.epoch] = max(self.produced.get(snap.epoch, 0), top)
        for seq, key in snap.rows.items():
            self.contents.setdefault((snap.epoch, seq), set()).add(key)
        if snap.rows:
            self.cursor[snap.epoch] = max(self.cursor.get(snap.epoch, 0), max(snap.rows))

    def destroy(self, before: Snapshot | None, after: Snapshot | None) -> int:
        """Records ``before`` held that ``after`` (the file the agent will start from) lacks."""
        if before is None:
            return 0
        keep = after.rows if after is not None and after.epoch == before.epoch else {}
        gone = [seq for seq in before.rows if seq not in keep]
        for seq in gone:
            self.destroyed.add((before.epoch, seq))
            self.destroyed_keys.add(before.rows[seq])
        if after is not None and after.epoch == before.epoch:
            # the agent restarts below seqs it already used: read them again as they are reused
            self.cursor[before.epoch] = min(self.cursor.get(before.epoch, 0), after.next_seq - 1)
        return len(gone)


# --- the deployment ---------------------------------------------------------------------------


@dataclass
class Site:
    id: str
    dir: Path
    sim: Part
    edge: Part
    proxy: Proxy
    modbus_port: int
    control_url: str
    book: SiteBook = field(default_factory=SiteBook)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a flood at the site."""
    files: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the outbox file is read by the sampler or broken by a fault."""

    @property
    def outbox(self) -> Path:
        return self.dir / "state" / "outbox.db"


@dataclass
class Flood:
    site: str
    started: float
    closes_before: int
    closes_after: int = -1
    closed: bool = False
    during_fault: str = ""


@dataclass
class Fault:
    kind: str
    sites: list[str]
    started: float
    ended: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def _site_toml(site: Site, pki: Pki, port: int) -> str:
    return f"""[site]
id = "{site.id}"
name = "chaos {site.id}"
state_dir = "{site.dir / 'state'}"

[hub]
host = "localhost"
port = {port}
ca = "{pki.ca_chain}"
cert = "{pki.cert(site.id)}"
key = "{pki.key(site.id)}"
command_key = "{pki.command_pub}"

[policy]
verify_timeout_s = 20.0

[devices.barrier]
profile = "{profiles_dir() / PROFILE}"
transport = "tcp://127.0.0.1:{site.modbus_port}"
"""


def _hub_toml(root: Path, pki: Pki, broker_port: int, sites: Iterable[str]) -> str:
    lines = [
        "[hub]", f'id = "{HUB}"', "",
        "[broker]", 'host = "localhost"', f"port = {broker_port}", f'ca = "{pki.ca_chain}"',
        f'cert = "{pki.cert(HUB)}"', f'key = "{pki.key(HUB)}"', "",
        "[database]", f'path = "{root / "hub" / "hub.db"}"', "",
        "[commands]", f'signing_key = "{pki.command_key}"', "",
        "[api]", 'listen = "127.0.0.1:0"', "",
        "[sites]", "accept_any = false", "",
    ]
    for i, s in enumerate(sites):
        lines += [f'[sites.registry."{s}"]', 'area = "gg-chaos"', f'name = "chaos {s}"',
                  f"lat = {37.25 + i * 0.01:.4f}", "lon = 127.01", ""]
    return "\n".join(lines)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shared.cli", *args]


class Chaos:
    def __init__(self, root: Path, *, seconds: float, seed: int, edges: int, kinds: tuple[str, ...],
                 quiet: bool = False) -> None:
        self.root = root
        self.seconds = seconds
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not cryptography
        self.wx = random.Random(seed + 1)  # noqa: S311 - the floods' own, so the faults' draws stay the seed's
        self.seed = seed
        self.n_edges = edges
        self.kinds = kinds
        self.quiet = quiet
        self.t0 = time.time()
        self.sites: dict[str, Site] = {}
        self.floods: list[Flood] = []
        self.faults: list[Fault] = []
        self.timeline: list[dict[str, Any]] = []
        self.fault_now = ""
        self.fault_sites: list[str] = []
        self.dry = False
        self.http: aiohttp.ClientSession | None = None

    def say(self, what: str, **data: Any) -> None:
        t = round(time.time() - self.t0, 1)
        self.timeline.append({"t_s": t, "what": what, **data})
        if not self.quiet:
            print(f"[{t:7.1f}s] {what}", flush=True)

    # --- set-up ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        root = self.root
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        ids = [f"gg-chaos-up-{i + 1:04d}" for i in range(self.n_edges)]
        self.pki = await asyncio.to_thread(fresh_pki, root, ids)
        self.broker_dir = root / "broker"
        self.broker_port = free_port()
        self.broker = Part("broker", [], root / "broker.log")
        await self._broker_start(persistence=True)
        (root / "hub").mkdir()
        hub_toml = root / "hub" / "hub.toml"
        hub_toml.write_text(_hub_toml(root, self.pki, self.broker_port, ids))
        self.hub = Part("hub", _cli("hub", "run", "--config", str(hub_toml)), root / "hub" / "hub.log")
        await self.hub.start()
        for sid in ids:
            d = root / "edges" / sid
            d.mkdir(parents=True)
            mb, cp = free_port(), free_port()
            sim = Part(f"sim:{sid}", _cli("sim", "run", "--profile", str(profiles_dir() / PROFILE), "--listen",
                                          f"tcp://127.0.0.1:{mb}", "--control", f"127.0.0.1:{cp}"), d / "sim.log")
            proxy = Proxy(self.broker_port)
            await proxy.start()
            site = Site(sid, d, sim, Part(f"edge:{sid}", _cli("edge", "run", "--config", str(d / "site.toml")),
                                          d / "edge.log"), proxy, mb, f"http://127.0.0.1:{cp}")
            (d / "site.toml").write_text(_site_toml(site, self.pki, proxy.port))
            self.sites[sid] = site
            await sim.start()
        for site in self.sites.values():
            await self._until(functools.partial(self._control_up, site), 30.0,
                              f"{site.id}: the simulator's control API")
            await self._post(site, "/travel", {"seconds": TRAVEL_S})
            await site.edge.start()
        self.say(f"up: broker, hub, {len(self.sites)} edges each beside its simulator")

    async def _broker_start(self, *, persistence: bool) -> None:
        cfg = await asyncio.to_thread(write_config, self.pki.dir, self.broker_dir, port=self.broker_port,
                                      persistence=persistence)
        if not persistence:
            with contextlib.suppress(FileNotFoundError):
                (self.broker_dir / "data" / "mosquitto.db").unlink()
        self.broker.argv = [mosquitto_binary(), "-c", str(cfg.conf)]
        await self.broker.start()
        await self._until(self._broker_listening, 15.0, "mosquitto listening")

    async def _broker_listening(self) -> bool:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            return False
        w.close()
        return True

    async def _control_up(self, site: Site) -> bool:
        try:
            await self._state(site)
        except (aiohttp.ClientError, OSError):
            return False
        return True

    async def _until(self, cond: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not await cond():
            if time.monotonic() > deadline:
                raise ChaosError(f"chaos: gave up waiting for {what} after {timeout_s:g} s (logs under {self.root})")
            await asyncio.sleep(0.1)

    # --- the simulators -------------------------------------------------------------------------

    async def _state(self, site: Site) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{site.control_url}/state") as resp:
            resp.raise_for_status()
            body: dict[str, Any] = (await resp.json())["devices"][0]
            return body

    async def _post(self, site: Site, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(f"{site.control_url}{path}", json=body) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = await resp.json()
            return answer

    @staticmethod
    def _writes(dev: dict[str, Any], value: str) -> int:
        return int(dev["writes_by_value"].get("barrier_cmd", {}).get(value, 0))

    async def flood(self, site: Site, high_s: float, rng: random.Random, *,
                    then: Callable[[], Awaitable[None]] | None = None) -> None:
        """One flood: water above the closing depth for ``high_s``, the barrier checked closed at the
        end, then the water lowered and the barrier opened from its panel."""
        dev = await self._post(site, "/water", {"depth_cm": rng.uniform(CLOSING_CM + 5, CLOSING_CM + 25)})
        fl = Flood(site.id, time.time(), self._writes(dev, "close"),
                   during_fault=self.fault_now if site.id in self.fault_sites else "")
        self.floods.append(fl)
        if then is not None:
            await then()
        await asyncio.sleep(max(0.0, fl.started + high_s - time.time()))
        dev = await self._state(site)
        fl.closed = bool(dev["barrier"]["limit_closed"])
        await self._post(site, "/water", {"depth_cm": 2.0})
        await asyncio.sleep(2.0)  # below the closing depth for a few polls before opening again
        dev = await self._post(site, "/barrier", {"action": "open"})
        fl.closes_after = self._writes(dev, "close")
        await asyncio.sleep(TRAVEL_S + 0.5)
        if not fl.closed:
            self.say(f"{site.id}: FLOOD ENDED WITH THE BARRIER NOT CLOSED")

    async def weather(self) -> None:
        """Floods at random sites, now and then, until ``dry``."""
        while not self.dry:
            await asyncio.sleep(self.wx.uniform(4.0, 12.0))
            site = self.wx.choice(list(self.sites.values()))
            if self.dry:
                return
            if site.lock.locked():
                continue
            async with site.lock:
                self.say(f"{site.id}: flood")
                await self.flood(site, self.wx.uniform(10.0, 16.0), self.wx)

    # --- sampling -------------------------------------------------------------------------------

    async def sampler(self) -> None:
        while True:
            for site in self.sites.values():
                async with site.files:
                    if site.edge.running:
                        snap = await asyncio.to_thread(sample_live, site.outbox, dict(site.book.cursor))
                        if snap is not None:
                            site.book.note(snap)
            await asyncio.sleep(0.5)

    # --- faults -------------------------------------------------------------------------------

    def schedule(self) -> list[str]:
        order = list(self.kinds)
        self.rng.shuffle(order)
        return order

    async def run_faults(self, until: float) -> None:
        plan = self.schedule()
        i = 0
        while i < len(plan) or time.time() < until:  # every kind once, whatever the time
            kind = plan[i] if i < len(plan) else self.rng.choice(self.kinds)
            i += 1
            fault = await self.inject(kind)
            self.faults.append(fault)
            await self.await_recovery(fault)
            self.fault_now = ""
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))

    async def inject(self, kind: str) -> Fault:
        rng = self.rng
        if kind in EDGE_KINDS:
            site = rng.choice(list(self.sites.values()))
            fault = Fault(kind, [site.id], time.time())
            self.fault_now, self.fault_sites = kind, fault.sites
            self.say(f"fault {kind}: {site.id}")
            if kind == "edge_kill_flooding":
                async with site.lock:
                    async def kill_soon() -> None:
                        await asyncio.sleep(rng.uniform(0.2, 1.5))
                        async with site.files:
                            await self._kill_edge(site)
                        await asyncio.sleep(rng.uniform(1.0, 3.0))
                        await site.edge.start()
                        fault.ended = time.time()

                    await self.flood(site, rng.uniform(12.0, 16.0), rng, then=kill_soon)
                return fault
            # a flood may be under way at the site: the fault does not wait for it
            if kind == "partition":
                how = rng.choice(("drop", "hold"))
                hold_s = rng.uniform(5.0, 12.0)
                fault.detail = {"how": how, "seconds": round(hold_s, 1)}
                site.proxy.cut(how)
                await asyncio.sleep(hold_s)
                site.proxy.heal()
            else:
                async with site.files:
                    await self._kill_edge(site)
                    before = await asyncio.to_thread(snapshot_dead, site.outbox)
                    fault.detail = await asyncio.to_thread(self._storage_fault, kind, site)
                    after = await asyncio.to_thread(snapshot_dead, site.outbox)
                    if kind != "edge_kill":
                        fault.detail["destroyed"] = site.book.destroy(before, after)
                    if after is not None:
                        site.book.note(after)
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                await site.edge.start()
            fault.ended = time.time()
            return fault
        fault = Fault(kind, list(self.sites), time.time())
        self.fault_now, self.fault_sites = kind, fault.sites
        self.say(f"fault {kind}")
        if kind.startswith("broker_kill"):
            await self.broker.kill()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            await self._broker_start(persistence=kind == "broker_kill")
        else:
            await self.hub.kill()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            await self.hub.start()
        fault.ended = time.time()
        return fault

    async def _kill_edge(self, site: Site) -> None:
        await site.edge.kill()
        snap = await asyncio.to_thread(snapshot_dead, site.outbox)
        if snap is not None:
            site.book.note(snap)

    def _storage_fault(self, kind: str, site: Site) -> dict[str, Any]:
        rng = self.rng
        path = site.outbox
        if kind == "box_replaced":
            shutil.rmtree(site.dir / "state", ignore_errors=True)
            return {}
        if kind == "outbox_torn":
            wal = Path(f"{path}-wal")
            size = wal.stat().st_size if wal.exists() else 0
            if size <= 32:
                return {"wal_bytes": size, "cut_at": None}
            cut = rng.randrange(32, size)
            with wal.open("r+b") as f:
                f.truncate(cut)
            Path(f"{path}-shm").unlink(missing_ok=True)  # as after a power cut: rebuilt from the log
            return {"wal_bytes": size, "cut_at": cut}
        if kind == "outbox_garbage":
            # random bytes over the file's header or over pages inside it, and over the log's
            # header (else the log's newer copies of those pages would hide the damage)
            size = path.stat().st_size if path.exists() else 0
            where = rng.choice(("header", "pages")) if size >= 8192 else "header"
            with path.open("r+b") as f:
                if where == "header":
                    f.seek(0)
                    f.write(rng.randbytes(4096))
                else:
                    for _ in range(3):
                        f.seek(rng.randrange(4096, size - 512))
                        f.write(rng.randbytes(512))
            wal = Path(f"{path}-wal")
            if wal.exists():
                with wal.open("r+b") as f:
                    f.write(rng.randbytes(32))
            Path(f"{path}-shm").unlink(missing_ok=True)
            return {"where": where, "bytes": size}
        return {}

    async def await_recovery(self, fault: Fault) -> None:
        deadline = time.time() + RECOVERY_TIMEOUT_S
        while time.time() < deadline:
            if not fault.ended:
                await asyncio.sleep(0.2)
                continue
            got = await asyncio.to_thread(self._fresh, fault.sites, fault.ended)
            if all(v is not None for v in got.values()):
                return
            await asyncio.sleep(0.25)
        self.say(f"fault {fault.kind}: NOT RECOVERED within {RECOVERY_TIMEOUT_S:g} s")

    def _hub_db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.root / 'hub' / 'hub.db'}?mode=ro", uri=True, timeout=5.0)

    def _fresh(self, sites: list[str], since: float) -> dict[str, float | None]:
        """Per site, when the hub committed its first record acquired at or after ``since``."""
        out: dict[str, float | None] = {}
        try:
            conn = self._hub_db()
        except sqlite3.Error:
            return dict.fromkeys(sites)
        try:
            for s in sites:
                row = conn.execute("SELECT min(received_at) FROM records WHERE site = ? AND ts >= ?",
                                   (s, since)).fetchone()
                out[s] = row[0] if row else None
        except sqlite3.Error:
            return dict.fromkeys(sites)
        finally:
            conn.close()
        return out

    # --- the run -------------------------------------------------------------------------------

    async def supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for part in (self.broker, self.hub, *(p for s in self.sites.values() for p in (s.sim, s.edge))):
                tg.create_task(part.supervise(), name=f"supervise:{part.name}")

    async def run(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as self.http:
            try:
                await self.setup()
                await asyncio.sleep(3.0)
                end = time.time() + self.seconds
                try:
                    await self._run_until(end)
                except* ChaosError as group:
                    raise group.exceptions[0] from None
                return await self.count()
            finally:
                await self.teardown()

    async def _run_until(self, end: float) -> None:
        """Faults and floods until ``end``, then the drain."""
        async with asyncio.TaskGroup() as tg:
            bg = [tg.create_task(self.sampler(), name="chaos.sampler"),
                  tg.create_task(self.weather(), name="chaos.weather"),
                  tg.create_task(self.supervise(), name="chaos.supervise")]
            await self.run_faults(end - 15.0)
            await asyncio.sleep(max(0.0, end - time.time()))
            self.say("stopping the floods; draining")
            self.dry = True
            await bg[1]  # a flood under way ends first
            await self.drain()
            bg[0].cancel()
            bg[2].cancel()

    async def drain(self) -> None:
        """Wait (up to a minute) until the hub committed everything each outbox's current epoch
        held, stop the edges, and read their outboxes one last time."""
        for site in self.sites.values():
            site.proxy.heal()
        deadline = time.time() + 60.0
        marks = {s.id: {s.book.current: s.book.produced[s.book.current]} if s.book.current is not None else {}
                 for s in self.sites.values()}
        while time.time() < deadline:
            if await asyncio.to_thread(self._committed_through, marks):
                break
            await asyncio.sleep(0.5)
        else:
            self.say("drain: not everything was committed within 60 s")
        for site in self.sites.values():
            await site.edge.stop()
            site.book.final = await asyncio.to_thread(snapshot_dead, site.outbox)
            if site.book.final is not None:
                site.book.note(site.book.final)
        await asyncio.sleep(1.0)
        await self.hub.stop()

    def _committed_through(self, marks: dict[str, dict[int, int]]) -> bool:
        try:
            conn = self._hub_db()
        except sqlite3.Error:
            return False
        try:
            for site, epochs in marks.items():
                for epoch, top in epochs.items():
                    n = conn.execute("SELECT count(*) FROM records WHERE site = ? AND epoch = ? AND seq <= ?",
                                     (site, epoch, top)).fetchone()[0]
                    destroyed = sum(1 for e, s in self.sites[site].book.destroyed if e == epoch and s <= top)
                    if n + destroyed < top:
                        return False
        except sqlite3.Error:
            return False
        finally:
            conn.close()
        return True

    async def teardown(self) -> None:
        for site in self.sites.values():
            site.proxy.close()
            await site.edge.stop(5.0)
            await site.sim.stop(5.0)
        await self.hub.stop(10.0)
        await self.broker.stop(5.0)

    # --- counting -------------------------------------------------------------------------------

    async def count(self) -> dict[str, Any]:
        hub_rows = await asyncio.to_thread(self._hub_rows)
        outbox_events = await asyncio.to_thread(self._outbox_events)
        sites_out: dict[str, Any] = {}
        totals: Counter[str] = Counter()
        for sid, site in self.sites.items():
            book = site.book
            rows = hub_rows.get(sid, [])
            committed: dict[tuple[int, int], Key] = {(e, s): k for e, s, k in rows}
            by_key = Counter(k for _, _, k in rows)
            final_held = ({(book.final.epoch, s) for s in book.final.rows} if book.final is not None else set())
            final_keys = set(book.final.rows.values()) if book.final is not None else set()
            epochs_out = {}
            lost: list[dict[str, Any]] = []
            moved = destroyed = pending = 0
            for epoch, top in sorted(book.produced.items()):
                n_committed = sum(1 for e, _ in committed if e == epoch)
                for seq in range(1, top + 1):
                    if (epoch, seq) in committed:
                        continue
                    keys = book.contents.get((epoch, seq), set())
                    if (epoch, seq) in final_held or (keys and keys <= final_keys):
                        pending += 1
                    elif keys and all(by_key[k] for k in keys):
                        moved += 1
                    elif (epoch, seq) in book.destroyed:
                        destroyed += 1
                    else:
                        lost.append({"epoch": epoch, "seq": seq, "seen": bool(keys)})
                epochs_out[str(epoch)] = {"produced": top, "committed": n_committed}
            shadowed = 0
            for (epoch, seq), keys in book.contents.items():
                have = committed.get((epoch, seq))
                for k in keys:
                    if k != have and not by_key[k] and (epoch, seq) not in book.destroyed \
                            and k not in book.destroyed_keys and k not in final_keys:
                        shadowed += 1
                        lost.append({"epoch": epoch, "seq": seq, "reused_seq": True})
            epochs_of: dict[Key, set[int]] = {}
            for e, _, k in rows:
                epochs_of.setdefault(k, set()).add(e)
            twice = sum(n - 1 for n in by_key.values() if n > 1)
            carried_twice = sum(len(epochs_of[k]) - 1 for k, n in by_key.items() if n > 1)
            dev = await self._state(site) if site.sim.running else {"writes_by_value": {}}
            floods = [f for f in self.floods if f.site == sid]
            in_floods = sum(max(0, f.closes_after - f.closes_before) for f in floods if f.closes_after >= 0)
            doubles = sum(1 for f in floods if f.closes_after - f.closes_before > 1)
            writes = dev["writes_by_value"].get("barrier_cmd", {})
            unexpected = sum(writes.values()) - in_floods
            sites_out[sid] = {
                "epochs": epochs_out,
                "produced": sum(book.produced.values()),
                "committed": len(committed),
                "lost": len(lost),
                "lost_detail": lost[:20],
                "reused_seq_lost": shadowed,
                "moved_to_new_epoch": moved,
                "destroyed_with_storage": destroyed,
                "pending_in_outbox": pending,
                "committed_twice": twice,
                "committed_twice_across_epochs": carried_twice,
                "floods": len(floods),
                "floods_not_closed": sum(1 for f in floods if not f.closed),
                "double_actuations": doubles,
                "unexpected_writes": unexpected,
                "device_writes": writes,
                "edge_unexpected_exits": site.edge.unexpected_exits,
                "edge_exits": self._exits(site.edge),
                "outbox_events": outbox_events.get(sid, {}),
            }
            for name in ("produced", "committed", "lost", "moved_to_new_epoch", "destroyed_with_storage",
                      "pending_in_outbox", "committed_twice", "committed_twice_across_epochs", "floods",
                      "floods_not_closed", "double_actuations", "unexpected_writes", "edge_unexpected_exits"):
                totals[name] += sites_out[sid][name]
        faults_out, recovery = await asyncio.to_thread(self._recoveries)
        unrecovered = sum(1 for f in faults_out if f["recovery_s"] is None)
        invariants = {
            "no_record_lost": totals["lost"] == 0,
            "none_committed_twice": totals["committed_twice"] == 0,
            "no_double_actuation": totals["double_actuations"] == 0 and totals["unexpected_writes"] == 0,
            "every_barrier_closed": totals["floods_not_closed"] == 0,
            "recovered_after_every_fault": unrecovered == 0,
            "no_crash_loop": totals["edge_unexpected_exits"] == 0 and self.hub.unexpected_exits == 0,
            "torn_and_garbage_outbox_handled": all(
                f["recovery_s"] is not None for f in faults_out if f["kind"] in ("outbox_torn", "outbox_garbage")),
        }
        return {
            "seconds": self.seconds,
            "seed": self.seed,
            "edges": self.n_edges,
            "ok": all(invariants.values()),
            "invariants": invariants,
            "totals": dict(totals),
            "hub_unexpected_exits": self.hub.unexpected_exits,
            "hub_exits": self._exits(self.hub),
            "recovery_s": recovery,
            "faults": faults_out,
            "sites": sites_out,
            "floods": [{"site": f.site, "t_s": round(f.started - self.t0, 1), "closed": f.closed,
                        "closes": f.closes_after - f.closes_before, "during_fault": f.during_fault}
                       for f in self.floods],
            "timeline": self.timeline,
        }

    def _outbox_events(self) -> dict[str, dict[str, int]]:
        """Per site, how many ``outbox.*`` events (replaced, new_epoch, thinned) the hub committed."""
        out: dict[str, dict[str, int]] = {}
        conn = self._hub_db()
        try:
            for site, body in conn.execute("SELECT site, body FROM records WHERE type = 'event'"):
                kind = str(json.loads(body or "{}").get("kind", ""))
                if kind.startswith("outbox."):
                    out.setdefault(site, Counter())[kind] += 1
        finally:
            conn.close()
        return {site: dict(c) for site, c in out.items()}

    def _exits(self, part: Part) -> list[dict[str, Any]]:
        return [{"t_s": round(e["at"] - self.t0, 1), "code": e["code"], "log_tail": e["log_tail"]}
                for e in part.exits]

    def _hub_rows(self) -> dict[str, list[tuple[int, int, Key]]]:
        out: dict[str, list[tuple[int, int, Key]]] = {}
        conn = self._hub_db()
        try:
            for site, epoch, seq, type_, ts, device, point, body in conn.execute(
                    "SELECT site, epoch, seq, type, ts, device, point, body FROM records"):
                out.setdefault(site, []).append((int(epoch), int(seq), hub_key(type_, ts, device, point, body)))
        finally:
            conn.close()
        return out

    def _recoveries(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | int | None]]]:
        faults_out = []
        per_kind: dict[str, list[float]] = {}
        for f in self.faults:
            got = self._fresh(f.sites, f.ended) if f.ended else dict.fromkeys(f.sites)
            worst = None if any(v is None for v in got.values()) else max(
                max(0.0, v - f.ended) for v in got.values() if v is not None)
            faults_out.append({"kind": f.kind, "sites": f.sites, "t_s": round(f.started - self.t0, 1),
                               "down_s": round(f.ended - f.started, 2) if f.ended else None,
                               "recovery_s": None if worst is None else round(worst, 2), **f.detail})
            if worst is not None:
                per_kind.setdefault(f.kind, []).append(worst)
        recovery: dict[str, dict[str, float | int | None]] = {}
        for kind in sorted({f.kind for f in self.faults}):
            xs = per_kind.get(kind, [])
            n = sum(1 for f in self.faults if f.kind == kind)
            recovery[kind] = {"n": n, "recovered": len(xs),
                              "median": round(statistics.median(xs), 2) if xs else None,
                              "max": round(max(xs), 2) if xs else None}
        return faults_out, recovery


async def run_chaos(root: Path, *, seconds: float, seed: int, edges: int, kinds: tuple[str, ...],
                    json_out: Path | None, quiet: bool = False) -> int:
    chaos = Chaos(root.resolve(), seconds=seconds, seed=seed, edges=edges, kinds=kinds, quiet=quiet)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    report = await chaos.run()
    text = json.dumps(report, indent=2)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    if not quiet:
        print(json.dumps({k: report[k] for k in ("ok", "invariants", "totals", "recovery_s")}, indent=2))
    return 0 if report["ok"] else 1


def parse_kinds(text: str | None) -> tuple[str, ...]:
    if not text:
        return KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--faults: unknown kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(KINDS)}")
    return kinds
