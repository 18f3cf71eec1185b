"""The simulated camera's RTSP server: live H.264 of the camera's picture, behind RTSP digest auth.

``jikimi sim camera --onvif HOST:PORT --rtsp HOST:PORT --id CAM --user U --password P`` streams
``rtsp://HOST:PORT/stream`` (:data:`MOUNT`), which ONVIF GetStreamUri names.

The server is GStreamer's RTSP server (libgstrtspserver, Debian's ``gir1.2-gst-rtsp-server-1.0``),
driven through PyGObject: the RTSP and RTP handling is a maintained C library that real
products ship, not ours. Our part is the picture and its state:

- frames are :func:`edge.sim.camera.render_frame` (the camera id, the time, the current preset as
  text and as the machine-readable band), pushed into an ``appsrc`` at :data:`FPS`;
- the preset comes from ``preset()``, the ONVIF simulator's PTZ state
  (:meth:`edge.sim.camera_onvif.OnvifCameraSim.preset_now`), read on every frame, so a GotoPreset
  shows in the stream as soon as the move ends;
- the encoder is set for low latency: x264 ``tune=zerolatency``, ``speed-preset=ultrafast``, no
  B-frames, a keyframe every second (``key-int-max`` = :data:`FPS`) and SPS/PPS before every
  keyframe, so a client that joins mid-stream shows a picture within a second;
- one pipeline is shared by every client (``shared``), so viewers cost the camera no extra
  encoder, as on a real camera; a client's PLAY asks the encoder for a keyframe at once
  (``force-key-unit``), so a viewer joining a running stream does not wait out the group of pictures.

Authentication: RTSP digest (RFC 2617 style, as RTSP 1.0 uses it; GstRTSPAuth), one user; basic
is not offered, since plain RTSP would carry the password in the clear. A request without valid
credentials is answered 401 and gets no media.

Hostile or broken clients: the request parser is GStreamer's; a client that is not yet
authenticated can do nothing but be refused. At most :data:`MAX_CLIENTS` connections are served
at once; more are closed on arrival (at the reaper's next turn, within 250 ms), and a
connection that has not started playing within :data:`HANDSHAKE_S` is closed, so silent or
stalling connections cannot hold the slots.

GLib runs in one thread per server with its own main context, so several cameras (and tests) can
run in one process and each stops cleanly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from edge.sim.camera import HEIGHT, WIDTH, render_frame

log = logging.getLogger(__name__)

MOUNT: Final = "/stream"
FPS: Final = 12
BITRATE_KBPS: Final = 800
MAX_CLIENTS: Final = 32
ROLE: Final = "viewer"
START_TIMEOUT_S: Final = 10.0
HANDSHAKE_S: float = 10.0
"""How long a connection may take to reach PLAY (a module variable so a test can shorten it)."""
CLOCK_TIME_NONE: Final = 2**64 - 1
"""GStreamer's GST_CLOCK_TIME_NONE: "as soon as possible" for a force-key-unit event."""


_force_key_unit: Any = None
"""GstVideo's upstream force-key-unit event constructor, once :func:`_gst` has run."""


class RtspUnavailable(RuntimeError):
    """GStreamer's RTSP server (or the x264 encoder) is not installed, or the server cannot start."""


