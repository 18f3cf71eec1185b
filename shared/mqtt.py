"""The one MQTT 5 client of jikimi: a connection owner over an injectable transport.

The edge's uplink and the hub's connection both run on :class:`Mqtt`; the real transport is
:class:`PahoTransport` (paho-mqtt's public API, driven by the running event loop, no thread of
its own); tests pass a fake that implements :class:`Transport`.

Rules and invariants:

1. One owner per connection: :meth:`Mqtt.run` connects, runs the caller's *session* on the
   :class:`Connection`, and when the connection ends (or cannot be made) reports the error and
   reconnects after a full-jitter backoff (:func:`shared.retry.backoff_delays`), reset by every
   successful connect. It ends when ``stop`` is set (the session returns, then a clean
   DISCONNECT: the Will is not sent) or when it is cancelled (also a clean DISCONNECT), even
   when the connection is lost at the same moment: a cancel never turns into a reconnect
   (:func:`_serve` says why it uses no TaskGroup).
2. A session ends when its connection ends: :meth:`Connection.publish` and ``subscribe`` raise
   :class:`MqttError`, and the messages iterator yields what arrived before the end, then raises.
3. Every connection has a *generation* (1, 2, ...), carried by each :class:`Message`. With
   ``manual_ack`` an incoming QoS>0 message is PUBACKed only when the caller says so with
   :meth:`Mqtt.ack`, and only on the connection it came on: after a reconnect the broker
   redelivers whatever was not acknowledged, so acks for an older generation are dropped.
4. The incoming queue is bounded (``incoming_max``, 0 = unbounded). When it holds half its
   bound, the connection stops reading its socket; it reads again once the queue is down to a
   quarter. The broker's sends then wait in TCP's buffers and the broker's own queue (a
   broker that ignores Receive Maximum, as Mosquitto 2.0.11 does after the first PUBACK,
   cannot flood the client: 13,000 retained births and statuses of a city's 6,500 sites
   arrive at every hub start). One read can still deliver more than the half left (paho reads
   several packets a call), and a pause never outlasts half the keep-alive (a connection that
   reads nothing is dropped by its keep-alive check); a message arriving when the queue is full
   is PUBACKed at once (with ``manual_ack``), dropped, and counted (``overflow``, and the
   ``on_overflow`` hook): never silently.
5. Operations time out after ``ConnectOptions.timeout_s`` unless told otherwise; ``math.inf``
   waits for the PUBACK however long it takes. No ``asyncio.wait_for`` (on Python 3.11 it can
   swallow a cancellation that races the result).
6. Every socket has TCP_NODELAY (as the broker has, trust/broker.py ``set_tcp_nodelay``): a
   small packet is sent at once instead of waiting for the peer's delayed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shared.errors import MqttError
from shared.retry import backoff_delays

log = logging.getLogger(__name__)

class Deliver(Protocol):
    """How a transport hands over an incoming message, on the loop: ``received`` is when it was
    read off the socket, if the transport knows better than the moment of this call
    (shared/mqtt_process.py rule 3)."""

    def __call__(self, topic: str, payload: bytes, qos: int, mid: int, received: float | None = None) -> None: ...


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class ConnectOptions:
    """One connection attempt's settings (made afresh for every attempt, so a renewed
    certificate or a new Will timestamp is picked up)."""

    host: str
    port: int
    client_id: str
    tls: ssl.SSLContext
    keepalive_s: int = 60
    will: Will | None = None
    timeout_s: float = 10.0
    """CONNACK, SUBACK and PUBACK waits, unless an operation is given its own."""
    receive_maximum: int | None = None
    session_expiry_s: int | None = None
    manual_ack: bool = False
    max_inflight: int | None = None


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    """Which connection it came on (:meth:`Mqtt.ack` takes it back)."""
    received: float = field(default=0.0, compare=False)
    """Wall-clock time the client read it off the socket (paho's callback, before any queue)."""


def _no_delay(sock: Any) -> None:
    """Rule 6: small packets (PUBACKs, acks, a batch) go out at once, not after the peer's delayed
    ACK (Nagle's algorithm): a receiver that acks one batch before it takes the next otherwise
    gets about 30 batches a second whatever their size. paho hands us an ``ssl.SSLSocket``."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Link(Protocol):
    """One broker connection as a transport makes it. Every method is called on the event loop."""

    async def connect(self) -> None:
        """Connect and wait for the CONNACK; :class:`MqttError` if refused, unreachable or late."""

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Send; return when the broker has it (PUBACK for QoS 1). MqttError if the link ends first."""

    async def subscribe(self, topic: str, qos: int) -> None:
        """Subscribe; return at the SUBACK. MqttError if the link ends first."""

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge an incoming message (manual ack); nothing once the link has ended."""

    async def wait_closed(self) -> MqttError | None:
        """Wait until the link has ended; the error, or None after a clean DISCONNECT."""

    async def disconnect(self) -> None:
        """Clean DISCONNECT (the Will is not sent) and wait for it; never raises."""

    def close(self) -> None:
        """End the link at once (idempotent)."""

    def reading(self, on: bool) -> None:
        """Stop (``False``) or go on (``True``) reading the socket (rule 4); idempotent."""


class Transport(Protocol):
    """Makes links. :class:`PahoTransport` is the real one; tests pass a fake."""

    def link(self, options: ConnectOptions, deliver: Deliver) -> Link: ...


# --- the owner -------------------------------------------------------------------------------


class _Inbox:
    """The bounded incoming queue of one connection; after the connection ends it is drained,
    then iteration raises."""

    def __init__(self, maxsize: int, on_room: Callable[[], None] | None = None) -> None:
        self._items: deque[Message] = deque()
        self._max = maxsize
        self._on_room = on_room
        """Called when a message is taken and the queue is down to a quarter of its bound (rule 4)."""
        self._waiter: asyncio.Future[None] | None = None
        self._ended: MqttError | None = None
        self._drained = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return self._max > 0 and len(self._items) >= self._max

    def half_full(self) -> bool:
        return self._max > 0 and len(self._items) >= max(1, self._max // 2)

    def put(self, msg: Message) -> None:
        self._items.append(msg)
        self._wake()

    def end(self, error: MqttError) -> None:
        self._ended = error
        if not self._items:
            self._drained.set()
        self._wake()

    async def drained(self) -> None:
        await self._drained.wait()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        while not self._items:
            if self._ended is not None:
                raise MqttError(f"disconnected during message iteration: {self._ended}") from self._ended
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        msg = self._items.popleft()
        if self._ended is not None and not self._items:
            self._drained.set()
        if self._on_room is not None and len(self._items) <= self._max // 4:
            self._on_room()
        return msg


class Connection:
    """One live connection, handed to the session by :meth:`Mqtt.run`."""

    def __init__(self, transport: Transport, options: ConnectOptions, generation: int, incoming_max: int,
                 on_overflow: Callable[[], None]) -> None:
        self.generation = generation
        self._options = options
        self._inbox = _Inbox(incoming_max, self._room)
        self._on_overflow = on_overflow
        self._paused = False
        self.link = transport.link(options, self._receive)

    @property
    def messages(self) -> AsyncIterator[Message]:
        """Incoming messages in arrival order; raises :class:`MqttError` once the connection has
        ended and everything that arrived before is taken."""
        return self._inbox

    @property
    def queued(self) -> int:
        return len(self._inbox)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      timeout_s: float | None = None) -> None:
        async with self._deadline(timeout_s):
            await self.link.publish(topic, payload, qos, retain)

    async def subscribe(self, topic: str, *, qos: int = 1, timeout_s: float | None = None) -> None:
        async with self._deadline(timeout_s):
            await self.link.subscribe(topic, qos)

    @contextlib.asynccontextmanager
    async def _deadline(self, timeout_s: float | None) -> AsyncIterator[None]:
        t = self._options.timeout_s if timeout_s is None else timeout_s
        if t == math.inf:
            yield
            return
        try:
            async with asyncio.timeout(t):
                yield
        except TimeoutError:
            raise MqttError("Operation timed out") from None

    def _receive(self, topic: str, payload: bytes, qos: int, mid: int, received: float | None = None) -> None:
        if self._inbox.full():  # rule 4
            if qos > 0 and self._options.manual_ack:
                self.link.ack(mid, qos)
            self._on_overflow()
            return
        self._inbox.put(Message(topic, payload, qos, mid, self.generation,
                                time.time() if received is None else received))
        if not self._paused and self._inbox.half_full():  # rule 4
            self._paused = True
            self.link.reading(False)

    def _room(self) -> None:
        if self._paused:
            self._paused = False
            self.link.reading(True)

    async def _watch(self) -> None:
        """Rule 2: end the session when the link ends (after the inbox is drained)."""
        error = await self.link.wait_closed() or MqttError("the broker closed the connection")
        self._inbox.end(error)
        await self._inbox.drained()
        raise error


Session = Callable[[Connection], Awaitable[None]]


class Mqtt:
    """The owner of one MQTT connection (rules 1-5 at the top of this file)."""

    def __init__(
        self,
        options: Callable[[], ConnectOptions],
        *,
        transport: Transport | None = None,
        incoming_max: int = 0,
        backoff: tuple[float, float] = (0.2, 5.0),
        on_overflow: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._options = options
        self._transport: Transport = transport or PahoTransport()
        self._incoming_max = incoming_max
        self._backoff = backoff
        self._on_overflow = on_overflow
        self._sleep = sleep
        self._rng = rng
        self._conn: Connection | None = None
        self.generation = 0
        self.connects = 0
        self.overflow = 0
        self.last_error = ""

    @property
    def connection(self) -> Connection | None:
        """The live connection, or None between connections."""
        return self._conn

    def ack(self, generation: int, mids: Iterable[int], qos: int = 1) -> None:
        """PUBACK ``mids`` if they came on the live connection; drop them otherwise (rule 3)."""
        conn = self._conn
        if conn is None or conn.generation != generation:
            return
        for mid in mids:
            conn.link.ack(mid, qos)

    async def run(self, session: Session, *, stop: asyncio.Event | None = None,
                  on_lost: Callable[[MqttError], Awaitable[None]] | None = None) -> None:
        """Keep a connection and run ``session`` on each one until ``stop`` is set (or until
        cancelled). ``on_lost`` hears about every failed or ended connection."""
        delays = self._delays()
        while stop is None or not stop.is_set():
            conn = Connection(self._transport, self._options(), self.generation + 1, self._incoming_max,
                              self._overflowed)
            try:
                try:
                    await conn.link.connect()
                    self.generation = conn.generation
                    self.connects += 1
                    self._conn = conn
                    delays = self._delays()
                    await _serve(session, conn)
                finally:
                    self._conn = None
                    try:
                        await conn.link.disconnect()
                    finally:
                        conn.link.close()
            except* MqttError as group:
                errors = list(_leaves(group))
                self.last_error = "; ".join(str(e) for e in errors)
                if on_lost is not None:
                    await on_lost(errors[0])
            if stop is not None and stop.is_set():
                break
            await self._pause(next(delays), stop)

    def _delays(self) -> Iterator[float]:
        return backoff_delays(*self._backoff, rng=self._rng)

    async def _pause(self, delay: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self._sleep(delay)
            return
        sleeping = asyncio.ensure_future(self._sleep(delay))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopping.cancel()

    def _overflowed(self) -> None:
        self.overflow += 1
        if self._on_overflow is not None:
            self._on_overflow()


async def _serve(session: Session, conn: Connection) -> None:
    """Run ``session`` on ``conn`` until it returns or the connection ends (rule 2); raise what
    ended it, as an exception group.

    Two plain tasks, not a TaskGroup: on Python 3.11, a TaskGroup whose child fails as its
    parent is cancelled raises the child's error and drops the cancellation, and :meth:`Mqtt.run`
    would take that error for a lost connection and connect again instead of ending (rule 1).
    Here a cancel of the owner's task is raised by the wait itself and never caught.
    """
    work = asyncio.ensure_future(session(conn))
    watch = asyncio.ensure_future(conn._watch())
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        work.cancel()  # the session ends with its connection, the watcher with its session
        watch.cancel()
        await asyncio.wait((work, watch))
    errors = [exc for t in (work, watch) if not t.cancelled() and (exc := t.exception()) is not None]
    if errors:
        raise BaseExceptionGroup("the MQTT session ended", errors)


def _leaves(group: BaseExceptionGroup[MqttError]) -> Iterator[MqttError]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


# --- the real transport ----------------------------------------------------------------------


def end_waits(connack: asyncio.Future[None], pending: dict[int, asyncio.Future[None]],
              error: MqttError | None) -> None:
    """A link has ended (``error``, or None after a clean DISCONNECT): its CONNACK wait and every
    operation still waiting on it fail with the reason. Every :class:`Link` ends this way."""
    lost = error or MqttError("disconnected")
    if not connack.done():
        connack.set_exception(lost)
        connack.exception()  # retrieved: nobody may be awaiting it any more
    for fut in pending.values():
        if not fut.done():
            fut.set_exception(MqttError(f"connection lost: {lost}"))
    pending.clear()


class PahoTransport:
    """paho-mqtt (public API only) driven by the running event loop: the socket is watched with
    ``add_reader``/``add_writer``, keepalive runs on a timer; only the blocking TCP connect and
    TLS handshake run in a worker thread."""

    def link(self, options: ConnectOptions, deliver: Deliver) -> Link:
        return _PahoLink(options, deliver)


_paho_log = logging.getLogger("mqtt")


class _PahoLink:
    def __init__(self, options: ConnectOptions, deliver: Deliver) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._options = options
        self._deliver = deliver
        self._fd = -1
        self._paused_at: float | None = None
        """When reading stopped (rule 4); None while reading."""
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed = asyncio.Event()
        self._error: MqttError | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=options.client_id, protocol=paho.MQTTv5,
                        reconnect_on_failure=False, manual_ack=options.manual_ack)
        c.enable_logger(_paho_log)
        c.tls_set_context(options.tls)
        if options.will is not None:
            w = options.will
            c.will_set(w.topic, w.payload, w.qos, w.retain)
        if options.max_inflight is not None:
            c.max_inflight_messages_set(options.max_inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        self._client = c

    # --- Link ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        o = self._options
        props: Properties | None = None
        if o.receive_maximum is not None or o.session_expiry_s is not None:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if o.receive_maximum is not None:
                props.ReceiveMaximum = o.receive_maximum
            if o.session_expiry_s is not None:
                props.SessionExpiryInterval = o.session_expiry_s
        # Every attempt is a new paho client, whose "clean start on the first connect only" would
        # clean every time: with a session expiry, ask to resume the session instead, so what was
        # queued for this client id while it was away is delivered, not lost and asked for again.
        clean = o.session_expiry_s is None
        connect = functools.partial(self._client.connect, o.host, o.port, o.keepalive_s, clean_start=clean,
                                    properties=props)
        try:
            try:
                await self._loop.run_in_executor(None, connect)  # blocks on TCP and the TLS handshake
            except (OSError, paho.WebsocketConnectionError) as exc:
                raise MqttError(str(exc)) from None
            try:
                async with asyncio.timeout(o.timeout_s):
                    await self._connack
            except TimeoutError:
                raise MqttError("Operation timed out") from None
        except BaseException:
            self.close()
            raise

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._check_open()
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"could not publish to {topic}: {paho.error_string(info.rc)}")
        if info.is_published():
            return
        await self._wait(info.mid)

    async def subscribe(self, topic: str, qos: int) -> None:
        self._check_open()
        rc, mid = self._client.subscribe(topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"could not subscribe to {topic}: {paho.error_string(rc)}")
        await self._wait(mid)

    def ack(self, mid: int, qos: int) -> None:
        if not self._closed.is_set():
            self._client.ack(mid, qos)

    async def wait_closed(self) -> MqttError | None:
        await self._closed.wait()
        return self._error

    async def disconnect(self) -> None:
        if self._closed.is_set():
            return
        self._client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._options.timeout_s):
                await self._closed.wait()

    def close(self) -> None:
        self._unwatch()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self._finish(MqttError("connection closed"))

    # --- helpers ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise MqttError(f"not connected: {self._error or 'disconnected'}")

    async def _wait(self, mid: int) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending[mid] = fut
        try:
            await fut
        finally:
            self._pending.pop(mid, None)

    def _finish(self, error: MqttError | None) -> None:
        """The link has ended: wake everyone waiting on it."""
        if self._closed.is_set():
            return
        self._error = error
        self._closed.set()
        end_waits(self._connack, self._pending, error)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """paho calls the socket callbacks from the connecting thread too."""
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    # --- event loop integration ---------------------------------------------------------------

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(functools.partial(self._watch, sock))

    def _watch(self, sock: Any) -> None:
        if self._closed.is_set():  # given up while the worker thread was still connecting
            sock.close()
            return
        _no_delay(sock)
        self._fd = sock.fileno()
        if self._paused_at is None:
            self._loop.add_reader(self._fd, self._readable)
        self._misc = self._loop.call_later(1.0, self._tick)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch)

    def _unwatch(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write)

    def _want_write(self) -> None:
        if self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._no_write)

    def _no_write(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def reading(self, on: bool) -> None:
        if on == (self._paused_at is None):
            return
        self._paused_at = None if on else time.monotonic()
        if self._fd < 0:
            return
        if on:
            self._loop.add_reader(self._fd, self._readable)
            self._loop.call_soon(self._readable)  # TLS may hold decrypted bytes the selector will not report
        else:
            self._loop.remove_reader(self._fd)

    def _readable(self) -> None:
        try:
            while self._paused_at is None and self._fd >= 0:
                self._client.loop_read()
                # An SSL socket can hold decrypted bytes the selector does not see
                # (eclipse-paho/paho.mqtt.python#131): read until it holds none.
                sock = self._client.socket()
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    break
        except Exception as exc:  # noqa: BLE001 - any failure in paho's read path ends this link, reported
            self._fail(exc)

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001 - any failure in paho's write path ends this link, reported
            self._fail(exc)

    def _tick(self) -> None:
        self._misc = None
        if self._paused_at is not None and time.monotonic() - self._paused_at > self._options.keepalive_s / 2:
            self.reading(True)  # rule 4: never long enough for the keep-alive to give up on the broker
        if self._client.loop_misc() == paho.MQTT_ERR_SUCCESS and not self._closed.is_set():
            self._misc = self._loop.call_later(1.0, self._tick)

    def _fail(self, exc: Exception) -> None:
        self._finish(MqttError(f"connection failed: {exc}"))
        self.close()

    # --- paho callbacks (on the loop) ---------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(MqttError(f"connection refused: {reason}"))
        else:
            self._connack.set_result(None)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self._finish(MqttError(f"unexpected disconnection: {reason}") if reason.is_failure else None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload
        self._deliver(message.topic, payload if isinstance(payload, bytes) else bytes(payload), message.qos,
                      message.mid)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._resolve(mid)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        self._resolve(mid)

    def _resolve(self, mid: int) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
