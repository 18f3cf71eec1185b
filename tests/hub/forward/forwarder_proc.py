"""A forwarder in a process of its own, for the kill-and-restart test.

    python -m tests.hub.forward.forwarder_proc DB URL

Delivers the outbox in DB to one CAP recipient at URL (zero retry waits) until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.tx import Detail, LocalWriter
from shared import retry
from tests.hub.forward.helpers import config, recipient


def _no_audit(actor: str, action: str, target: str, detail: Detail | None = None) -> None:
    return None


async def main(db: Path, url: str) -> None:
    cfg = config(recipient("centre", url))
    async with LocalWriter.open(db, _no_audit) as writer, \
            HttpTransport.open() as transport:
        print("ready", flush=True)
        await Forwarder(cfg, writer, transport).run()


if __name__ == "__main__":
    with retry.zero_waits():
        asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
