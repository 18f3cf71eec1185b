"""The real hub (hub.service) for edge tests, with the read-outs the edge tests assert on.

The edge tests once ran against a stand-in (tests/fakes/hub.py); now that the hub exists they
run against it: records are what the hub committed to its SQLite file. Crafted commands
(forged, expired, unknown device) are published with the hub's identity by a second client,
as only a broken or hostile hub would send them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from hub.config import parse
from hub.service import Hub, running
from shared import messages, topics
from shared.tls import client_context
from tests.conftest import PkiFixture
from tests.hub.conftest import raw_config
from trust.broker import RunningBroker

_record = msgspec.json.Decoder(messages.Event | messages.Reply)


class RealHub:
    def __init__(self, hub: Hub, db: Path, commander: aiomqtt.Client) -> None:
        self.hub = hub
        self.db = db
        self.commander = commander

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def seqs(self, site: str) -> list[int]:
        return [int(s) for (s,) in self._rows("SELECT seq FROM records WHERE site=? ORDER BY seq",  # type: ignore[call-overload]
                                              (site,))]

    def historical(self, site: str) -> dict[int, bool]:
        return {int(s): bool(h) for s, h in self._rows(  # type: ignore[call-overload]
            "SELECT seq, historical FROM records WHERE site=?", (site,))}

    def records(self, site: str) -> Iterator[messages.Event | messages.Reply]:
        for (body,) in self._rows("SELECT body FROM records WHERE site=? AND type <> 'reading' ORDER BY seq",
                                  (site,)):
            assert isinstance(body, str)
            yield _record.decode(body)

    def events(self, site: str) -> list[messages.Event]:
        return [r for r in self.records(site) if isinstance(r, messages.Event)]

    def replies(self, site: str, cmd_id: str) -> list[messages.Reply]:
        return [r for r in self.records(site) if isinstance(r, messages.Reply) and r.cmd_id == cmd_id]

    def epochs(self, site: str) -> dict[int, int]:
        """Records stored per outbox epoch."""
        return {int(e): int(n) for e, n in self._rows(  # type: ignore[call-overload]
            "SELECT epoch, count(*) FROM records WHERE site=? GROUP BY epoch", (site,))}

    def active_alarms(self, site: str) -> set[str]:
        return {str(r) for (r,) in self._rows("SELECT rule FROM alarms WHERE site=? AND active=1", (site,))}

    async def send_command(self, cmd: messages.Command) -> None:
        await self.commander.publish(topics.site_topic(cmd.site, topics.SiteChannel.CMD), messages.encode(cmd),
                                     qos=1)


@asynccontextmanager
async def running_real_hub(broker: RunningBroker, pki: PkiFixture, workdir: Path,
                           **sections: dict[str, Any]) -> AsyncIterator[RealHub]:
    """``sections`` merge into the hub's config (e.g. ``sites``, ``forecast``)."""
    db = workdir / f"hub-{uuid.uuid4().hex[:6]}.db"
    cfg = parse(raw_config(pki, broker.port, db, **sections), workdir / "hub.toml")
    commander_id = pki.take_hub()  # its own identity: the broker binds the client id to the CN
    async with running(cfg) as hub, \
            aiomqtt.Client(broker.host, broker.port, identifier=commander_id, protocol=aiomqtt.ProtocolVersion.V5,
                           tls_context=client_context(pki.files(commander_id))) as commander:
        yield RealHub(hub, db, commander)