def _gst() -> tuple[Any, Any, Any, Any]:
    """(Gst, GstRtspServer, GstRtsp, GLib), initialised; imported here so importing this module needs no GStreamer."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        gi.require_version("GstRtsp", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import GLib, Gst, GstRtsp, GstRtspServer, GstVideo
    except (ImportError, ValueError) as exc:
        raise RtspUnavailable(f"GStreamer's RTSP server is not installed ({exc}); `make system-deps` installs "
                              "gir1.2-gst-rtsp-server-1.0 and the plugins, and the venv needs PyGObject") from exc
    Gst.init(None)
    global _force_key_unit
    _force_key_unit = GstVideo.video_event_new_upstream_force_key_unit
    for element in ("appsrc", "videoconvert", "x264enc", "rtph264pay"):
        if Gst.ElementFactory.find(element) is None:
            raise RtspUnavailable(f"the GStreamer element {element!r} is missing (gstreamer1.0-plugins-base/-good/"
                                  "-ugly)")
    return Gst, GstRtspServer, GstRtsp, GLib


def launch_line() -> str:
    """The media pipeline each RTSP session plays (shared between clients)."""
    caps = f"video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
    # appsrc and the queue keep at most two frames and drop the oldest: a slow encoder shows the newest picture.
    return (f"( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 leaky-type=downstream"
            f" caps={caps} ! queue leaky=downstream max-size-buffers=2 ! videoconvert ! video/x-raw,format=I420"
            f" ! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={FPS} bitrate={BITRATE_KBPS}"
            f" threads=1 ! video/x-h264,profile=constrained-baseline"
            f" ! rtph264pay name=pay0 pt=96 config-interval=-1 )")


@dataclass
class RtspCameraServer:
    """One camera's RTSP server; :func:`serve` runs it."""

    camera_id: str
    user: str
    password: str
    preset: Callable[[], int | None]
    host: str = "127.0.0.1"
    port: int = 0
    clock: Callable[[], float] = time.time
    frames: int = 0
    """Frames pushed into the stream so far (any client's)."""
    clients: int = 0
    """Connections open now."""
    refused: int = 0
    """Connections closed on arrival because :data:`MAX_CLIENTS` were open."""
    stalled: int = 0
    """Connections closed because they did not reach PLAY within :data:`HANDSHAKE_S`."""
    _sources: list[Any] = field(default_factory=list)
    _pending: dict[Any, float] = field(default_factory=dict)
    """Connections not yet playing, and when they arrived (``time.monotonic()``); GLib thread only."""
    _refusing: list[Any] = field(default_factory=list)
    """Connections over the cap, hung up at the reaper's next turn; GLib thread only."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{host}:{self.port}{MOUNT}"

    def url_with_credentials(self) -> str:
        """The stream URL with ``user:password@`` (for clients that take credentials only in the URL)."""
        from urllib.parse import quote

        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{host}:{self.port}{MOUNT}"

    # --- GLib thread ------------------------------------------------------------------------------

    def _build(self, rtsp: Any, methods: Any) -> Any:
        server = rtsp.RTSPServer()
        server.set_address(self.host)
        server.set_service(str(self.port))
        factory = rtsp.RTSPMediaFactory()
        factory.set_launch(launch_line())
        factory.set_shared(True)
        factory.set_latency(0)
        factory.connect("media-configure", self._media_configure)
        permissions = rtsp.RTSPPermissions()
        permissions.add_permission_for_role(ROLE, "media.factory.access", True)
        permissions.add_permission_for_role(ROLE, "media.factory.construct", True)
        factory.set_permissions(permissions)
        server.get_mount_points().add_factory(MOUNT, factory)
        auth = rtsp.RTSPAuth()
        token = rtsp.RTSPToken()
        token.set_string("media.factory.role", ROLE)
        auth.add_digest(self.user, self.password, token)
        auth.set_supported_methods(methods.DIGEST)
        server.set_auth(auth)
        server.connect("client-connected", self._client_connected)
        return server

    def _client_connected(self, server: Any, client: Any) -> None:
        if self.clients >= MAX_CLIENTS:
            self.refused += 1
            log.warning("camera.rtsp_client_refused", extra={"camera": self.camera_id, "clients": self.clients})
            # Not here: GStreamer attaches the connection's watch only after this signal, and a
            # socket shut down before that left the watch polling a closed connection (once in
            # a full run: 481,104 GLib criticals in 6 s). The reaper hangs it up, attached.
            self._refusing.append(client)
            return
        self.clients += 1
        self._pending[client] = time.monotonic()
        client.connect("closed", self._client_closed)
        client.connect("play-request", self._play_request)

    def _close_stalled(self) -> bool:
        refusing, self._refusing = self._refusing, []
        for client in refusing:
            _hang_up(client)
        now = time.monotonic()
        for client, since in list(self._pending.items()):
            if now - since > HANDSHAKE_S:
                del self._pending[client]
                self.stalled += 1
                _hang_up(client)
        return True  # keep the timer

    def _play_request(self, client: Any, context: Any) -> None:
        self._pending.pop(client, None)
        with self._lock:
            payloaders = [src.get_parent().get_child_by_name("pay0") for src in self._sources]
        for pay in payloaders:
            if pay is not None:
                pay.send_event(_force_key_unit(CLOCK_TIME_NONE, True, 0))

    def _client_closed(self, client: Any) -> None:
        self.clients -= 1
        self._pending.pop(client, None)

    def _media_configure(self, factory: Any, media: Any) -> None:
        src = media.get_element().get_child_by_name("src")
        with self._lock:
            self._sources.append(src)
        media.connect("unprepared", self._media_unprepared, src)

    def _media_unprepared(self, media: Any, src: Any) -> None:
        with self._lock:
            if src in self._sources:
                self._sources.remove(src)

    def _push(self, gst: Any) -> bool:
        with self._lock:
            sources = list(self._sources)
        if sources:
            self.frames += 1
            data = render_frame(self.camera_id, self.clock(), preset=self.preset(), frame=self.frames).tobytes()
            for src in sources:
                src.emit("push-buffer", gst.Buffer.new_wrapped(data))
        return True  # keep the timer


def _hang_up(client: Any) -> None:
    """End a connection the way a client hanging up does: shut its socket down, so the server's
    own end-of-stream path closes and frees it (and says ``closed``).

    Not ``client.close()``: that closes the connection under the client's watch, and a watch left
    on a closed connection (one attached after the close, in ``client-connected``) polls it forever,
    a GLib critical per turn at full speed and growing memory: once a CI run's log reached 1.6 GB."""
    conn = client.get_connection()
    sock = conn.get_read_socket() if conn is not None else None
    if sock is not None:
        sock.shutdown(True, True)


