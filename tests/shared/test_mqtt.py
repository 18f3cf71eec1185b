"""The MQTT connection owner (shared/mqtt.py) over a fake transport: reconnect and backoff,
manual PUBACK, the bounded incoming queue's overflow policy, and acks bound to a connection."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable

import pytest

from shared.errors import MqttError
from shared.mqtt import Connection, ConnectOptions, Deliver, Link, Message, Mqtt
from shared.retry import zero_waits

# --- the fake --------------------------------------------------------------------------------


class FakeLink:
    """One connection in memory: records what the owner sends, lets the test deliver and drop."""

    def __init__(self, transport: FakeTransport, options: ConnectOptions, deliver: Deliver) -> None:
        self.transport = transport
        self.options = options
        self.deliver = deliver
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscribed: list[tuple[str, int]] = []
        self.acks: list[tuple[int, int]] = []
        self.clean = False
        self.error: MqttError | None = None
        self.reads = True
        """Whether the owner lets this link read its socket (rule 4)."""
        self._closed = asyncio.Event()

    async def connect(self) -> None:
        accept = self.transport.script.pop(0) if self.transport.script else True
        self.transport.attempts += 1
        if not accept:
            raise MqttError("connection refused (fake)")
        self.transport.links.append(self)

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._check()
        self.published.append((topic, payload, qos, retain))

    async def subscribe(self, topic: str, qos: int) -> None:
        self._check()
        self.subscribed.append((topic, qos))

    def ack(self, mid: int, qos: int) -> None:
        if not self._closed.is_set():
            self.acks.append((mid, qos))

    async def wait_closed(self) -> MqttError | None:
        await self._closed.wait()
        return self.error

    async def disconnect(self) -> None:
        if not self._closed.is_set():
            self.clean = True
            self._closed.set()

    def close(self) -> None:
        self._closed.set()

    def reading(self, on: bool) -> None:
        self.reads = on

    def drop(self, why: str = "connection lost (fake)") -> None:
        self.error = MqttError(why)
        self._closed.set()

    def _check(self) -> None:
        if self._closed.is_set():
            raise MqttError("not connected (fake)")


class FakeTransport:
    def __init__(self, script: list[bool] | None = None) -> None:
        self.script = list(script or [])
        """Whether each connection attempt in turn is accepted (then: always)."""
        self.attempts = 0
        self.links: list[FakeLink] = []

    def link(self, options: ConnectOptions, deliver: Deliver) -> Link:
        return FakeLink(self, options, deliver)


class _Top(random.Random):
    """Full jitter at its top: every backoff delay is its cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _options(*, manual_ack: bool = True) -> Callable[[], ConnectOptions]:
    ctx = ssl.create_default_context()
    return lambda: ConnectOptions(host="broker.test", port=8883, client_id="hub-test", tls=ctx, manual_ack=manual_ack)


async def _run(owner: Mqtt, session: Callable[[Connection], Awaitable[None]], stop: asyncio.Event,
               lost: list[MqttError] | None = None) -> None:
    async def on_lost(exc: MqttError) -> None:
        if lost is not None:
            lost.append(exc)

    async with asyncio.timeout(5):
        await owner.run(session, stop=stop, on_lost=on_lost)


def _link(conn: Connection) -> FakeLink:
    assert isinstance(conn.link, FakeLink)
    return conn.link


# --- the behaviour -----------------------------------------------------------------------------


async def test_reconnects_with_growing_backoff_that_a_connect_resets() -> None:
    """Three refusals wait 0.1, 0.2, 0.3 s (capped); a connection that is then lost starts again
    at 0.1 s; each connection gets the next generation."""
    transport = FakeTransport([False, False, False, True, False, True])
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    stop = asyncio.Event()
    generations: list[int] = []

    async def session(conn: Connection) -> None:
        generations.append(conn.generation)
        if conn.generation == 1:
            _link(conn).drop()
            async for _ in conn.messages:
                pass
        else:
            stop.set()

    lost: list[MqttError] = []
    owner = Mqtt(_options(), transport=transport, backoff=(0.1, 0.3), sleep=sleep, rng=_Top())
    with zero_waits(False):  # the suite zeroes every backoff; this test measures it
        await _run(owner, session, stop, lost)
    assert sleeps == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])
    assert transport.attempts == 6
    assert generations == [1, 2]
    assert owner.connects == 2
    assert len(lost) == 5
    assert "connection lost (fake)" in owner.last_error or "refused" in owner.last_error
    assert transport.links[-1].clean, "a stop ends with a clean DISCONNECT (no Will)"


