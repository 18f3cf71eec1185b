"""Live camera video over WebRTC (aiortc), and expiring view links for 112/119 (DESIGN §9).

A browser POSTs an SDP offer for a camera; the hub answers with a video track relayed from the
camera's RTSP stream. Rules:

1. **One pull per camera.** The first viewer of a camera opens its stream (a :class:`Feed`); every
   viewer gets its own subscription of it through aiortc's ``MediaRelay``; the last viewer to
   leave closes it. A stream that ends (the camera went away) ends its views (audited, "camera
   stream ended", within :data:`SWEEP_S`), and the next viewer opens it anew. The H.264 packets
   pass through as the camera sent them (no decoding, no encoding), so the offer must accept
   H.264 with packetization-mode 1, or it is refused.
2. **At most ``max_viewers`` per camera** (``[live_view]``), and at most ``link_max_views`` at
   once through one link (so a link's holder cannot take every seat of a camera). The next is
   refused (409) with the count; the refusal is audited like a view.
3. **Every view is audited** in the hub's chain: ``cctv.live.start`` (who, camera, view id, and
   the link and recipient when it came through a link) and ``cctv.live.stop`` (how long, and why:
   closed by the viewer, the connection failed, the link expired or was revoked, the hub stopped).
4. **An offer is checked before aiortc reads it:** at most :data:`MAX_SDP` bytes, text, an SDP
   (``v=0``) with a video section; what aiortc still refuses is a 422, never a 500.
5. **ICE with host candidates only**: no STUN or TURN server is configured. A browser's mDNS
   candidates (``….local``: Chromium hides its addresses behind them) are dropped from the offer
   rather than resolved by multicast: the browser's checks reach the hub's host candidates, and the
   hub learns the browser's address from them (a peer-reflexive candidate, RFC 8445 §7.3.1.3).
6. **Links.** A link is a random 256-bit token shown once, when it is made; the database keeps
   only its SHA-256 (like sessions, hub/auth.py). It opens the live view of its one camera, and
   nothing else (no session, no API route reads it), until it expires (``ttl_s``, default
   ``link_ttl_s`` = 30 min, at most ``link_max_ttl_s``) or is revoked. Every use — allowed or
   refused — is audited with the link's recipient. A revoked or expired link's running views
   are ended by :meth:`LiveView.run` within :data:`SWEEP_S`.

The stream's source is a plug point (:class:`SourceOpener`): :class:`RtspOpener` asks the
camera for its stream URI over ONVIF (GetStreamUri) and pulls it with PyAV (aiortc's
``MediaPlayer``, ``decode=False``); tests may pass another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

from hub.cctv_geo import Camera
from hub.errors import Conflict, Forbidden, HubError, NotFound, Refused
from hub.forward.tx import WriteGateway, WriteTx
from shared.tomlread import Table

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack, RTCPeerConnection

log = logging.getLogger(__name__)

MAX_SDP: Final = 32 * 1024
"""The largest offer read (Chromium's offers are 5-10 KiB)."""
SWEEP_S: Final = 1.0
"""How often the views of expired links, ended streams and browsers that never connected are ended."""
TOKEN_BYTES: Final = 32
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_RECIPIENT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_H264_MODE1: Final = re.compile(r"^a=fmtp:\d+ .*packetization-mode=1", re.MULTILINE)


# --- config ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveConfig:
    """``[live_view]`` in the hub's TOML."""

    max_viewers: int = 4
    """Concurrent viewers per camera (rule 2)."""
    link_ttl_s: float = 1800.0
    """A link's lifetime when its maker gives none (30 min)."""
    link_max_ttl_s: float = 86400.0
    public_url: str | None = None
    """The base of link URLs (``https://hub.example.kr:8443``); None: the address the operator used."""
    open_timeout_s: float = 10.0
    """How long opening a camera's stream may take."""
    link_max_views: int = 2
    """Views open at once through one link (rule 2)."""
    connect_timeout_s: float = 15.0
    """A view whose browser has not connected by then is ended: an answered offer holds no seat."""


def parse_config(raw: Mapping[str, object], file: Path) -> LiveConfig:
    """Read ``[live_view]`` (pass ``raw["live_view"]``); raise ConfigError naming file and key."""
    t = Table(file, raw, "live_view")
    public = t.optional_text("public_url")
    if public is not None:
        parts = urlsplit(public)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise t.error("public_url", f"{public!r}: expected https://HOST[:PORT], the hub's address as recipients"
                                        " reach it")
        public = public.rstrip("/")
    max_ttl = t.number("link_max_ttl_s", 86400.0, lo=60.0, hi=7 * 86400.0)
    cfg = LiveConfig(
        max_viewers=t.integer("max_viewers", 4, lo=1, hi=64),
        link_ttl_s=t.number("link_ttl_s", 1800.0, lo=60.0, hi=max_ttl),
        link_max_ttl_s=max_ttl,
        public_url=public,
        open_timeout_s=t.number("open_timeout_s", 10.0, lo=0.5, hi=120.0),
        link_max_views=t.integer("link_max_views", 2, lo=1, hi=64),
        connect_timeout_s=t.number("connect_timeout_s", 15.0, lo=1.0, hi=300.0),
    )
    t.done()
    return cfg


# --- sources -----------------------------------------------------------------------------------


class Source(Protocol):
    """An open camera stream: one video track of H.264 packets (``av.Packet``)."""

    @property
    def track(self) -> MediaStreamTrack: ...

    def close(self) -> None: ...


class SourceOpener(Protocol):
    """Opens a camera's stream (rule 1: called once per camera while it has viewers)."""

    async def open(self, camera: Camera) -> Source: ...


class SourceError(Refused):
    """The camera's stream could not be opened (no RTSP, unreachable, refused)."""


class _PlayerSource:
    def __init__(self, player: object, track: MediaStreamTrack) -> None:
        self._player = player
        self._track = track

    @property
    def track(self) -> MediaStreamTrack:
        return self._track

    def close(self) -> None:
        self._track.stop()  # MediaPlayer stops its reader thread when its last track stops


class RtspOpener:
    """Pull a camera's RTSP stream: the URI from ONVIF GetStreamUri, the packets through PyAV."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._uris: dict[str, str] = {}
        """Stream URIs by camera, as GetStreamUri gave them (asked again after a failed open)."""

    async def stream_uri(self, camera: Camera) -> str:
        from onvif import ONVIFCamera
        from onvif.exceptions import ONVIFError
        from zeep.exceptions import Error as ZeepError

        from hub.cctv_onvif import CameraFault, device_address
        from hub.cctv_rtsp import stream_url

        access = camera.onvif
        addr = None if access is None else device_address(access.device_url)
        if access is None or addr is None:
            raise SourceError(f"camera {camera.id} has no ONVIF access, so no stream URI")
        cam = ONVIFCamera(addr[0], addr[1], access.user, access.password, no_cache=True, adjust_time=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                await cam.update_xaddrs()
                media = await cam.create_media_service()
                tokens = [str(p.token) for p in await media.GetProfiles() or ()]
                profile = access.profile or (tokens[0] if tokens else None)
                if profile is None:
                    raise SourceError(f"camera {camera.id} has no media profile")
                got = await media.GetStreamUri({"ProfileToken": profile, "StreamSetup": {
                    "Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}})
        except (ONVIFError, ZeepError, OSError, TimeoutError) as exc:
            raise SourceError(f"camera {camera.id}: GetStreamUri: {exc!r}") from exc
        finally:
            await cam.close()
        uri = str(getattr(got, "Uri", "") or "")
        try:  # rtsp:// on the camera's own host only; the credentials are put in here (hub/cctv_rtsp.py)
            return stream_url(camera.id, uri, access.device_url, access.user, access.password)
        except CameraFault as exc:
            raise SourceError(str(exc)) from exc

    async def open(self, camera: Camera) -> Source:
        import av
        from aiortc.contrib.media import MediaPlayer

        from hub.cctv_rtsp import OPTIONS

        url = self._uris.get(camera.id) or await self.stream_uri(camera)
        # The evidence grab's options (RTSP over TCP, no probing), and low delay: no input buffering.
        options = {**OPTIONS, "fflags": "nobuffer", "flags": "low_delay", "timeout": str(int(self.timeout_s * 1e6))}
        try:
            player = await asyncio.to_thread(MediaPlayer, url, options=options, decode=False)
        except (av.FFmpegError, OSError) as exc:
            self._uris.pop(camera.id, None)  # the camera may have moved its stream: ask again next time
            raise SourceError(f"camera {camera.id}: cannot open its stream: {exc}") from exc
        if player.video is None:
            raise SourceError(f"camera {camera.id}: its stream has no video")
        self._uris[camera.id] = url
        return _PlayerSource(player, player.video)


# --- links (run on the writer) -----------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    id: int
    camera: str
    recipient: str
    created_by: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None

    def refusal(self, now: float) -> str | None:
        """Why this link no longer opens anything, or None."""
        if self.revoked_at is not None:
            return f"this link was revoked by {self.revoked_by}"
        if now >= self.expires_at:
            return "this link has expired"
        return None

    @property
    def actor(self) -> str:
        """Who a link's use is audited as: the recipient it was made for."""
        return f"link:{self.id}:{self.recipient}"


_LINK_COLS: Final = "id, camera_id, recipient, created_by, created_at, expires_at, revoked_at, revoked_by"


def _link(row: Sequence[object]) -> Link:
    id_, cam, rec, by, at, exp, rev_at, rev_by = row
    return Link(int(str(id_)), str(cam), str(rec), str(by), float(str(at)), float(str(exp)),
                None if rev_at is None else float(str(rev_at)), None if rev_by is None else str(rev_by))


def create_link(tx: WriteTx, now: float, camera: str, recipient: str, ttl_s: float, actor: str) -> tuple[Link, str]:
    """A new link; returns it with its token (which exists only here: rule 6)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    cur = tx.conn.execute(
        "INSERT INTO camera_links (token_hash, camera_id, recipient, created_by, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?)", (token_hash(token), camera, recipient, actor, now, now + ttl_s))
    link = Link(int(cur.lastrowid or 0), camera, recipient, actor, now, now + ttl_s, None, None)
    tx.audit(actor, "cctv.link.create", f"camera-link:{link.id}",
             {"camera": camera, "recipient": recipient, "expires_at": link.expires_at})
    return link, token


def revoke_link(tx: WriteTx, now: float, link_id: int, actor: str) -> Link:
    row = tx.conn.execute(f"SELECT {_LINK_COLS} FROM camera_links WHERE id = ?",  # noqa: S608 - constant columns
                          (link_id,)).fetchone()
    if row is None:
        raise NotFound(f"no camera link {link_id}")
    link = _link(row)
    if link.revoked_at is not None:
        raise Conflict(f"camera link {link_id} was revoked already")
    tx.conn.execute("UPDATE camera_links SET revoked_at = ?, revoked_by = ? WHERE id = ?", (now, actor, link_id))
    tx.audit(actor, "cctv.link.revoke", f"camera-link:{link_id}",
             {"camera": link.camera, "recipient": link.recipient})
    return Link(link.id, link.camera, link.recipient, link.created_by, link.created_at, link.expires_at, now, actor)


def links(conn: sqlite3.Connection, limit: int = 200) -> list[Link]:
    sql = f"SELECT {_LINK_COLS} FROM camera_links ORDER BY id DESC LIMIT ?"  # noqa: S608 - constant columns
    return [_link(r) for r in conn.execute(sql, (limit,))]


def link_by_token(conn: sqlite3.Connection, token: str) -> Link | None:
    """The link a token opens, expired and revoked ones too; None for a token no link has."""
    if not _TOKEN_RE.match(token):
        return None
    sql = f"SELECT {_LINK_COLS} FROM camera_links WHERE token_hash = ?"  # noqa: S608 - constant columns
    row = conn.execute(sql, (token_hash(token),)).fetchone()
    return None if row is None else _link(row)


def check_recipient(name: str, known: Sequence[str] | None) -> None:
    """A link's recipient: a configured forwarding recipient when there are any (the CAP alert to
    it can carry the link), else any short name."""
    if not _RECIPIENT_RE.match(name):
        raise Refused(f"recipient {name!r}: 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'")
    if known is not None and name not in known:
        raise Refused(f"recipient {name!r} is not a forwarding recipient (known: {', '.join(known) or 'none'})")


# --- views -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who watches: an operator (``actor`` is the user name) or a link's recipient."""

    actor: str
    link: Link | None = None


