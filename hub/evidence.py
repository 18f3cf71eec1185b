"""Pictures for alerts: camera evidence captured after an alarm's alert is queued, sent as an
``update`` of the alert's thread, and purged after its retention.

An alert never waits for a picture (hub/alerting.py rule 3): the engine only queues the capture
(:class:`~hub.alerting.EvidenceQueue`, bounded, newest dropped when full); these loops run as
named tasks of the hub's TaskGroup.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hub.alerting import EvidenceQueue, notice_for
from hub.cctv import CctvLinker
from hub.forward.deliver import Forwarder
from hub.forward.plan import Change

PURGE_EVERY_S: Final = 3600.0


async def capture_loop(queue: EvidenceQueue, linker: CctvLinker, forwarder: Forwarder | None) -> None:
    """Capture evidence for raised alarms and send it as an update of the alert's thread."""
    while True:
        facts, position = await queue.queue.get()
        capture = await linker.capture(position, f"alarm:{facts.alarm_id}")
        if capture.evidence and forwarder is not None:
            notice = notice_for(facts, Change.UPDATE, position, evidence=capture.evidence)
            await forwarder.enqueue(notice, pictures=capture.pictures)


async def purge_loop(linker: CctvLinker) -> None:
    """Remove evidence past its retention, hourly, until cancelled."""
    while True:
        await linker.purge()
        await asyncio.sleep(PURGE_EVERY_S)