async def test_a_message_carries_when_it_was_read_off_the_socket_not_when_it_was_taken() -> None:
    """The hub's broker-receive → commit latency starts at delivery by the link, before any queue."""
    stop = asyncio.Event()
    owner = Mqtt(_options(), transport=FakeTransport())

    async def session(conn: Connection) -> None:
        before = time.time()
        _link(conn).deliver("jk/v1/site/a-1/data", b"{}", 1, 7)
        after = time.time()
        await asyncio.sleep(0.2)  # the message waits in the inbox
        msg = await anext(aiter(conn.messages))
        assert before <= msg.received <= after
        stop.set()

    await _run(owner, session, stop)


async def test_a_message_is_acked_only_when_the_caller_acks_it() -> None:
    """With manual ack, receiving a QoS 1 message sends nothing; Mqtt.ack sends its PUBACK."""
    stop = asyncio.Event()
    owner = Mqtt(_options(), transport=FakeTransport())

    async def session(conn: Connection) -> None:
        link = _link(conn)
        link.deliver("jk/v1/site/a-1/data", b"{}", 1, 7)
        msg = await anext(aiter(conn.messages))
        await asyncio.sleep(0)
        assert msg == Message("jk/v1/site/a-1/data", b"{}", 1, 7, conn.generation)
        assert link.acks == []
        owner.ack(msg.generation, [msg.mid])
        assert link.acks == [(7, 1)]
        stop.set()

    await _run(owner, session, stop)


async def test_a_full_incoming_queue_pubacks_drops_and_counts() -> None:
    """incoming_max=2: three more messages are PUBACKed at once, dropped, counted and reported;
    the two queued ones are still delivered and still wait for the caller's ack."""
    stop = asyncio.Event()
    reported: list[int] = []
    owner = Mqtt(_options(), transport=FakeTransport(), incoming_max=2,
                 on_overflow=lambda: reported.append(owner.overflow))

    async def session(conn: Connection) -> None:
        link = _link(conn)
        for mid in range(1, 6):
            link.deliver("jk/v1/site/a-1/data", b"%d" % mid, 1, mid)
        assert link.acks == [(3, 1), (4, 1), (5, 1)]
        assert owner.overflow == 3
        assert reported == [1, 2, 3]
        it = aiter(conn.messages)
        assert [(await anext(it)).mid for _ in range(2)] == [1, 2]
        assert conn.queued == 0
        assert link.acks == [(3, 1), (4, 1), (5, 1)]
        stop.set()

    await _run(owner, session, stop)


async def test_a_half_full_incoming_queue_stops_reading_until_it_is_down_to_a_quarter() -> None:
    """Rule 4: the broker's sends wait in TCP instead of being dropped: reading stops when the
    queue holds half its bound and goes on when it is down to a quarter; nothing overflows."""
    stop = asyncio.Event()
    owner = Mqtt(_options(), transport=FakeTransport(), incoming_max=8)

    async def session(conn: Connection) -> None:
        link = _link(conn)
        for mid in range(1, 4):
            link.deliver("jk/v1/site/a-1/data", b"%d" % mid, 1, mid)
        assert link.reads
        link.deliver("jk/v1/site/a-1/data", b"4", 1, 4)
        assert not link.reads  # four of eight
        it = aiter(conn.messages)
        await anext(it)
        assert not link.reads  # three left
        await anext(it)
        assert link.reads  # two: a quarter
        assert owner.overflow == 0
        assert link.acks == []
        stop.set()

    await _run(owner, session, stop)


async def test_overflow_without_manual_ack_sends_no_puback_of_its_own() -> None:
    """Without manual ack the client acknowledges by itself; an overflow is only counted."""
    stop = asyncio.Event()
    owner = Mqtt(_options(manual_ack=False), transport=FakeTransport(), incoming_max=1)

    async def session(conn: Connection) -> None:
        link = _link(conn)
        link.deliver("t", b"1", 1, 1)
        link.deliver("t", b"2", 1, 2)
        assert owner.overflow == 1
        assert link.acks == []
        stop.set()

    await _run(owner, session, stop)


