"""One decoded frame of a camera's RTSP stream, as a JPEG: evidence from a camera with no snapshot URI.

hub/cctv_onvif.py asks the camera for its stream URI (Media GetStreamUri, RTP unicast over RTSP)
when the profile has no snapshot URI, and calls :func:`grab` here. The RTSP client is FFmpeg's,
through PyAV (``av``): RTSP over TCP (interleaved RTP, so no UDP ports are opened), digest or
basic authentication with the camera's ONVIF credentials, H.264/H.265/MJPEG decoding.

The stream URI comes from the camera, so it is checked before anything is opened
(:func:`stream_url`): only ``rtsp://`` on the ONVIF device's own host (FFmpeg would otherwise read
``file:`` or fetch ``http:`` URLs, and the credentials would go to whatever host the camera names);
the credentials are added here, never taken from the URI.

A grab runs in a worker thread and is bounded by ``timeout_s`` twice over: PyAV's own I/O
timeout interrupts a blocked read, and the loop gives up when the deadline passes, so the thread
never outlives the capture by much. Decoding starts at the first keyframe (a frame decoded from
the middle of a group of pictures is smeared), and a frame larger than :data:`MAX_PIXELS` is
refused rather than converted.
"""

from __future__ import annotations

import io
import time
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
from PIL import Image

from hub.cctv_onvif import CameraFault, FaultKind

MAX_PIXELS: Final = 3840 * 2160
"""The largest frame converted to a JPEG (4K): a camera claiming more is refused, not trusted with memory."""
MAX_PACKETS: Final = 2000
"""Packets read at most while waiting for a keyframe and its picture."""
JPEG_QUALITY: Final = 85
OPTIONS: Final = {
    "rtsp_transport": "tcp",
    # No probing: the SDP and the stream's own SPS/PPS describe the video, and FFmpeg's default analysis of
    # several seconds is what a grab would otherwise spend most of its time on (2.4 s against 0.2 s here).
    "analyzeduration": "0",
    "probesize": "32",
}


def stream_url(camera_id: str, uri: str, device_url: str, user: str, password: str) -> str:
    """``uri`` (from GetStreamUri) with the credentials put in, or CameraFault(PROTOCOL) if it is not acceptable."""
    parts = urlsplit(uri)
    device_host = urlsplit(device_url).hostname
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"the stream URI {uri[:200]!r} is not rtsp://HOST[:PORT]/…")
    if parts.hostname != device_host:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"the stream URI's host {parts.hostname!r} is not the "
                                                         f"camera's ({device_host!r}); its credentials stay with it")
    try:
        port = parts.port
    except ValueError as exc:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"the stream URI {uri[:200]!r} has a bad port") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{port}" if port else "")
    return urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))


def grab(camera_id: str, url: str, timeout_s: float) -> bytes:
    """Open ``url`` (with credentials), decode one picture from the first keyframe on, return it as a JPEG.

    Blocking; run it in a thread. Raises CameraFault: AUTH_REFUSED (401/403), UNREACHABLE (no
    connection, or no picture within ``timeout_s``), PROTOCOL (not a video stream, undecodable, too big).
    """
    deadline = time.monotonic() + timeout_s
    try:
        container = av.open(url, format="rtsp", timeout=(timeout_s, timeout_s),
                            options=OPTIONS)
    except (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as exc:
        raise CameraFault(camera_id, FaultKind.AUTH_REFUSED, f"RTSP: {_safe(exc, url)}") from exc
    except (OSError, av.error.ExitError) as exc:
        raise CameraFault(camera_id, FaultKind.UNREACHABLE, f"RTSP: {_safe(exc, url)}") from exc
    except av.error.FFmpegError as exc:
        # FFmpeg reports a read its timeout interrupted as invalid data: a camera that says nothing is unreachable.
        kind = FaultKind.UNREACHABLE if time.monotonic() >= deadline else FaultKind.PROTOCOL
        raise CameraFault(camera_id, kind, f"RTSP: {_safe(exc, url)}") from exc
    try:
        if not container.streams.video:
            raise CameraFault(camera_id, FaultKind.PROTOCOL, "the RTSP stream has no video")
        stream = container.streams.video[0]
        keyframe_seen = False
        for n, packet in enumerate(container.demux(stream)):
            if time.monotonic() > deadline or n >= MAX_PACKETS:
                break
            keyframe_seen = keyframe_seen or packet.is_keyframe
            if not keyframe_seen:
                continue
            for frame in packet.decode():
                if frame.width * frame.height > MAX_PIXELS:
                    raise CameraFault(camera_id, FaultKind.PROTOCOL,
                                      f"a {frame.width}x{frame.height} frame is larger than {MAX_PIXELS} pixels")
                out = io.BytesIO()
                image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]  # PyAV leaves it unannotated
                image.save(out, format="JPEG", quality=JPEG_QUALITY)
                return out.getvalue()
    except (OSError, av.error.ExitError) as exc:
        raise CameraFault(camera_id, FaultKind.UNREACHABLE, f"RTSP: {_safe(exc, url)}") from exc
    except av.error.FFmpegError as exc:
        raise CameraFault(camera_id, FaultKind.PROTOCOL, f"RTSP: {_safe(exc, url)}") from exc
    finally:
        container.close()
    raise CameraFault(camera_id, FaultKind.UNREACHABLE, f"no picture from the RTSP stream within {timeout_s} s")


def _safe(exc: BaseException, url: str) -> str:
    """The error's text without the credentials FFmpeg quotes back in its file name."""
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, ""))
    return str(exc).replace(url, bare)
