"""A small stand-in hub for edge tests: commits records to a real SQLite file and acks per DESIGN §3.

- Dedupes by (site, seq) (``INSERT OR IGNORE``), commits, then acks ``through_seq``: the
  highest seq below which everything is committed or below the batch's ``floor_seq``.
- A gap that persists for ``gap_grace_s`` is asked for with ``resend_from``.
- ``drop_next(n)`` throws away the next n data messages before they are committed, like a
  broker that lost them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import msgspec

from shared import messages, topics
from shared.tls import TlsFiles, client_context
from trust.broker import RunningBroker


@dataclass
class _SiteState:
    through: int = 0
    seen_above: set[int] = field(default_factory=set)
    gap_since: float | None = None
    resend_asked_at: float = 0.0
    epoch: int = 0


class FakeHub:
    def __init__(self, broker: RunningBroker, files: TlsFiles, db: Path, *, gap_grace_s: float = 0.3) -> None:
        self.broker = broker
        self.files = files
        self.db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rec (site TEXT, seq INTEGER, type TEXT, historical INTEGER,"
            " payload BLOB, PRIMARY KEY (site, seq))"
        )
        self.gap_grace_s = gap_grace_s
        self.sites: dict[str, _SiteState] = {}
        self._drop = 0
        self.dropped = 0
        self.batches = 0
        self.duplicates = 0
        self.resends_asked = 0
        self.statuses: list[messages.Status] = []
        self.births: list[messages.Birth] = []
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    def drop_next(self, n: int) -> None:
        self._drop += n

    def seqs(self, site: str) -> list[int]:
        return [s for (s,) in self.db.execute("SELECT seq FROM rec WHERE site=? ORDER BY seq", (site,))]

    def records(self, site: str) -> Iterator[messages.Record]:
        dec = messages.decode
        for (payload,) in self.db.execute("SELECT payload FROM rec WHERE site=? ORDER BY seq", (site,)):
            batch = dec(messages.DataBatch, b'{"v":1,"site":"%s","boot":"x","records":[%s]}' % (site.encode(), payload))
            yield batch.records[0]

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    hostname=self.broker.host, port=self.broker.port, identifier=f"fake-hub-{id(self)}",
                    protocol=aiomqtt.ProtocolVersion.V5, tls_context=client_context(self.files), timeout=5,
                ) as client:
                    self.client = client
                    await client.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
                    await client.subscribe(topics.all_sites(topics.SiteChannel.STATUS), qos=1)
                    await client.subscribe(topics.all_sites(topics.SiteChannel.BIRTH), qos=1)
                    self.connected.set()
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._gaps(client))
                        async for msg in client.messages:
                            await self._handle(client, msg)
            except* aiomqtt.MqttError:
                self.connected.clear()
            await asyncio.sleep(0.2)

    async def _handle(self, client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        parsed = topics.parse(str(msg.topic))
        assert isinstance(parsed, topics.SiteTopic)
        assert isinstance(msg.payload, bytes)
        if parsed.channel is topics.SiteChannel.STATUS:
            self.statuses.append(messages.decode(messages.Status, msg.payload))
            return
        if parsed.channel is topics.SiteChannel.BIRTH:
            self.births.append(messages.decode(messages.Birth, msg.payload))
            return
        if self._drop > 0:
            self._drop -= 1
            self.dropped += 1
            return
        batch = messages.decode(messages.DataBatch, msg.payload)
        self.batches += 1
        enc = msgspec.json.Encoder()
        rows = [(batch.site, r.seq, type(r).__name__, int(r.historical), enc.encode(r)) for r in batch.records]
        self.db.execute("BEGIN IMMEDIATE")
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO rec VALUES (?, ?, ?, ?, ?)", rows)
        self.duplicates += len(rows) - (self.db.total_changes - before)
        self.db.execute("COMMIT")
        st = self.sites.setdefault(batch.site, _SiteState())
        st.epoch = batch.epoch  # the stand-in follows one outbox epoch per site (the real hub: each)
        st.seen_above.update(r.seq for r in batch.records if r.seq > st.through)
        if batch.floor_seq is not None and batch.floor_seq - 1 > st.through:
            st.through = batch.floor_seq - 1
        while st.through + 1 in st.seen_above:
            st.through += 1
        st.seen_above = {s for s in st.seen_above if s > st.through}
        st.gap_since = (st.gap_since or time.monotonic()) if st.seen_above else None
        if st.through > 0:
            await self._ack(client, batch.site, messages.Ack(site=batch.site, epoch=st.epoch,
                                                                     through_seq=st.through))

    async def send_command(self, cmd: messages.Command) -> None:
        """Publish a (signed) command to its site, as the hub would."""
        assert self.client is not None
        await self.client.publish(topics.site_topic(cmd.site, topics.SiteChannel.CMD), messages.encode(cmd), qos=1)

    def replies(self, site: str, cmd_id: str) -> list[messages.Reply]:
        return [r for r in self.records(site) if isinstance(r, messages.Reply) and r.cmd_id == cmd_id]

    def events(self, site: str) -> list[messages.Event]:
        return [r for r in self.records(site) if isinstance(r, messages.Event)]

    async def _ack(self, client: aiomqtt.Client, site: str, ack: messages.Ack) -> None:
        await client.publish(topics.site_topic(site, topics.SiteChannel.ACK), messages.encode(ack), qos=1)

    async def _gaps(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.gap_grace_s / 2)
            now = time.monotonic()
            for site, st in self.sites.items():
                if st.gap_since and now - st.gap_since > self.gap_grace_s and now - st.resend_asked_at > 1.0:
                    st.resend_asked_at = now
                    self.resends_asked += 1
                    ack = messages.Ack(site=site, epoch=st.epoch, through_seq=st.through or None,
                                       resend_from=st.through + 1)
                    await self._ack(client, site, ack)


@asynccontextmanager
async def running_fake_hub(broker: RunningBroker, files: TlsFiles, db: Path):  # type: ignore[no-untyped-def]
    hub = FakeHub(broker, files, db)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(hub.run(), name="fake-hub")
        async with asyncio.timeout(10):
            await hub.connected.wait()
        try:
            yield hub
        finally:
            task.cancel()
