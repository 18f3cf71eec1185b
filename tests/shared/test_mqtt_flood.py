"""Rule 4 of shared/mqtt.py with a real Mosquitto over mutual TLS: what the broker queued for a
client while it was away arrives all at once when it comes back (Mosquitto 2.0.11 honours
Receive Maximum only until the first PUBACK), as 13,000 retained births and statuses do at
every start of a city's hub. A slow consumer with a small incoming bound still gets every
message, in order, none dropped: reading pauses while its queue is half full. The same through
a link in a child process (shared/mqtt_process.py rule 4), whose window keeps what is between
the socket and the queue under the queue's free half."""

from __future__ import annotations

import asyncio

import pytest

from shared import topics
from shared.mqtt import Connection, ConnectOptions, Mqtt
from shared.mqtt_process import ProcessTransport
from shared.tls import client_context
from tests.conftest import PkiFixture
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

QUEUED = 600


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "client-process"])
async def test_a_flood_of_queued_messages_waits_in_tcp_instead_of_overflowing(
        test_pki: PkiFixture, broker: RunningBroker, in_child: bool) -> None:
    site, hub = test_pki.take_site(), test_pki.take_hub()
    topic = topics.site_topic(site, topics.SiteChannel.DATA)

    def options(cn: str, **kw: object) -> ConnectOptions:
        return ConnectOptions(host=broker.host, port=broker.port, client_id=cn, tls=client_context(test_pki.files(cn)),
                              **kw)  # type: ignore[arg-type]

    consumer = {"session_expiry_s": 300, "manual_ack": True, "receive_maximum": 10}

    async def once(owner: Mqtt, session: object) -> None:
        stop = asyncio.Event()

        async def run(conn: Connection) -> None:
            await session(conn)  # type: ignore[operator]
            stop.set()

        async with asyncio.timeout(60):
            await owner.run(run, stop=stop)

    async def subscribe(conn: Connection) -> None:
        await conn.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)

    async def publish(conn: Connection) -> None:
        for i in range(QUEUED):
            await conn.publish(topic, b"%d" % i, qos=1)

    await once(Mqtt(lambda: options(hub, **consumer)), subscribe)  # the session, then away
    await once(Mqtt(lambda: options(site)), publish)  # queued for the hub meanwhile

    got: list[bytes] = []
    incoming_max = 20
    transport = ProcessTransport(test_pki.files(hub), window=incoming_max // 4) if in_child else None
    owner = Mqtt(lambda: options(hub, **consumer), incoming_max=incoming_max, transport=transport)

    async def take(conn: Connection) -> None:
        it = aiter(conn.messages)
        while len(got) < QUEUED:
            try:
                async with asyncio.timeout(5):  # nothing more is coming
                    msg = await anext(it)
            except TimeoutError:
                return
            await asyncio.sleep(0.002)  # a consumer slower than the broker
            got.append(msg.payload)
            owner.ack(msg.generation, [msg.mid])

    await once(owner, take)
    assert owner.overflow == 0
    assert got == [b"%d" % i for i in range(QUEUED)]