@dataclass
class Feed:
    """One camera's open stream and the relay its viewers subscribe to (rule 1)."""

    camera: str
    source: Source
    relay: object
    views: set[str] = field(default_factory=set)


@dataclass
class _View:
    id: str
    camera: str
    viewer: Viewer
    started_at: float
    pc: RTCPeerConnection | None = None
    ended: bool = False
    connected: bool = False
    """The browser connected once (a view that never does is ended after ``connect_timeout_s``)."""


@dataclass(frozen=True)
class Answer:
    view: str
    sdp: str


_MDNS_CANDIDATE: Final = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+ .*(?:\r?\n)", re.MULTILINE)


def without_mdns(sdp: str) -> str:
    """The offer without its mDNS host candidates (rule 5)."""
    return _MDNS_CANDIDATE.sub("", sdp)


def check_offer(sdp: str) -> None:
    """Rule 4: what an offer must be before aiortc parses it."""
    if len(sdp.encode()) > MAX_SDP:
        raise Refused(f"the offer is larger than {MAX_SDP} bytes")
    if not sdp.startswith("v=0"):
        raise Refused("the offer is not an SDP (it must start with v=0)")
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        raise Refused("the offer has no video section")
    if "H264/90000" not in sdp or not _H264_MODE1.search(sdp):
        raise Refused("the offer does not accept H.264 (packetization-mode 1), the cameras' codec")


