"""The edge's MQTT 5 uplink to its city hub: the shared sender (shared/uplink.py, its rules 1-9)
on the site's topics, with the hub's :class:`~shared.messages.Ack` and the site's commands.

Rules:

1. Status, birth and batches go on ``jk/v1/site/{site}/status|birth|data``; acks come on
   ``…/ack`` and commands on ``…/cmd`` (DESIGN §3).
2. A command that does not decode is counted as a bad message and dropped; the hub repeats a
   command it has no reply for (edge/commands.py answers a repeated ``cmd_id`` from its store).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from edge.errors import OutboxError
from edge.outbox import Outbox
from shared import messages, topics
from shared.mqtt import Transport
from shared.uplink import MAX_BATCH_BYTES, UplinkConfig, UplinkCounters, Wire
from shared.uplink import Uplink as _Uplink

__all__ = ["MAX_BATCH_BYTES", "Uplink", "UplinkConfig", "UplinkCounters"]


class Uplink(_Uplink):
    """Owns the MQTT connection of one site; run :meth:`run` as a task."""

    def __init__(
        self,
        cfg: UplinkConfig,
        outbox: Outbox,
        *,
        boot: str,
        birth: Callable[[], messages.Birth],
        on_command: Callable[[messages.Command], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        transport: Transport | None = None,
    ) -> None:
        site = cfg.sender

        def status(state: messages.SiteState) -> bytes:
            return messages.encode(messages.Status(site=site, state=state, boot=boot, ts=clock()))

        async def command(topic: str, payload: bytes) -> None:
            await on_command(messages.decode(messages.Command, payload))

        def at(channel: topics.SiteChannel) -> str:
            return topics.site_topic(site, channel)

        wire = Wire(kind="site", status_topic=at(topics.SiteChannel.STATUS), birth_topic=at(topics.SiteChannel.BIRTH),
                    data_topic=at(topics.SiteChannel.DATA), ack_topic=at(topics.SiteChannel.ACK),
                    decode_ack=lambda p: messages.decode(messages.Ack, p), status=status,
                    birth=lambda: messages.encode(birth()), outbox_error=OutboxError,
                    inbound=(at(topics.SiteChannel.CMD),), on_message=command)
        super().__init__(cfg, wire, outbox, boot=boot, clock=clock, transport=transport)
