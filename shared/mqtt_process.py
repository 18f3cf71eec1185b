"""An MQTT link whose socket work runs in a child process: :class:`ProcessTransport`.

Why: the TLS and paho's packet handling of a busy connection cost its owner's process CPU under
that process's one GIL. In the city hub at 40,000 records/s that was 0.29 of a core on the event
loop, beside a writer thread needing the same GIL for its own 0.57 (``jikimi bench ingest``).
Here the socket work runs in a child (``python -I -m shared.mqtt_process``) with its own GIL.
The owner's :class:`~shared.mqtt.Mqtt` is unchanged: its generations, manual acks, bounded inbox
and reconnects (shared/mqtt.py rules 1-5). Only its :class:`~shared.mqtt.Link` is elsewhere.

Rules and invariants:

1. One child per link. The child makes one real :class:`~shared.mqtt.PahoTransport` link and
   exits when it ends. Its end, however it comes (a crash, a kill), ends the link with
   :class:`MqttError`, so the owner reconnects with a new child.
2. Parent and child speak over the child's stdin and stdout in frames: a 4-byte big-endian
   length, then one msgpack :data:`ToChild` or :data:`ToParent`. The child's stderr is the
   parent's (its logs go to the same journal); its own stdout is moved to stderr, so a stray
   print cannot corrupt a frame. A frame that does not decode, or is longer than
   :data:`MAX_FRAME`, ends the link. The child never sends one: a message that would not fit is
   acknowledged, dropped and logged (``mqtt_process.oversized_dropped``), not delivered again
   and again at each reconnect (the broker's own limit, trust/broker.py ``MAX_PACKET_SIZE``,
   is far below it).
3. A message's ``received`` is the child's stamp of reading it off the socket: the owner's
   latencies start at the socket, not at the pipe.
4. Backpressure. The owner's ``reading(False)`` stops the child's socket reads. So does a full
   window: the child stops reading once ``window`` messages it sent are not yet taken off the
   pipe by the parent (the parent says how many it took, ``Taken``, as it reads them), and so
   does its write buffer over :data:`HIGH_WATER` bytes. The child reads only while all three
   allow it. So between the socket and the owner's inbox there are never more than ``window``
   messages (and one socket read's worth): with ``window`` under half the owner's incoming
   bound, the owner's own rule (shared/mqtt.py rule 4) holds as in process.
5. The parent's end is the child's. At EOF on its stdin the child closes the link at once, with
   no clean DISCONNECT (the broker sends the Will, as for any client it lost), and exits.
6. One build. The frames are this file's, so parent and child must run the same copy of it: the
   parent's first frame (:class:`Hello`, whose shape never changes) names a digest of the file
   as the parent imported it, and a child that imported another (the package was upgraded
   while the hub ran) says so and exits instead of misreading frames. The hub then needs a
   restart, and its log says why at every attempt.
7. TLS. An ``ssl.SSLContext`` cannot cross a process, so the transport is given the identity's
   files, and the child builds its context from them with :func:`shared.tls.client_context`:
   TLS 1.3, the broker verified, as in process. ``ConnectOptions.tls`` is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from shared import logs
from shared.errors import JikimiError, MqttError
from shared.mqtt import ConnectOptions, Deliver, Link, PahoTransport, Will, end_waits
from shared.tls import TlsFiles, client_context

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024 * 1024
"""The longest frame either side accepts (an MQTT payload is at most 256 MiB, but neither the
broker's config nor any message of the contract comes near this)."""
START_S = 15.0
"""How long a child may take to start (the interpreter and its imports) on top of the connect's
own timeout."""
HIGH_WATER = 1024 * 1024
"""The child stops reading its socket while this many bytes wait in the pipe to the parent (rule 4)."""
WINDOW = 100
"""Messages the child may have in the pipe, not yet taken by the parent, unless told otherwise (rule 4)."""


# --- frames ------------------------------------------------------------------------------------

BUILD = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
"""This file's digest as this process imported it (rule 6)."""


class Hello(msgspec.Struct, tag="hello", array_like=True):
    """The parent's first frame (rule 6). Never change its shape."""

    build: str



class Open(msgspec.Struct, tag="open", array_like=True):
    host: str
    port: int
    client_id: str
    ca: str
    cert: str
    key: str
    keepalive_s: int
    timeout_s: float
    will: Will | None
    receive_maximum: int | None
    session_expiry_s: int | None
    manual_ack: bool
    max_inflight: int | None
    log_level: int
    window: int


class Publish(msgspec.Struct, tag="pub", array_like=True):
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscribe(msgspec.Struct, tag="sub", array_like=True):
    id: int
    topic: str
    qos: int


class Acks(msgspec.Struct, tag="acks", array_like=True):
    qos: int
    mids: list[int]


class Reading(msgspec.Struct, tag="reading", array_like=True):
    on: bool


class Taken(msgspec.Struct, tag="taken", array_like=True):
    n: int


class Disconnect(msgspec.Struct, tag="disconnect", array_like=True):
    pass


class Connected(msgspec.Struct, tag="connected", array_like=True):
    pass


class Delivered(msgspec.Struct, tag="msg", array_like=True):
    topic: str
    payload: bytes
    qos: int
    mid: int
    received: float


class Done(msgspec.Struct, tag="done", array_like=True):
    id: int
    error: str = ""


class Closed(msgspec.Struct, tag="closed", array_like=True):
    error: str | None


ToChild = Hello | Open | Publish | Subscribe | Acks | Reading | Taken | Disconnect
ToParent = Connected | Delivered | Done | Closed

_encoder = msgspec.msgpack.Encoder()


def _frame(msg: ToChild | ToParent) -> bytearray:
    buf = bytearray(4)
    _encoder.encode_into(msg, buf, 4)
    buf[:4] = (len(buf) - 4).to_bytes(4, "big")
    return buf


class _Frames:
    """Rule 2: cuts a byte stream into frames and decodes each."""

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(kind)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The frames ``data`` completes; :class:`MqttError` for a frame too long or undecodable."""
        buf = self._buf
        buf += data
        out = []
        at = 0
        view = memoryview(buf)
        try:
            while len(buf) - at >= 4:
                n = int.from_bytes(view[at:at + 4], "big")
                if n > MAX_FRAME:
                    raise MqttError(f"a frame of {n} bytes from the MQTT process is over the {MAX_FRAME} byte limit")
                if len(buf) - at - 4 < n:
                    break
                try:
                    out.append(self._decoder.decode(view[at + 4:at + 4 + n]))
                except msgspec.DecodeError as exc:
                    raise MqttError(f"an undecodable frame from the MQTT process: {exc}") from None
                at += 4 + n
        finally:
            view.release()
        if at:
            del buf[:at]
        return out


# --- the parent's side ---------------------------------------------------------------------------


class ProcessTransport:
    """Makes links whose socket work runs in a child process (this module's rules)."""

    def __init__(self, tls: TlsFiles, *, window: int = WINDOW, python: str = sys.executable) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self._tls = tls
        self._window = window
        self._python = python
        self._last: _ProcessLink | None = None

    def link(self, options: ConnectOptions, deliver: Deliver) -> Link:
        self._last = _ProcessLink(options, deliver, self._tls, self._python, self._window)
        return self._last

    @property
    def pid(self) -> int | None:
        """The newest link's child, while it runs (for whoever counts this owner's CPU)."""
        last = self._last
        if last is None or last._proc is None or last._exited.is_set():
            return None
        return last._proc.get_pid()


class _ProcessLink(asyncio.SubprocessProtocol):
    def __init__(self, options: ConnectOptions, deliver: Deliver, tls: TlsFiles, python: str, window: int) -> None:
        self._window = window
        self._loop = asyncio.get_running_loop()
        self._options = options
        self._deliver = deliver
        self._tls = tls
        self._python = python
        self._proc: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._frames = _Frames(ToParent)
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        self._exited = asyncio.Event()
        self._error: MqttError | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._acks: dict[int, list[int]] = {}
        self._reading = True

    # --- Link ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        o = self._options
        try:
            try:
                proc, _ = await self._loop.subprocess_exec(
                    lambda: self, self._python, "-I", "-m", "shared.mqtt_process",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
            except OSError as exc:
                raise MqttError(f"could not start the MQTT process: {exc}") from None
            self._proc = proc
            stdin = proc.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            self._stdin = stdin
            self._send(Hello(BUILD))
            self._send(Open(host=o.host, port=o.port, client_id=o.client_id, ca=str(self._tls.ca),
                            cert=str(self._tls.cert), key=str(self._tls.key), keepalive_s=o.keepalive_s,
                            timeout_s=o.timeout_s, will=o.will, receive_maximum=o.receive_maximum,
                            session_expiry_s=o.session_expiry_s, manual_ack=o.manual_ack,
                            max_inflight=o.max_inflight, log_level=logging.getLogger().getEffectiveLevel(),
                            window=self._window))
            try:
                async with asyncio.timeout(o.timeout_s + START_S):
                    await self._connack
            except TimeoutError:
                raise MqttError("Operation timed out") from None
        except MqttError:
            self.close()
            await self._reaped()  # a failed connect leaves no child behind
            raise
        except BaseException:
            self.close()
            raise

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._check_open()
        await self._call(lambda i: Publish(i, topic, payload, qos, retain))

    async def subscribe(self, topic: str, qos: int) -> None:
        self._check_open()
        await self._call(lambda i: Subscribe(i, topic, qos))

    def ack(self, mid: int, qos: int) -> None:
        if self._closed.is_set():
            return
        if not self._acks:
            self._loop.call_soon(self._flush_acks)
        self._acks.setdefault(qos, []).append(mid)

    def reading(self, on: bool) -> None:
        if on != self._reading and not self._closed.is_set():
            self._reading = on
            self._send(Reading(on))

    async def wait_closed(self) -> MqttError | None:
        await self._closed.wait()
        return self._error

    async def _reaped(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_S):
                    await self._exited.wait()

    async def disconnect(self) -> None:
        if not self._closed.is_set():
            self._send(Disconnect())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.timeout_s):
                    await self._closed.wait()
        self.close()
        await self._reaped()

    def close(self) -> None:
        self._finish(MqttError("connection closed"))
        if self._proc is not None and not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._proc is not None and self._exited.is_set():
            self._proc.close()

    # --- helpers ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise MqttError(f"not connected: {self._error or 'disconnected'}")

    async def _call(self, make: Any) -> None:
        i = next(self._ids)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending[i] = fut
        try:
            self._send(make(i))
            await fut
        finally:
            self._pending.pop(i, None)

    def _send(self, msg: ToChild) -> None:
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.write(_frame(msg))

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        if not self._closed.is_set():
            for qos, mids in acks.items():
                self._send(Acks(qos, mids))

    def _finish(self, error: MqttError | None) -> None:
        if self._closed.is_set():
            return
        self._error = error
        self._closed.set()
        end_waits(self._connack, self._pending, error)

    # --- the child's side of the pipes (SubprocessProtocol) ------------------------------------

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except MqttError as exc:
            log.error("mqtt_process.bad_frame", extra={"error": str(exc)})
            self._finish(exc)
            self.close()
            return
        taken = 0
        for f in frames:
            if isinstance(f, Delivered):
                taken += 1
                if not self._closed.is_set():
                    self._deliver(f.topic, f.payload, f.qos, f.mid, f.received)
            elif isinstance(f, Done):
                fut = self._pending.pop(f.id, None)
                if fut is not None and not fut.done():
                    if f.error:
                        fut.set_exception(MqttError(f.error))
                    else:
                        fut.set_result(None)
            elif isinstance(f, Connected):
                if not self._connack.done():
                    self._connack.set_result(None)
            else:
                self._finish(MqttError(f.error) if f.error is not None else None)
        if taken:
            self._send(Taken(taken))  # rule 4: the child's window opens again

    def connection_lost(self, exc: Exception | None) -> None:
        """The child has exited and both its pipes are read to the end (so a last ``Closed``
        was heard first)."""
        self._exited.set()
        code = self._proc.get_returncode() if self._proc is not None else None
        self._finish(MqttError(f"the MQTT process ended (exit code {code})"))
        if self._proc is not None:
            self._proc.close()


# --- the child ---------------------------------------------------------------------------------


class _Out(asyncio.Protocol):
    """The child's pipe to its parent; rule 4's second half (a full pipe stops the socket reads)."""

    def __init__(self, on_room: Any) -> None:
        self.room = True
        self._on_room = on_room
        self.lost = asyncio.Event()

    def pause_writing(self) -> None:
        self.room = False
        self._on_room()

    def resume_writing(self) -> None:
        self.room = True
        self._on_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


class _In(asyncio.Protocol):
    def __init__(self, queue: asyncio.Queue[ToChild | None]) -> None:
        self._frames = _Frames(ToChild)
        self._queue = queue

    def data_received(self, data: bytes) -> None:
        try:
            for f in self._frames.feed(data):
                self._queue.put_nowait(f)
        except MqttError as exc:
            log.error("mqtt_process.bad_frame", extra={"error": str(exc)})
            self._queue.put_nowait(None)

    def eof_received(self) -> bool | None:
        self._queue.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(None)


async def _child(out_fd: int) -> int:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[ToChild | None] = asyncio.Queue()
    await loop.connect_read_pipe(lambda: _In(inbox), os.fdopen(0, "rb", buffering=0))
    owner_reads = True
    in_pipe = 0  # messages sent, not yet taken by the parent
    window = WINDOW
    link: Link | None = None

    def apply() -> None:  # rule 4
        if link is not None:
            link.reading(owner_reads and in_pipe < window and out.room)

    out_t, out = await loop.connect_write_pipe(lambda: _Out(apply), os.fdopen(out_fd, "wb", buffering=0))
    out_t.set_write_buffer_limits(high=HIGH_WATER)

    def send(msg: ToParent) -> None:
        if not out_t.is_closing():
            out_t.write(_frame(msg))

    hello = await inbox.get()
    if not isinstance(hello, Hello) or hello.build != BUILD:  # rule 6
        theirs = hello.build if isinstance(hello, Hello) else "unknown"
        send(Closed(f"the MQTT process runs another build of {Path(__file__).name} ({BUILD}) than the hub"
                    f" ({theirs}): was jikimi upgraded while this process ran? Restart it"))
        await _flushed(out_t, out)
        return 2
    first = await inbox.get()
    if not isinstance(first, Open):
        return 2
    logs.setup(first.log_level, stream=sys.stderr)
    window = max(1, first.window)
    try:
        tls = client_context(TlsFiles(ca=Path(first.ca), cert=Path(first.cert), key=Path(first.key)))
    except JikimiError as exc:  # a file gone or unreadable since the parent checked it
        send(Closed(str(exc)))
        return await _flushed(out_t, out)
    options = ConnectOptions(host=first.host, port=first.port, client_id=first.client_id, tls=tls,
                             keepalive_s=first.keepalive_s, will=first.will, timeout_s=first.timeout_s,
                             receive_maximum=first.receive_maximum, session_expiry_s=first.session_expiry_s,
                             manual_ack=first.manual_ack, max_inflight=first.max_inflight)

    def deliver(topic: str, payload: bytes, qos: int, mid: int, received: float | None = None) -> None:
        nonlocal in_pipe
        if len(payload) + len(topic) > MAX_FRAME - 1024:  # rule 2: never a frame the parent refuses
            log.error("mqtt_process.oversized_dropped", extra={"topic": topic, "bytes": len(payload)})
            if qos > 0 and link is not None:
                link.ack(mid, qos)  # else the broker would send it again at every connect
            return
        send(Delivered(topic, payload, qos, mid, time.time() if received is None else received))
        in_pipe += 1
        if in_pipe == window:
            apply()

    link = PahoTransport().link(options, deliver)
    try:
        await link.connect()
    except MqttError as exc:
        send(Closed(str(exc)))
        return await _flushed(out_t, out)
    send(Connected())
    tasks: set[asyncio.Task[None]] = set()

    async def call(i: int, op: Any) -> None:
        try:
            await op
        except MqttError as exc:
            send(Done(i, str(exc) or type(exc).__name__))
        else:
            send(Done(i))

    async def commands() -> None:
        nonlocal in_pipe, owner_reads
        assert link is not None
        while (f := await inbox.get()) is not None:
            if isinstance(f, Acks):
                for mid in f.mids:
                    link.ack(mid, f.qos)
            elif isinstance(f, Publish):
                t = asyncio.create_task(call(f.id, link.publish(f.topic, f.payload, f.qos, f.retain)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            elif isinstance(f, Subscribe):
                t = asyncio.create_task(call(f.id, link.subscribe(f.topic, f.qos)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            elif isinstance(f, Taken):
                in_pipe = max(0, in_pipe - f.n)
                apply()
            elif isinstance(f, Reading):
                owner_reads = f.on
                apply()
            elif isinstance(f, Disconnect):
                await link.disconnect()
        link.close()  # rule 5: the parent is gone

    reader = asyncio.create_task(commands())
    error = await link.wait_closed()
    reader.cancel()
    send(Closed(str(error) if error is not None else None))
    return await _flushed(out_t, out)


async def _flushed(out_t: asyncio.WriteTransport, out: _Out) -> int:
    out_t.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            await out.lost.wait()
    return 0


def main() -> int:
    # rule 5: the child ends with its parent's pipe, not with a signal meant for the parent (a
    # terminal's Ctrl-C, systemd's SIGTERM to the whole unit), which would cut the parent's
    # clean stop short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # rule 2: a stray print goes to stderr, never into a frame
    try:
        return asyncio.run(_child(out_fd))
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
