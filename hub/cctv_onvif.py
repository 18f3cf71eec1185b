"""CCTV over ONVIF, the shell: move a camera to a preset, wait for it to stop, take its snapshot.

One capture is one short conversation with the camera, through the maintained client library
``onvif-zeep-async`` (zeep under it, WS-Security UsernameToken with PasswordDigest):

1. the device service (``update_xaddrs``: GetServices, or GetCapabilities) names the media and PTZ
   services; the clock offset is read first (GetSystemDateAndTime) so a camera whose clock drifts
   still accepts the token's Created;
2. Media GetProfiles: the configured profile, or the first;
3. for a PTZ view, PTZ GotoPreset to the view's preset token (``str(preset)``), then GetStatus until
   MoveStatus is IDLE, at most ``ptz_timeout_s`` (a camera that reports no MoveStatus is given
   ``ptz_settle_s``);
4. Media GetSnapshotUri, and one GET of it with HTTP digest authentication (aiohttp's
   DigestAuthMiddleware), reading at most ``max_snapshot_bytes``;
5. or, when the profile has no snapshot URI, Media GetStreamUri (RTP unicast over RTSP): the
   result is a :class:`StreamOnly` and the caller (hub/cctv.py) takes one decoded frame of the
   stream with hub/cctv_rtsp.py, bounded by ``rtsp_timeout_s``.

Nothing here is retried and the whole conversation is bounded (:func:`bound_s`): a camera's fault
costs the capture loop seconds, never the alarm (captures run after the alarm is committed and its
alert queued, hub/evidence.py). Every failure is a :class:`CameraFault` with a :class:`FaultKind`,
which hub/cctv.py counts per camera for the API.

The library is imported when the first ONVIF camera is used, not at module import: it calls
``logging.basicConfig`` on import, which must not run before the hub has set up its logging.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp

from hub.cctv_geo import CctvConfig, OnvifAccess
from hub.forward.errors import CameraError

if TYPE_CHECKING:
    from onvif import ONVIFCamera

DEVICE_PATH: Final = "/onvif/device_service"
POLL_S: Final = 0.1
"""How often GetStatus is asked while a camera moves."""


class FaultKind(enum.StrEnum):
    """Why a camera gave no picture (the API's per-camera counters are keyed by these)."""

    UNREACHABLE = "unreachable"
    AUTH_REFUSED = "auth_refused"
    PROFILE_MISSING = "profile_missing"
    PRESET_MISSING = "preset_missing"
    PTZ_TIMEOUT = "ptz_timeout"
    NO_SNAPSHOT = "no_snapshot"
    PROTOCOL = "protocol"


class CameraFault(CameraError):
    """A camera gave no picture, and why (``kind``)."""

    def __init__(self, camera_id: str, kind: FaultKind, problem: str) -> None:
        super().__init__(f"camera {camera_id}: {kind.value}: {problem}")
        self.camera_id = camera_id
        self.kind = kind


@dataclass(frozen=True)
class OnvifPicture:
    data: bytes
    mime: str
    profile: str


def bound_s(config: CctvConfig) -> float:
    """The longest one ONVIF capture may take: a request's timeout for each of the ~8 requests, and the move."""
    return config.timeout_s * 8 + config.ptz_timeout_s + config.ptz_settle_s


@dataclass(frozen=True)
class StreamOnly:
    """The camera's profile has no snapshot URI; this is its RTSP stream URI (as the camera gave it)."""

    uri: str
    profile: str


def device_address(url: str) -> tuple[str, int] | None:
    """``http://HOST:PORT/onvif/device_service`` → ("http://HOST", PORT) for the library, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path != DEVICE_PATH:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}", port


def _subcodes(fault: Any) -> set[str]:
    codes = {str(getattr(q, "localname", q)).rsplit(":", 1)[-1] for q in (fault.subcodes or ())}
    return codes | {str(fault.code or "").rsplit(":", 1)[-1]}


async def snapshot(camera_id: str, access: OnvifAccess, preset: int | None, config: CctvConfig,
                   session: aiohttp.ClientSession) -> OnvifPicture | StreamOnly:
    """Move the camera to ``preset`` (if any), wait until it stops, and fetch one picture (or name its stream)."""
    from onvif import ONVIFCamera
    from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError
    from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError

    addr = device_address(access.device_url)
    if addr is None:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"{access.device_url}: not an ONVIF device service URL")
    cam = ONVIFCamera(addr[0], addr[1], access.user, access.password, no_cache=True, adjust_time=True)
    step = "GetServices"
    try:
        async with asyncio.timeout(bound_s(config)):
            await cam.update_xaddrs()
            step = "GetProfiles"
            profile = await _profile(cam, camera_id, access)
            if preset is not None:
                step = "GotoPreset"
                await _goto(cam, camera_id, profile, preset, config)
            step = "GetSnapshotUri"
            uri = await cam.get_snapshot_uri(profile)  # None when the camera refuses or has none
            if not uri:
                step = "GetStreamUri"
                return StreamOnly(await _stream_uri(cam, camera_id, profile), profile)
            step = "snapshot"
            data, mime = await _fetch(session, uri, access, camera_id, config)
            return OnvifPicture(data, mime, profile)
    except Fault as exc:
        codes = _subcodes(exc)
        if "NotAuthorized" in codes:
            raise CameraFault(camera_id, FaultKind.AUTH_REFUSED, f"{step}: {exc.message}") from exc
        if step == "GotoPreset" and codes & {"NoToken", "NoEntity", "InvalidArgVal"}:
            raise CameraFault(camera_id, FaultKind.PRESET_MISSING, f"preset {preset}: {exc.message}") from exc
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"{step}: {exc.message} ({sorted(codes)})") from exc
    except ONVIFAuthError as exc:
        raise CameraFault(camera_id, FaultKind.AUTH_REFUSED, f"{step}: {exc}") from exc
    except TransportError as exc:
        kind = FaultKind.AUTH_REFUSED if exc.status_code == 401 else FaultKind.PROTOCOL
        raise CameraFault(camera_id, kind, f"{step}: HTTP {exc.status_code}") from exc
    except (XMLSyntaxError, XMLParseError) as exc:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"{step}: not an ONVIF answer: {exc}") from exc
    except (ONVIFTimeoutError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CameraFault(camera_id, FaultKind.UNREACHABLE, f"{step}: {exc!r}") from exc
    except ONVIFError as exc:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"{step}: {exc}") from exc
    finally:
        await cam.close()


async def _profile(cam: ONVIFCamera, camera_id: str, access: OnvifAccess) -> str:
    media = await cam.create_media_service()
    tokens = [str(p.token) for p in await media.GetProfiles() or ()]
    if access.profile is not None:
        if access.profile not in tokens:
            raise CameraFault(camera_id, FaultKind.PROFILE_MISSING, f"no profile {access.profile!r} (has {tokens})")
        return access.profile
    if not tokens:
        raise CameraFault(camera_id, FaultKind.PROFILE_MISSING, "the camera has no media profile")
    return tokens[0]


async def _stream_uri(cam: ONVIFCamera, camera_id: str, profile: str) -> str:
    from zeep.exceptions import Fault

    media = await cam.create_media_service()
    try:
        got = await media.GetStreamUri({"ProfileToken": profile,
                                        "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}})
    except Fault as exc:
        if "NotAuthorized" in _subcodes(exc):
            raise
        raise CameraFault(camera_id, FaultKind.NO_SNAPSHOT, f"profile {profile!r} has neither a snapshot URI nor "
                                                            f"a stream URI ({exc.message})") from exc
    uri = getattr(got, "Uri", None)
    if not uri:
        raise CameraFault(camera_id, FaultKind.NO_SNAPSHOT, f"profile {profile!r} has neither a snapshot URI nor "
                                                            "a stream URI")
    return str(uri)


async def _goto(cam: ONVIFCamera, camera_id: str, profile: str, preset: int, config: CctvConfig) -> None:
    ptz = await cam.create_ptz_service()
    await ptz.GotoPreset({"ProfileToken": profile, "PresetToken": str(preset)})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.ptz_timeout_s
    while True:
        status = await ptz.GetStatus({"ProfileToken": profile})
        moves = getattr(status, "MoveStatus", None)
        if moves is None:  # the camera does not say: give it the fixed settle time
            await asyncio.sleep(config.ptz_settle_s)
            return
        if all(str(getattr(moves, axis, None) or "IDLE").upper() != "MOVING" for axis in ("PanTilt", "Zoom")):
            return
        if loop.time() >= deadline:
            raise CameraFault(camera_id, FaultKind.PTZ_TIMEOUT,
                              f"still moving to preset {preset} after {config.ptz_timeout_s} s")
        await asyncio.sleep(POLL_S)


async def _fetch(session: aiohttp.ClientSession, uri: str, access: OnvifAccess, camera_id: str,
                 config: CctvConfig) -> tuple[bytes, str]:
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    digest = aiohttp.DigestAuthMiddleware(access.user, access.password)
    async with session.get(uri, timeout=timeout, middlewares=(digest,)) as resp:
        if resp.status == 401:
            raise CameraFault(camera_id, FaultKind.AUTH_REFUSED, f"snapshot {uri}: HTTP 401")
        if resp.status // 100 != 2:
            raise CameraFault(camera_id, FaultKind.NO_SNAPSHOT, f"snapshot {uri}: HTTP {resp.status}")
        body = await resp.content.read(config.max_snapshot_bytes + 1)
        mime = resp.content_type
    if len(body) > config.max_snapshot_bytes:
        raise CameraFault(camera_id, FaultKind.PROTOCOL,
                          f"the snapshot is larger than {config.max_snapshot_bytes} bytes")
    return body, mime
