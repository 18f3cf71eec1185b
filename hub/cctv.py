"""CCTV linkage, the shell: the camera config, snapshots (ONVIF or plain HTTP), and the evidence store.

Which cameras see a site, and the values (cameras, evidence), are pure and live in
hub/cctv_geo.py. Two parts here:

1. **Config.** ``[cctv]`` in the hub's TOML: :func:`parse_config`.
2. **Evidence.** :class:`CctvLinker` moves a PTZ camera to its preset, fetches a snapshot (an
   ONVIF camera through hub/cctv_onvif.py, or one decoded frame of its RTSP stream through
   hub/cctv_rtsp.py when its profile has no snapshot URI; a plain-HTTP one by its URLs), stores it as a
   content-addressed file with its SHA-256 (and SHA-1, which CAP 1.2's ``<digest>`` uses),
   records it in the hub's database and audits the capture. Every view of evidence is audited
   (DESIGN §6); evidence is kept ``retention_days`` (30 by default, PIPA practice) and
   :meth:`CctvLinker.purge` removes what is older.

Camera faults never stop a capture of the others and are counted per camera
(:attr:`CctvLinker.health`, shown by ``GET /api/health``).

Invariants of the evidence store:

- A row exists only for a file that was completely written (write to a temporary name, fsync,
  rename, then insert the row); a file without a row (a crash in between) is removed by the
  purge once it is older than the retention.
- A stored file's bytes hash to the row's ``sha256``; :meth:`CctvLinker.view` checks that on
  every read and raises :class:`EvidenceError` if not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from hub import cctv_onvif, cctv_rtsp
from hub.cctv_geo import Camera, CameraChoice, Evidence, GeoPoint, OnvifAccess, View, pick_cameras
from hub.cctv_geo import CctvConfig as CctvConfig  # re-exported: hub/config.py names it here
from hub.cctv_onvif import CameraFault, FaultKind
from hub.errors import NotFound
from hub.forward.errors import CameraError, EvidenceError
from hub.forward.tx import WriteGateway, WriteTx
from shared.errors import RetryExhausted
from shared.retry import RetryPolicy, retry_async
from shared.tomlread import Table

log = logging.getLogger(__name__)

_CAMERA_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SYSTEM: Final = "system"


# --- 1. config ----------------------------------------------------------------------------------


def _url(t: Table, name: str, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise t.error(name, f"{value!r}: expected an http:// or https:// URL")
    return value


def parse_config(raw: Mapping[str, object], file: Path) -> CctvConfig:
    """Read the ``[cctv]`` table (pass ``raw["cctv"]``); raise ConfigError naming file and key.

    Example::

        [cctv]
        evidence_dir = "var/evidence"
        retention_days = 30
        rtsp_timeout_s = 10                  # a camera without a snapshot URI: the longest wait for a frame
        [cctv.cameras.SW-CCTV-0012]          # a fixed camera
        lat = 37.2636
        lon = 127.0286
        heading_deg = 90                     # clockwise from north
        fov_deg = 60
        range_m = 150
        snapshot_url = "http://10.20.0.12/snapshot.jpg"
        jurisdiction = "suwon"
        [cctv.cameras.SW-PTZ-0003]           # a PTZ camera: one view per preset
        lat = 37.2641
        lon = 127.0301
        snapshot_url = "http://10.20.0.3/snapshot.jpg"
        ptz_preset_url = "http://10.20.0.3/ptz/preset/{preset}"
        presets = [{preset = 1, heading_deg = 200, fov_deg = 50},
                   {preset = 2, heading_deg = 310, fov_deg = 50}]
        [cctv.cameras.SW-ONVIF-0007]         # an ONVIF camera (Profile S), PTZ by preset token "1", "2"…
        lat = 37.2650
        lon = 127.0310
        onvif_url = "http://10.20.0.7/onvif/device_service"
        user = "jikimi"
        password_file = "/etc/jikimi/cameras/SW-ONVIF-0007.password"   # or password_env = "NAME"
        profile = "profile_1"                # optional: the first profile by default
        presets = [{preset = 1, heading_deg = 90, fov_deg = 50}]   # or heading_deg/fov_deg if fixed
    """
    root = Table(file, raw, "cctv")
    cams = root.table("cameras")
    cameras: list[Camera] = []
    for cam_id in cams.data:
        if not _CAMERA_ID_RE.match(cam_id):
            raise cams.error(cam_id, "a camera id is 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'")
        cameras.append(_camera(cam_id, cams.table(cam_id)))
    cams.done()
    config = CctvConfig(
        cameras=tuple(cameras),
        evidence_dir=root.path("evidence_dir", "var/evidence"),
        retention_days=root.number("retention_days", 30.0, lo=1.0),
        max_cameras=root.integer("max_cameras", 2, lo=1, hi=16),
        timeout_s=root.number("timeout_s", 5.0, lo=0.1),
        ptz_settle_s=root.number("ptz_settle_s", 2.0, lo=0.0),
        ptz_timeout_s=root.number("ptz_timeout_s", 10.0, lo=0.0, hi=120.0),
        max_snapshot_bytes=root.integer("max_snapshot_bytes", 8 * 1024 * 1024, lo=1024),
        rtsp_timeout_s=root.number("rtsp_timeout_s", 10.0, lo=0.5, hi=120.0),
    )
    root.done()
    return config


def _camera(cam_id: str, t: Table) -> Camera:
    lat = t.number("lat", lo=-90.0, hi=90.0)
    lon = t.number("lon", lo=-180.0, hi=180.0)
    onvif = _onvif(t) if t.has("onvif_url") else None
    if onvif is not None:
        for key in ("snapshot_url", "ptz_preset_url"):
            if t.has(key):
                raise t.error(key, "an ONVIF camera names its own snapshot URI and moves by preset; remove it")
        snapshot, ptz_url = "", None
    else:
        snapshot = _url(t, "snapshot_url", t.text("snapshot_url"))
        ptz_url = t.text("ptz_preset_url", "") or None
        if ptz_url is not None:
            _url(t, "ptz_preset_url", ptz_url)
            if "{preset}" not in ptz_url:
                raise t.error("ptz_preset_url", "must contain {preset} where the preset number goes")
    views: list[View] = []
    if ptz_url is not None or (onvif is not None and t.has("presets")):
        for p in t.tables("presets"):
            views.append(View(heading_deg=p.number("heading_deg", lo=0.0, hi=360.0),
                              fov_deg=p.number("fov_deg", lo=1.0, hi=360.0),
                              preset=p.integer("preset", lo=0, hi=65535)))
            p.done()
        if not views:
            raise t.error("presets", "a PTZ camera needs at least one preset ({preset, heading_deg, fov_deg})")
        if t.has("heading_deg") or t.has("fov_deg"):
            raise t.error("heading_deg", "a PTZ camera's directions are its presets'; remove heading_deg/fov_deg")
    else:
        if t.has("presets"):
            raise t.error("presets", "presets need ptz_preset_url (or onvif_url)")
        views.append(View(heading_deg=t.number("heading_deg", lo=0.0, hi=360.0),
                          fov_deg=t.number("fov_deg", lo=1.0, hi=360.0)))
    cam = Camera(
        id=cam_id,
        position=GeoPoint(lat, lon),
        views=tuple(views),
        snapshot_url=snapshot,
        range_m=t.number("range_m", 200.0, lo=1.0, hi=5000.0),
        ptz_preset_url=ptz_url,
        jurisdiction=t.text("jurisdiction", ""),
        name=t.text("name", ""),
        onvif=onvif,
    )
    t.done()
    return cam


def _onvif(t: Table) -> OnvifAccess:
    """``onvif_url``, ``user``, and the password from ``password_file`` or ``password_env`` (never the config)."""
    url = _url(t, "onvif_url", t.text("onvif_url"))
    if cctv_onvif.device_address(url) is None:
        raise t.error("onvif_url", f"{url!r}: expected http(s)://HOST[:PORT]{cctv_onvif.DEVICE_PATH}")
    user = t.text("user")
    if not user:
        raise t.error("user", "must not be empty")
    if t.has("password_file") == t.has("password_env"):
        raise t.error("password_file", "give exactly one of password_file (a file holding the password) and "
                                       "password_env (an environment variable holding it)")
    if t.has("password_file"):
        path = t.path("password_file")
        try:
            password = path.read_text(encoding="utf-8").strip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise t.error("password_file", f"{path}: cannot read it ({exc})") from exc
        if not password:
            raise t.error("password_file", f"{path} is empty")
    else:
        name = t.text("password_env")
        password = os.environ.get(name, "")
        if not password:
            raise t.error("password_env", f"the environment variable {name!r} is not set (or is empty)")
    profile = t.text("profile", "") or None
    return OnvifAccess(url, user, password, profile)


# --- 2. evidence ------------------------------------------------------------------------------


_EVIDENCE_COLS: Final = ("id, sha256, sha1, camera_id, preset, ref, captured_at, expires_at, size, mime, path,"
                         " distance_m, bearing_deg, jurisdiction")


def _evidence(row: Sequence[object]) -> Evidence:
    (id_, sha256, sha1, cam, preset, ref, cap, exp, size, mime, path, dist, bearing, jur) = row
    return Evidence(int(str(id_)), str(sha256), str(sha1), str(cam), None if preset is None else int(str(preset)),
                    str(ref), float(str(cap)), float(str(exp)), int(str(size)), str(mime), str(path),
                    float(str(dist)), float(str(bearing)), str(jur))


def evidence_for(conn: sqlite3.Connection, ref: str) -> list[Evidence]:
    """The evidence recorded for ``ref`` (no audit: metadata only, not a view of the picture)."""
    sql = f"SELECT {_EVIDENCE_COLS} FROM cctv_evidence WHERE ref = ? ORDER BY id"  # noqa: S608 - constant columns
    rows = conn.execute(sql, (ref,))
    return [_evidence(r) for r in rows]


@dataclass(frozen=True)
class Snapshot:
    """What a camera gave: the picture and the choice that led to it."""

    choice: CameraChoice
    data: bytes
    mime: str
    source: str = "snapshot"
    """Where the picture came from: ``snapshot`` (a snapshot URI) or ``rtsp`` (a decoded frame of the stream)."""


@dataclass(frozen=True)
class Capture:
    """The result of :meth:`CctvLinker.capture`: who saw the site, what was stored, what failed."""

    choices: tuple[CameraChoice, ...]
    evidence: tuple[Evidence, ...]
    failures: tuple[tuple[str, str], ...]
    """(camera id, problem) for each chosen camera that gave no picture."""
    pictures: dict[int, bytes]
    """The stored pictures by evidence id (to embed in alerts without reading them back)."""


@dataclass
class CameraHealth:
    """One camera's record since the hub started: pictures taken, failures by kind, the last fault."""

    captures: int = 0
    failures: dict[FaultKind, int] = field(default_factory=dict)
    last_fault: FaultKind | None = None
    last_error: str = ""
    last_fault_at: float | None = None
    last_ok_at: float | None = None


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"