@dataclass
class _Running:
    thread: threading.Thread
    loop: Any
    context: Any
    server: Any
    source_id: int


@contextmanager
def serve(camera_id: str, *, user: str, password: str, preset: Callable[[], int | None], host: str = "127.0.0.1",
          port: int = 0, clock: Callable[[], float] = time.time) -> Iterator[RtspCameraServer]:
    """Run one camera's RTSP server (in its own GLib thread) until the block ends.

    Raises :class:`RtspUnavailable` if GStreamer is missing or the address cannot be bound.
    """
    if not user or not password:
        raise ValueError("an RTSP camera needs a user and a password")
    gst, rtsp, rtsp_base, glib = _gst()
    cam = RtspCameraServer(camera_id, user, password, preset, host=host, port=port, clock=clock)
    context = glib.MainContext.new()
    server = cam._build(rtsp, rtsp_base.RTSPAuthMethod)
    try:
        source_id = server.attach(context)
    except glib.Error as exc:
        raise RtspUnavailable(f"cannot listen on {host}:{port}: {exc.message}") from exc
    if source_id == 0:
        raise RtspUnavailable(f"cannot listen on {host}:{port}")
    cam.port = int(server.get_bound_port())
    timer = glib.timeout_source_new(1000 // FPS)
    timer.set_callback(lambda *_: cam._push(gst))
    timer.attach(context)
    reaper = glib.timeout_source_new(250)
    reaper.set_callback(lambda *_: cam._close_stalled())
    reaper.attach(context)
    loop = glib.MainLoop.new(context, False)
    thread = threading.Thread(target=loop.run, name=f"rtsp-{camera_id}", daemon=True)
    thread.start()
    log.info("camera.rtsp_listening", extra={"camera": camera_id, "url": cam.url})
    try:
        yield cam
    finally:
        done = threading.Event()

        def stop(*_: object) -> bool:
            server.client_filter(lambda _server, _client: rtsp.RTSPFilterResult.REMOVE)
            pool = server.get_session_pool()
            pool.filter(lambda _pool, _session: rtsp.RTSPFilterResult.REMOVE)
            timer.destroy()
            reaper.destroy()
            found = context.find_source_by_id(source_id)
            if found is not None:
                found.destroy()
            done.set()
            loop.quit()
            return False

        idle = glib.idle_source_new()
        idle.set_priority(glib.PRIORITY_HIGH)  # before any client's I/O, whatever state they are in
        idle.set_callback(stop)
        idle.attach(context)
        done.wait(START_TIMEOUT_S)
        thread.join(START_TIMEOUT_S)