class LiveView:
    """The live views of one hub: feeds per camera, viewers per feed, audited starts and stops."""

    def __init__(self, config: LiveConfig, cameras: Sequence[Camera], gateway: WriteGateway, opener: SourceOpener,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.cameras = {c.id: c for c in cameras}
        self.gateway = gateway
        self.opener = opener
        self.clock = clock
        self._feeds: dict[str, Feed] = {}
        self._opening: dict[str, asyncio.Future[Feed]] = {}
        self._views: dict[str, _View] = {}

    def viewers(self, camera: str) -> int:
        return sum(1 for v in self._views.values() if v.camera == camera and not v.ended)

    def feeds(self) -> int:
        """How many camera streams are open (rule 1: one per camera with viewers)."""
        return len(self._feeds)

    async def _audit(self, actor: str, action: str, target: str, detail: dict[str, str | float | int | None]) -> None:
        await self.gateway.call(lambda tx: tx.audit(actor, action, target, dict(detail)))

    async def watch(self, camera_id: str, offer_sdp: str, viewer: Viewer) -> Answer:
        """Answer ``viewer``'s offer with ``camera_id``'s live video (audited); raise a HubError if not."""
        cam = self.cameras.get(camera_id)
        if cam is None:
            raise NotFound(f"no camera {camera_id!r}")
        if viewer.link is not None and viewer.link.camera != camera_id:
            raise Forbidden(f"this link shows camera {viewer.link.camera} only")
        check_offer(offer_sdp)
        link_detail: dict[str, str | float | int | None] = (
            {} if viewer.link is None else {"link": viewer.link.id, "recipient": viewer.link.recipient})
        if viewer.link is not None:
            link_id = viewer.link.id
            k = sum(1 for v in self._views.values() if v.viewer.link is not None and v.viewer.link.id == link_id)
            if k >= self.config.link_max_views:
                await self._audit(viewer.actor, "cctv.live.refused", f"camera:{camera_id}",
                                  {**link_detail, "link_views": k, "link_max_views": self.config.link_max_views})
                raise Conflict(f"this link has all {self.config.link_max_views} of its views open; close one first")
        n = self.viewers(camera_id)
        if n >= self.config.max_viewers:
            await self._audit(viewer.actor, "cctv.live.refused", f"camera:{camera_id}",
                              {**link_detail, "viewers": n, "max_viewers": self.config.max_viewers})
            raise Conflict(f"camera {camera_id} has {n} viewers, the most it serves ({self.config.max_viewers});"
                           " close another view of it first")
        view = _View(secrets.token_urlsafe(9), camera_id, viewer, self.clock())
        self._views[view.id] = view  # the slot is taken before the first await (rule 2)
        try:
            feed = await self._feed(cam)
            feed.views.add(view.id)
            answer = await self._answer(view, feed, offer_sdp)
        except BaseException:
            await self._drop(view, audit=False)
            raise
        await self._audit(viewer.actor, "cctv.live.start", f"camera:{camera_id}", {**link_detail, "view": view.id})
        log.info("live.start", extra={"camera": camera_id, "view": view.id, "actor": viewer.actor})
        return Answer(view.id, answer)

    async def _feed(self, cam: Camera) -> Feed:
        feed = self._feeds.get(cam.id)
        if feed is not None and feed.source.track.readyState == "live":
            return feed
        if feed is not None:  # the camera's stream ended: its views are ended by the sweep
            del self._feeds[cam.id]
            feed.source.close()
        pending = self._opening.get(cam.id)
        if pending is not None:  # another viewer is opening it: share that pull
            return await asyncio.shield(pending)
        fut: asyncio.Future[Feed] = asyncio.get_running_loop().create_future()
        self._opening[cam.id] = fut
        try:
            async with asyncio.timeout(self.config.open_timeout_s):
                source = await self.opener.open(cam)
        except TimeoutError as exc:
            err: Exception = SourceError(f"camera {cam.id}: its stream did not open in {self.config.open_timeout_s} s")
            fut.set_exception(err)
            raise err from exc
        except BaseException as exc:  # whatever ends this opening ends it for the viewers sharing it
            fut.set_exception(exc if isinstance(exc, Exception)
                              else SourceError(f"camera {cam.id}: opening its stream was cancelled"))
            raise
        finally:
            self._opening.pop(cam.id, None)
            if fut.done():
                fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
        from aiortc.contrib.media import MediaRelay

        feed = self._feeds[cam.id] = Feed(cam.id, source, MediaRelay())
        fut.set_result(feed)
        log.info("live.feed_opened", extra={"camera": cam.id})
        return feed

    async def _answer(self, view: _View, feed: Feed, offer_sdp: str) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
        from aiortc.contrib.media import MediaRelay

        pc = view.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # rule 5

        @pc.on("connectionstatechange")
        async def changed() -> None:
            if pc.connectionState == "connected":
                view.connected = True
            if pc.connectionState in ("failed", "closed"):
                await self.end(view.id, f"connection {pc.connectionState}")

        assert isinstance(feed.relay, MediaRelay)
        try:
            # The track and the codec preference go first: aiortc settles the codecs in common
            # when it reads the offer, on the transceiver that is already there.
            sender = pc.addTrack(feed.relay.subscribe(feed.source.track, buffered=False))
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"]
            transceiver.setCodecPreferences(h264)  # rule 1: pass the camera's H.264 through
            await pc.setRemoteDescription(RTCSessionDescription(sdp=without_mdns(offer_sdp), type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
            # aiortc's SDP parser says "malformed" with these (asserts included)
            raise Refused(f"the offer was refused: {exc!r}") from exc
        local = pc.localDescription
        if "H264/90000" not in local.sdp or not transceiver._codecs:
            raise Refused("no H.264 in common with the offer")
        return str(local.sdp)

    async def _drop(self, view: _View, *, audit: bool, why: str = "") -> None:
        if view.ended:
            return
        view.ended = True
        self._views.pop(view.id, None)
        if view.pc is not None:
            await view.pc.close()
        feed = self._feeds.get(view.camera)
        if feed is not None and view.id in feed.views:
            feed.views.discard(view.id)
            if not feed.views:
                del self._feeds[view.camera]
                feed.source.close()
                log.info("live.feed_closed", extra={"camera": view.camera})
        if audit:
            detail: dict[str, str | float | int | None] = {
                "view": view.id, "seconds": round(self.clock() - view.started_at, 1), "why": why}
            if view.viewer.link is not None:
                detail |= {"link": view.viewer.link.id, "recipient": view.viewer.link.recipient}
            await self._audit(view.viewer.actor, "cctv.live.stop", f"camera:{view.camera}", detail)
            log.info("live.stop", extra={"camera": view.camera, "view": view.id, "why": why})

    async def end(self, view_id: str, why: str, *, actor: str | None = None, link_id: int | None = None) -> None:
        """End one view (audited). With ``actor`` or ``link_id``, only a view that is theirs."""
        view = self._views.get(view_id)
        if view is None or (actor is not None and view.viewer.actor != actor) or (
                link_id is not None and (view.viewer.link is None or view.viewer.link.id != link_id)):
            if actor is None and link_id is None:
                return
            raise NotFound(f"no view {view_id} of yours")
        await self._drop(view, audit=True, why=why)

    async def end_link(self, link_id: int, why: str) -> int:
        """End the views a link opened (it was revoked or expired); how many."""
        ids = [v.id for v in self._views.values() if v.viewer.link is not None and v.viewer.link.id == link_id]
        for view_id in ids:
            await self.end(view_id, why)
        return len(ids)

    async def run(self) -> None:
        """Until cancelled: end the views of expired links (rule 6); on the way out, end every view."""
        try:
            while True:
                await asyncio.sleep(SWEEP_S)
                now = self.clock()
                ended = {cam for cam, feed in self._feeds.items() if feed.source.track.readyState != "live"}
                for view in list(self._views.values()):
                    link = view.viewer.link
                    if link is not None and now >= link.expires_at:
                        await self.end(view.id, "link expired")
                    elif view.camera in ended and view.pc is not None:
                        await self.end(view.id, "camera stream ended")
                    elif (view.pc is not None and view.pc.connectionState != "connected" and not view.connected
                          and now - view.started_at > self.config.connect_timeout_s):
                        await self.end(view.id, "never connected")
        finally:
            for view in list(self._views.values()):
                with contextlib.suppress(HubError, OSError):  # the writer may have stopped first
                    await self._drop(view, audit=True, why="hub stopped")