class CctvLinker:
    """Captures, stores, shows and purges CCTV evidence for alarms.

    ``gateway`` is the hub's writer (or a :class:`hub.forward.tx.LocalWriter`); ``session`` an
    aiohttp client session the caller owns.
    """

    def __init__(self, config: CctvConfig, gateway: WriteGateway, session: aiohttp.ClientSession, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.gateway = gateway
        self.session = session
        self.clock = clock
        self.health: dict[str, CameraHealth] = {cam.id: CameraHealth() for cam in config.cameras}
        """Per camera, what its captures gave (the API shows it, hub/operations.py)."""
        self._retry = RetryPolicy(on=(CameraError,), attempts=2, total_s=config.timeout_s * 3,
                                  initial_s=0.2, max_s=1.0)

    def pick(self, site: GeoPoint) -> list[CameraChoice]:
        return pick_cameras(self.config.cameras, site, limit=self.config.max_cameras)

    async def capture(self, site: GeoPoint, ref: str, *, actor: str = SYSTEM) -> Capture:
        """Pick the cameras that see ``site``, take a snapshot from each and store it as evidence.

        One camera failing does not stop the others; its failure is in ``Capture.failures``.
        """
        choices = self.pick(site)
        results = await asyncio.gather(*(self._snapshot_or_error(c) for c in choices))
        snaps = [r for r in results if isinstance(r, Snapshot)]
        failures = tuple((c.camera.id, str(r)) for c, r in zip(choices, results, strict=True)
                         if isinstance(r, CameraError))
        for cam_id, problem in failures:
            log.warning("cctv.snapshot_failed", extra={"camera": cam_id, "ref": ref, "error": problem})
        stored: list[Evidence] = []
        pictures: dict[int, bytes] = {}
        for snap in snaps:
            ev = await self.store(snap, ref, actor=actor)
            stored.append(ev)
            pictures[ev.id] = snap.data
        return Capture(tuple(choices), tuple(stored), failures, pictures)

    async def _snapshot_or_error(self, choice: CameraChoice) -> Snapshot | CameraError:
        health = self.health.setdefault(choice.camera.id, CameraHealth())
        try:
            snap = await self.snapshot(choice)
        except CameraError as exc:
            kind = exc.kind if isinstance(exc, CameraFault) else FaultKind.UNREACHABLE
            health.failures[kind] = health.failures.get(kind, 0) + 1
            health.last_fault, health.last_error, health.last_fault_at = kind, str(exc), self.clock()
            return exc
        health.captures += 1
        health.last_ok_at = self.clock()
        return snap

    async def snapshot(self, choice: CameraChoice) -> Snapshot:
        """Move a PTZ camera to the chosen preset (and let it settle), then fetch one JPEG."""
        cam = choice.camera
        if cam.onvif is not None:
            pic = await cctv_onvif.snapshot(cam.id, cam.onvif, choice.view.preset, self.config, self.session)
            if isinstance(pic, cctv_onvif.StreamOnly):
                return Snapshot(choice, await self._rtsp_frame(cam.id, cam.onvif, pic.uri), "image/jpeg", "rtsp")
            if not _is_jpeg(pic.data):
                raise CameraFault(cam.id, FaultKind.PROTOCOL, f"the snapshot is not a JPEG ({len(pic.data)} bytes)")
            return Snapshot(choice, pic.data, "image/jpeg")
        try:
            if cam.ptz_preset_url is not None and choice.view.preset is not None:
                url = cam.ptz_preset_url.replace("{preset}", str(choice.view.preset))
                # functools.partial, not a lambda: tenacity awaits only what it sees is a coroutine function
                await retry_async(functools.partial(self._request, "POST", url, cam.id), self._retry)
                if self.config.ptz_settle_s > 0:
                    await asyncio.sleep(self.config.ptz_settle_s)
            data = await retry_async(functools.partial(self._request, "GET", cam.snapshot_url, cam.id), self._retry)
        except RetryExhausted as exc:
            raise CameraError(f"camera {cam.id}: {exc}") from exc
        if not _is_jpeg(data):
            raise CameraFault(cam.id, FaultKind.PROTOCOL, f"the snapshot is not a JPEG ({len(data)} bytes)")
        return Snapshot(choice, data, "image/jpeg")

    async def _rtsp_frame(self, cam_id: str, access: OnvifAccess, uri: str) -> bytes:
        """One decoded frame of the camera's stream, as a JPEG (hub/cctv_rtsp.py), in a worker thread."""
        url = cctv_rtsp.stream_url(cam_id, uri, access.device_url, access.user, access.password)
        limit = self.config.rtsp_timeout_s
        try:
            # The grab bounds itself (PyAV's I/O timeout and its own deadline); this bound is the backstop.
            async with asyncio.timeout(limit * 2 + 1.0):
                data = await asyncio.to_thread(cctv_rtsp.grab, cam_id, url, limit)
        except TimeoutError as exc:
            raise CameraFault(cam_id, FaultKind.UNREACHABLE,
                              f"no picture from the RTSP stream within {limit} s") from exc
        if len(data) > self.config.max_snapshot_bytes:
            raise CameraFault(cam_id, FaultKind.PROTOCOL, f"the frame is larger than {self.config.max_snapshot_bytes}"
                                                          " bytes as a JPEG")
        return data

    async def _request(self, method: str, url: str, cam_id: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with self.session.request(method, url, timeout=timeout) as resp:
                if resp.status // 100 != 2:
                    raise CameraError(f"camera {cam_id}: {method} {url}: HTTP {resp.status}")
                body = await resp.content.read(self.config.max_snapshot_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CameraError(f"camera {cam_id}: {method} {url}: {exc!r}") from exc
        if len(body) > self.config.max_snapshot_bytes:
            raise CameraError(f"camera {cam_id}: the answer is larger than {self.config.max_snapshot_bytes} bytes")
        return body

    async def store(self, snap: Snapshot, ref: str, *, actor: str = SYSTEM) -> Evidence:
        """Write the picture (content-addressed, atomically) and record and audit it."""
        sha256 = hashlib.sha256(snap.data).hexdigest()
        sha1 = hashlib.sha1(snap.data, usedforsecurity=False).hexdigest()  # CAP 1.2 <digest> is SHA-1
        rel = f"{sha256[:2]}/{sha256}.jpg"
        await asyncio.to_thread(_write_atomically, self.config.evidence_dir / rel, snap.data)
        now = self.clock()
        c = snap.choice
        expires = now + self.config.retention_days * 86400.0

        def record(tx: WriteTx) -> Evidence:
            cur = tx.conn.execute(
                "INSERT INTO cctv_evidence (sha256, sha1, camera_id, preset, ref, captured_at, expires_at, size,"
                " mime, path, distance_m, bearing_deg, jurisdiction) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sha256, sha1, c.camera.id, c.view.preset, ref, now, expires, len(snap.data), snap.mime, rel,
                 c.distance_m, c.bearing_deg, c.camera.jurisdiction),
            )
            ev_id = int(cur.lastrowid or 0)
            tx.audit(actor, "cctv.capture", f"evidence:{ev_id}",
                     {"camera": c.camera.id, "ref": ref, "sha256": sha256, "preset": c.view.preset,
                      "distance_m": round(c.distance_m, 1), "source": snap.source})
            return Evidence(ev_id, sha256, sha1, c.camera.id, c.view.preset, ref, now, expires, len(snap.data),
                            snap.mime, rel, c.distance_m, c.bearing_deg, c.camera.jurisdiction)

        ev = await self.gateway.call(record)
        log.info("cctv.evidence_stored", extra={"camera": c.camera.id, "ref": ref, "sha256": sha256})
        return ev

    async def view(self, evidence_id: int, actor: str, *, purpose: str = "console") -> tuple[Evidence, bytes]:
        """Show one piece of evidence to ``actor``: audited first, then read and checked."""

        def look(tx: WriteTx) -> Evidence:
            sql = f"SELECT {_EVIDENCE_COLS} FROM cctv_evidence WHERE id = ?"  # noqa: S608 - constant columns
            row = tx.conn.execute(sql, (evidence_id,)).fetchone()
            if row is None:
                raise NotFound(f"no evidence {evidence_id} (purged after the retention, or never taken)")
            ev = _evidence(row)
            tx.audit(actor, "cctv.evidence.view", f"evidence:{evidence_id}",
                     {"camera": ev.camera_id, "ref": ev.ref, "sha256": ev.sha256, "purpose": purpose})
            return ev

        ev = await self.gateway.call(look)
        data = await asyncio.to_thread(self._read, ev)
        return ev, data

    def _read(self, ev: Evidence) -> bytes:
        path = self.config.evidence_dir / ev.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EvidenceError(f"evidence {ev.id}: {path}: {exc.strerror or exc}") from exc
        if hashlib.sha256(data).hexdigest() != ev.sha256:
            raise EvidenceError(f"evidence {ev.id}: {path} no longer matches its SHA-256")
        return data

    async def purge(self, *, actor: str = SYSTEM) -> int:
        """Delete evidence past its retention (rows, then files) and stray files; return the count."""
        now = self.clock()

        def expire(tx: WriteTx) -> tuple[list[str], set[str]]:
            rows = tx.conn.execute("SELECT id, path FROM cctv_evidence WHERE expires_at <= ?", (now,)).fetchall()
            if rows:
                tx.conn.execute("DELETE FROM cctv_evidence WHERE expires_at <= ?", (now,))
                tx.audit(actor, "cctv.evidence.purge", "cctv_evidence",
                         {"count": len(rows), "ids": [str(r[0]) for r in rows][:100]})
            live = {str(r[0]) for r in tx.conn.execute("SELECT path FROM cctv_evidence")}
            # Two alarms may have stored the same picture; keep a file another row still names.
            return [str(r[1]) for r in rows if str(r[1]) not in live], live

        paths, live = await self.gateway.call(expire)
        cutoff = now - self.config.retention_days * 86400.0
        await asyncio.to_thread(_remove_files, self.config.evidence_dir, paths, live, cutoff)
        return len(paths)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size == len(data):
        return  # content-addressed: the same name is the same bytes
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _remove_files(root: Path, paths: Sequence[str], live: set[str], stray_before: float) -> None:
    for rel in paths:
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
    if not root.is_dir():
        return
    # Files no row names (a crash between writing and recording) go once they are old enough.
    for path in root.glob("*/*"):
        if f"{path.parent.name}/{path.name}" in live:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < stray_before:
                path.unlink()
