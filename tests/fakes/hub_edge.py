"""A small stand-in edge for hub tests, following DESIGN §3 on a real broker with mTLS.

It holds every record it sent until the hub acks a ``through_seq`` at or above it, puts
``floor_seq`` (its lowest held seq) on every batch, resends from ``resend_from`` (flagged
historical) when asked, and keeps every command it receives. ``send(..., drop=True)`` keeps a
batch without publishing it, as if the broker had lost it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiomqtt
import msgspec

from shared import messages, topics
from shared.messages import Ack, Birth, Command, DataBatch, DeviceInfo, Priority, Quality, Reading, Record, Reply
from shared.tls import TlsFiles, client_context
from trust.broker import RunningBroker


class FakeEdge:
    def __init__(self, client: aiomqtt.Client, site: str) -> None:
        self.client = client
        self.site = site
        self.boot = uuid.uuid4().hex[:8]
        self.next_seq = 1
        self.held: dict[int, Record] = {}
        self.acks: list[Ack] = []
        self.commands: list[Command] = []
        self.acked_through = 0
        self.resends = 0
        self._changed = asyncio.Condition()
        self.auto_reply = True

    # --- producing -------------------------------------------------------------------------

    def reading(self, device: str, point: str, value: messages.Scalar, *, quality: Quality = Quality.GOOD,
                ts: float | None = None, prio: Priority = Priority.TELEMETRY) -> Reading:
        r = Reading(seq=self.next_seq, ts=ts if ts is not None else time.time(), prio=prio, device=device,
                    point=point, value=value, quality=quality)
        self.next_seq += 1
        self.held[r.seq] = r
        return r

    def readings(self, n: int, device: str = "gauge", point: str = "water_depth_cm") -> list[Record]:
        return [self.reading(device, point, float(i % 7)) for i in range(n)]

    def reply(self, cmd_id: str, status: messages.ReplyStatus, reason: str = "") -> Reply:
        r = Reply(seq=self.next_seq, ts=time.time(), prio=Priority.REPLY, cmd_id=cmd_id, status=status, reason=reason)
        self.next_seq += 1
        self.held[r.seq] = r
        return r

    def floor(self) -> int:
        return min(self.held) if self.held else self.next_seq

    async def send(self, records: Sequence[Record], *, drop: bool = False) -> None:
        if drop:
            return
        batch = DataBatch(site=self.site, boot=self.boot, records=list(records), floor_seq=self.floor())
        await self.client.publish(topics.site_topic(self.site, topics.SiteChannel.DATA), messages.encode(batch),
                                  qos=1)

    async def publish_raw(self, channel: topics.SiteChannel, payload: bytes, *, retain: bool = False) -> None:
        await self.client.publish(topics.site_topic(self.site, channel), payload, qos=1, retain=retain)

    async def status(self, state: messages.SiteState) -> None:
        st = messages.Status(site=self.site, state=state, boot=self.boot, ts=time.time())
        await self.publish_raw(topics.SiteChannel.STATUS, messages.encode(st), retain=True)

    async def birth(self, devices: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        b = Birth(site=self.site, agent_version="fake-1", boot=self.boot, ts=time.time(), devices=[
            DeviceInfo(id=d, kind=k, profile=f"{k}-test", profile_sha256="0" * 64, points=list(points))
            for d, k, points in devices])
        await self.publish_raw(topics.SiteChannel.BIRTH, messages.encode(b), retain=True)

    # --- receiving -------------------------------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.client.messages:
            assert isinstance(msg.payload, bytes)
            parsed = topics.parse(str(msg.topic))
            assert isinstance(parsed, topics.SiteTopic)
            if parsed.channel is topics.SiteChannel.ACK:
                await self._on_ack(messages.decode(Ack, msg.payload))
            elif parsed.channel is topics.SiteChannel.CMD:
                cmd = messages.decode(Command, msg.payload)
                self.commands.append(cmd)
                async with self._changed:
                    self._changed.notify_all()

    async def _on_ack(self, ack: Ack) -> None:
        self.acks.append(ack)
        if ack.through_seq is not None:
            self.acked_through = max(self.acked_through, ack.through_seq)
            for seq in [s for s in self.held if s <= ack.through_seq]:
                del self.held[seq]
        if ack.resend_from is not None:
            self.resends += 1
            again = [msgspec.structs.replace(r, historical=True) for s, r in sorted(self.held.items())
                     if s >= ack.resend_from]
            for i in range(0, len(again), 50):
                await self.send(again[i:i + 50])
        async with self._changed:
            self._changed.notify_all()

    async def wait_acked(self, seq: int, within_s: float = 15.0) -> None:
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: self.acked_through >= seq)

    async def wait_commands(self, n: int, within_s: float = 15.0) -> list[Command]:
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: len(self.commands) >= n)
        return self.commands


@asynccontextmanager
async def fake_edge(broker: RunningBroker, files: TlsFiles, site: str) -> AsyncIterator[FakeEdge]:
    """A connected fake edge with its receiver running (status and birth are up to the test)."""
    async with aiomqtt.Client(hostname=broker.host, port=broker.port, identifier=f"{site}-{uuid.uuid4().hex[:6]}",
                              protocol=aiomqtt.ProtocolVersion.V5, tls_context=client_context(files),
                              timeout=5) as client:
        edge = FakeEdge(client, site)
        await client.subscribe(topics.site_topic(site, topics.SiteChannel.ACK), qos=1)
        await client.subscribe(topics.site_topic(site, topics.SiteChannel.CMD), qos=1)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(edge._receive(), name=f"fake-edge-{site}")
            try:
                yield edge
            finally:
                task.cancel()