async def test_acks_for_an_older_connection_are_dropped() -> None:
    """A message taken on connection 1 and acked after the reconnect is not PUBACKed on either
    connection (the broker redelivers it); a message of connection 2 is."""
    stop = asyncio.Event()
    transport = FakeTransport()
    owner = Mqtt(_options(), transport=transport, backoff=(0.0, 0.0))
    taken: list[Message] = []

    async def session(conn: Connection) -> None:
        link = _link(conn)
        if conn.generation == 1:
            link.deliver("t", b"old", 1, 5)
            taken.append(await anext(aiter(conn.messages)))
            link.drop()
            await anext(aiter(conn.messages))  # raises: the connection has ended
            return
        owner.ack(taken[0].generation, [taken[0].mid])
        assert link.acks == []
        link.deliver("t", b"new", 1, 5)
        msg = await anext(aiter(conn.messages))
        owner.ack(msg.generation, [msg.mid])
        assert link.acks == [(5, 1)]
        stop.set()

    await _run(owner, session, stop)
    first, second = transport.links
    assert first.acks == []
    assert second.acks == [(5, 1)]


async def test_a_session_ends_with_its_connection_after_taking_what_arrived() -> None:
    """Messages that arrived before the connection ended are still delivered; then the iterator
    and every publish raise, and the owner reports the loss."""
    stop = asyncio.Event()
    seen: list[bytes] = []
    errors: list[str] = []

    async def session(conn: Connection) -> None:
        if conn.generation > 1:
            stop.set()
            return
        link = _link(conn)
        link.deliver("t", b"a", 1, 1)
        link.deliver("t", b"b", 1, 2)
        link.drop("keepalive timeout (fake)")
        try:
            async for msg in conn.messages:
                seen.append(msg.payload)
        except MqttError as exc:
            errors.append(str(exc))
        with pytest.raises(MqttError):
            await conn.publish("t", b"x")
        raise MqttError("the session saw the end")

    lost: list[MqttError] = []
    owner = Mqtt(_options(), transport=FakeTransport(), backoff=(0.0, 0.0))
    await _run(owner, session, stop, lost)
    assert seen == [b"a", b"b"]
    assert errors
    assert "keepalive timeout (fake)" in errors[0]
    assert lost
    assert owner.connects == 2


async def test_a_session_that_ignores_its_messages_still_ends_with_the_connection() -> None:
    """The owner itself ends a session whose connection has gone (nothing arrived to drain)."""
    stop = asyncio.Event()
    lost: list[MqttError] = []

    async def session(conn: Connection) -> None:
        if conn.generation > 1:
            stop.set()
            return
        _link(conn).drop("gone (fake)")
        await asyncio.Event().wait()  # would wait for ever

    owner = Mqtt(_options(), transport=FakeTransport(), backoff=(0.0, 0.0))
    await _run(owner, session, stop, lost)
    assert [str(e) for e in lost] == ["gone (fake)"]


async def test_stop_during_backoff_ends_the_owner_at_once() -> None:
    """A stop while waiting to reconnect ends run() without another attempt."""
    transport = FakeTransport([False] * 100)
    stop = asyncio.Event()

    async def on_lost(exc: MqttError) -> None:
        stop.set()

    async def session(conn: Connection) -> None:
        raise AssertionError("never connects")

    owner = Mqtt(_options(), transport=transport, backoff=(30.0, 30.0))
    with zero_waits(False):
        async with asyncio.timeout(5):
            await owner.run(session, stop=stop, on_lost=on_lost)
    assert transport.attempts == 1
    assert owner.last_error == "connection refused (fake)"


async def test_a_cancel_that_meets_a_lost_connection_still_ends_the_owner() -> None:
    """Python 3.11's TaskGroup lets a child's error hide its parent's cancellation: the loss
    (a MqttError, which run() takes as "reconnect") must not swallow the cancel, or the owner
    connects again and never ends (an agent that ignored its stop, once in CI)."""
    owner = Mqtt(_options(), transport=FakeTransport(), backoff=(0.0, 0.0))
    connected = asyncio.Event()

    async def session(conn: Connection) -> None:
        connected.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(owner.run(session))
    await asyncio.wait_for(connected.wait(), 5)
    assert owner._conn is not None
    _link(owner._conn).drop("lost as the stop came (fake)")
    task.cancel()  # in the same step: the watcher fails and the session is cancelled together
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert owner.connects == 1
