"""shared/mqtt_process.py with a real Mosquitto over mutual TLS: a link whose socket work runs in
a child process carries messages, manual acks and publishes as the in-process link does; a
killed child is a lost connection that the owner recovers from with nothing lost; the child
ignores signals meant for its parent and ends with its parent's pipe (the broker then sends the
Will); broken frames end a link instead of being believed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import pytest

from shared import mqtt_process, topics
from shared.errors import MqttError
from shared.mqtt import Connection, ConnectOptions, Message, Mqtt, Will
from shared.mqtt_process import (
    BUILD,
    MAX_FRAME,
    Closed,
    Connected,
    Hello,
    Open,
    ProcessTransport,
    ToParent,
    _frame,
    _Frames,
)
from shared.tls import client_context
from tests.conftest import PkiFixture
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


def options(broker: RunningBroker, test_pki: PkiFixture, cn: str, **kw: object) -> ConnectOptions:
    return ConnectOptions(host=broker.host, port=broker.port, client_id=cn, tls=client_context(test_pki.files(cn)),
                          **kw)  # type: ignore[arg-type]


async def publish_all(broker: RunningBroker, test_pki: PkiFixture, site: str, payloads: list[bytes]) -> None:
    """An in-process client (the other side) publishes ``payloads`` to ``site``'s data topic."""
    stop = asyncio.Event()

    async def session(conn: Connection) -> None:
        for p in payloads:
            await conn.publish(topics.site_topic(site, topics.SiteChannel.DATA), p, qos=1)
        stop.set()

    async with asyncio.timeout(30):
        await Mqtt(lambda: options(broker, test_pki, site)).run(session, stop=stop)


async def test_a_child_process_link_delivers_stamps_acks_and_publishes(
        broker: RunningBroker, test_pki: PkiFixture) -> None:
    site, other, hub = test_pki.take_site(), test_pki.take_site(), test_pki.take_hub()
    transport = ProcessTransport(test_pki.files(hub))
    owner = Mqtt(lambda: options(broker, test_pki, hub, manual_ack=True, session_expiry_s=60), transport=transport)
    got: list[Message] = []
    subscribed, listening, heard, stop = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    acks_seen: list[bytes] = []

    async def session(conn: Connection) -> None:
        await conn.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
        subscribed.set()
        async for msg in conn.messages:
            got.append(msg)
            owner.ack(msg.generation, [msg.mid])
            if len(got) == 20:
                await conn.publish(topics.site_topic(other, topics.SiteChannel.ACK), b"thanks", qos=1)
                await stop.wait()
                return

    async def listen(conn: Connection) -> None:
        await conn.subscribe(topics.site_topic(other, topics.SiteChannel.ACK), qos=1)
        listening.set()
        async for msg in conn.messages:
            acks_seen.append(msg.payload)
            heard.set()
            return

    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        tg.create_task(Mqtt(lambda: options(broker, test_pki, other)).run(listen, stop=heard))
        await listening.wait()
        run = tg.create_task(owner.run(session, stop=stop))
        await subscribed.wait()
        child = transport.pid
        assert child is not None
        assert child != os.getpid()
        before = time.time()
        await publish_all(broker, test_pki, site, [b"%d" % i for i in range(20)])
        await heard.wait()
        stop.set()
        await run
    assert [m.payload for m in got] == [b"%d" % i for i in range(20)]
    assert all(before - 1 <= m.received <= time.time() for m in got)  # the child's stamp: wall-clock
    assert acks_seen == [b"thanks"]  # the owner's publish went out through the child
    assert owner.connects == 1
    async with asyncio.timeout(10):
        while True:  # a clean stop ends the child too (rule 1)
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)


async def test_a_killed_child_is_a_lost_connection_and_nothing_unacked_is_lost(
        broker: RunningBroker, test_pki: PkiFixture) -> None:
    """Rule 1: the child dies (SIGKILL) holding a message the owner has not acked yet; the owner
    reconnects with a new child, the broker delivers that message again, and every message
    arrives."""
    site, hub = test_pki.take_site(), test_pki.take_hub()
    transport = ProcessTransport(test_pki.files(hub))
    owner = Mqtt(lambda: options(broker, test_pki, hub, manual_ack=True, session_expiry_s=60), transport=transport,
                 backoff=(0.05, 0.2))
    acked: dict[bytes, int] = {}
    generations: set[int] = set()
    subscribed, stop = asyncio.Event(), asyncio.Event()
    killed: list[int] = []

    async def session(conn: Connection) -> None:
        await conn.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
        subscribed.set()
        async for msg in conn.messages:
            generations.add(msg.generation)
            if msg.payload == b"3" and not killed:
                pid = transport.pid
                assert pid is not None
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)  # before the ack: the broker still owes it
                continue
            acked[msg.payload] = msg.generation
            owner.ack(msg.generation, [msg.mid])
            if len(acked) == 10:
                stop.set()
                return

    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        run = tg.create_task(owner.run(session, stop=stop))
        await subscribed.wait()
        await publish_all(broker, test_pki, site, [b"%d" % i for i in range(10)])
        await run
    assert sorted(acked) == sorted(b"%d" % i for i in range(10))
    assert acked[b"3"] == 2  # delivered again on the second connection
    assert owner.connects == 2
    assert generations == {1, 2}
    assert "MQTT process ended" in owner.last_error


async def test_the_child_ignores_its_parents_signals_and_ends_with_its_pipe_sending_the_will(
        broker: RunningBroker, test_pki: PkiFixture) -> None:
    """Rules 2 and 5, on the child itself: SIGTERM and SIGINT (systemd's and a terminal's, meant
    for the parent) leave it connected; EOF on its stdin ends it at once without a clean
    DISCONNECT, so the broker publishes its Will."""
    hub, watcher = test_pki.take_hub(), test_pki.take_hub()
    will_topic = topics.hub_status_topic(hub)
    wills: list[bytes] = []
    watching, heard = asyncio.Event(), asyncio.Event()

    async def watch(conn: Connection) -> None:
        await conn.subscribe(will_topic, qos=1)
        watching.set()
        async for msg in conn.messages:
            if msg.payload == b"gone":
                wills.append(msg.payload)
                heard.set()
                return

    files = test_pki.files(hub)
    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        tg.create_task(Mqtt(lambda: options(broker, test_pki, watcher)).run(watch, stop=heard))
        await watching.wait()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-m", "shared.mqtt_process",
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(_frame(Hello(BUILD)))
        proc.stdin.write(_frame(Open(host=broker.host, port=broker.port, client_id=hub, ca=str(files.ca),
                                     cert=str(files.cert), key=str(files.key), keepalive_s=30, timeout_s=10,
                                     will=Will(will_topic, b"gone", qos=1, retain=False), receive_maximum=None,
                                     session_expiry_s=None, manual_ack=False, max_inflight=None,
                                     log_level=30, window=10)))
        frames = _Frames(ToParent)
        head = await proc.stdout.readexactly(4)
        first = frames.feed(head + await proc.stdout.readexactly(int.from_bytes(head, "big")))
        assert first == [Connected()]
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(1.0)
        assert proc.returncode is None
        assert not heard.is_set()
        proc.stdin.close()  # the parent is gone
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
            await heard.wait()
    assert wills == [b"gone"]


async def test_a_child_that_cannot_connect_says_why_and_exits(test_pki: PkiFixture) -> None:
    hub = test_pki.take_hub()
    transport = ProcessTransport(test_pki.files(hub))
    with socket_closed() as port:
        link = transport.link(ConnectOptions(host="127.0.0.1", port=port, client_id=hub,
                                             tls=client_context(test_pki.files(hub)), timeout_s=5),
                              lambda *a, **k: None)
        with pytest.raises(MqttError, match=r"[Cc]onnection refused"):
            await link.connect()
    assert transport.pid is None  # the child is gone


async def test_a_child_of_another_build_refuses_instead_of_misreading_frames(
        broker: RunningBroker, test_pki: PkiFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 6: the package was upgraded under a running hub; its next child imports the new file.
    (Here the parent's digest is the odd one out, which is the same mismatch.)"""
    hub = test_pki.take_hub()
    monkeypatch.setattr(mqtt_process, "BUILD", "0" * 16)
    transport = ProcessTransport(test_pki.files(hub))
    link = transport.link(options(broker, test_pki, hub), lambda *a, **k: None)
    with pytest.raises(MqttError, match=r"another build of mqtt_process\.py .* Restart it"):
        await link.connect()
    assert transport.pid is None


class socket_closed:
    """A local port nothing listens on."""

    def __enter__(self) -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self._port = int(s.getsockname()[1])
        s.close()
        return self._port

    def __exit__(self, *exc: object) -> None:
        return None


def test_frames_are_cut_from_any_split_of_the_stream() -> None:
    stream = b"".join(bytes(_frame(Closed(error=f"e{i}"))) for i in range(5))
    frames = _Frames(ToParent)
    got: list[ToParent] = []
    for i in range(len(stream)):  # one byte at a time
        got += frames.feed(stream[i:i + 1])
    assert got == [Closed(error=f"e{i}") for i in range(5)]


@pytest.mark.parametrize(("junk", "why"), [
    ((MAX_FRAME + 1).to_bytes(4, "big"), "over the"),
    (b"\x00\x00\x00\x03\xc1\xc1\xc1", "undecodable"),
    (b"\x00\x00\x00\x02\x91\xa3", "undecodable"),  # msgpack, but no frame of ours
])
def test_a_broken_or_oversized_frame_is_refused_not_believed(junk: bytes, why: str) -> None:
    with pytest.raises(MqttError, match=why):
        _Frames(ToParent).feed(junk)


async def test_a_broken_frame_from_the_child_ends_the_link(test_pki: PkiFixture) -> None:
    hub = test_pki.take_hub()
    got: list[object] = []
    link = ProcessTransport(test_pki.files(hub)).link(
        ConnectOptions(host="127.0.0.1", port=1, client_id=hub, tls=client_context(test_pki.files(hub))),
        lambda *a, **k: got.append(a))
    link.pipe_data_received(1, b"\x00\x00\x00\x03\xc1\xc1\xc1")  # type: ignore[attr-defined]
    async with asyncio.timeout(1):
        error = await link.wait_closed()
    assert isinstance(error, MqttError)
    assert "undecodable" in str(error)
    assert got == []
    with pytest.raises(MqttError):
        await link.publish("t", b"x", 1, False)
