"""The reference alert receiver: what a city centre can run to accept jikimi's alerts.

``jikimi receiver --listen tcp://HOST:PORT`` (and :func:`serve` in-process, for the demo and the
tests) accepts POSTed alerts in the three forwarding formats, verifies, stores and acknowledges
them:

- **CAP 1.2 XML** (``application/cap+xml``, ``application/xml``, ``text/xml``): validated against
  the OASIS schema when one is loaded, then read tolerantly (a message that does not validate is
  stored with its problems, or refused with 422 under ``strict``); every embedded resource
  (``derefUri``) must hash to its ``<digest>`` (SHA-1, CAP 1.2). With a CA bundle
  (``--ca-bundle``), its XML-DSig signature is verified against those CAs alone
  (:func:`hub.forward.capsign.verify`): whether it verified, and the signing certificate's CN or
  why not, are stored with the message, and ``strict`` refuses (422) one that does not verify.
- **Smart-city platform event JSON** (an object with ``evtId``): keyed by ``msgId``.
- **Webhook JSON** (an object with ``identifier``).

Rules:

1. Dedupe by (sender, identifier): a message received again is not stored again, and is
   acknowledged again (the sender did not get the first acknowledgement).
2. The acknowledgement is HTTP 200 with a JSON body holding the identifier; it is sent only
   after the message is committed to SQLite.
3. ``fail_first`` N: the first N requests get 503 and are not stored (for tests and demos).
4. With TLS, the client certificate is verified against the CA when ``require_client_cert``;
   its CN is stored with the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from hub.forward import capsign, keti, webhook
from hub.forward.capread import CapSchema, read
from hub.forward.capsign import SignatureCheck
from hub.forward.errors import CapError
from shared.tls import TlsFiles, server_context

log = logging.getLogger(__name__)

MAX_BODY: Final = 8 * 1024 * 1024
PATH: Final = "/alerts"
_XML: Final = frozenset({"application/cap+xml", "application/xml", "text/xml"})


@dataclass(frozen=True)
class Received:
    """One message as stored."""

    sender: str
    identifier: str
    format: str
    msg_type: str
    sent: str
    event_id: str
    received_at: float
    valid: bool
    problems: tuple[str, ...]
    client: str
    receptions: int
    body: bytes
    verified: bool | None = None
    """Whether the CAP signature verified; None when not checked (no CA bundle, or not CAP)."""
    signer: str = ""
    signature_problem: str = ""


@dataclass(frozen=True)
class _Parsed:
    sender: str
    identifier: str
    format: str
    msg_type: str
    sent: str
    event_id: str
    problems: tuple[str, ...]
    signature: SignatureCheck | None = None


class ReceiverStore:
    """The receiver's SQLite file (or memory): one row per (sender, identifier)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS received ("
            " sender TEXT NOT NULL, identifier TEXT NOT NULL, format TEXT NOT NULL, msg_type TEXT NOT NULL,"
            " sent TEXT NOT NULL, event_id TEXT NOT NULL, received_at REAL NOT NULL, valid INTEGER NOT NULL,"
            " problems TEXT NOT NULL, client TEXT NOT NULL, receptions INTEGER NOT NULL, body BLOB NOT NULL,"
            " PRIMARY KEY (sender, identifier))"
        )
        have = {str(r[1]) for r in self.conn.execute("PRAGMA table_info(received)")}
        for column in ("verified INTEGER", "signer TEXT NOT NULL DEFAULT ''",
                       "signature_problem TEXT NOT NULL DEFAULT ''"):
            if column.split()[0] not in have:  # a file from before signatures were checked
                self.conn.execute(f"ALTER TABLE received ADD COLUMN {column}")

    def add(self, p: _Parsed, body: bytes, client: str, now: float) -> bool:
        """Store the message unless it is there; count the reception. True if it was new."""
        sig = p.signature
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO received (sender, identifier, format, msg_type, sent, event_id, received_at,"
                " valid, problems, client, receptions, body, verified, signer, signature_problem)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (p.sender, p.identifier, p.format, p.msg_type, p.sent, p.event_id, now, int(not p.problems),
                 "\n".join(p.problems), client, body, None if sig is None else int(sig.verified),
                 sig.signer if sig else "", sig.problem if sig else ""),
            )
            new = cur.rowcount == 1
            if not new:
                self.conn.execute("UPDATE received SET receptions = receptions + 1 WHERE sender = ? AND identifier = ?",
                                  (p.sender, p.identifier))
            self.conn.execute("COMMIT")
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        return new

    def all(self) -> list[Received]:
        rows = self.conn.execute(
            "SELECT sender, identifier, format, msg_type, sent, event_id, received_at, valid, problems, client,"
            " receptions, body, verified, signer, signature_problem FROM received ORDER BY rowid"
        )
        return [Received(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), float(r[6]), bool(r[7]),
                         tuple(p for p in str(r[8]).split("\n") if p), str(r[9]), int(r[10]), bytes(r[11]),
                         None if r[12] is None else bool(r[12]), str(r[13]), str(r[14]))
                for r in rows]

    def close(self) -> None:
        self.conn.close()


def _client_cn(request: web.Request) -> str:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def parse_cap(body: bytes, schema: CapSchema | None, ca_bundle: Path | None = None) -> _Parsed:
    """Verify and read a CAP message (its signature too, given the CAs to check it against);
    raises CapError if it cannot be read at all."""
    problems = list(schema.errors(body)) if schema is not None else []
    msg = read(body)
    problems.extend(msg.tolerated)
    for info in msg.infos:
        for res in info.resources:
            if res.deref is None:
                continue
            if res.size is not None and res.size != len(res.deref):
                problems.append(f"resource {res.desc!r}: size {res.size} but {len(res.deref)} bytes embedded")
            sha1 = hashlib.sha1(res.deref, usedforsecurity=False).hexdigest()
            if res.digest is not None and res.digest.lower() != sha1:
                problems.append(f"resource {res.desc!r}: the embedded bytes do not match the digest")
    event_id = msg.incidents[0] if msg.incidents else ""
    signature = capsign.verify(body, ca_bundle) if ca_bundle is not None else None
    return _Parsed(msg.sender, msg.identifier, "cap", msg.msg_type, msg.sent, event_id, tuple(problems), signature)


def parse_json(body: bytes) -> _Parsed:
    """Read a platform event or a webhook alert; raises msgspec errors if it is neither."""
    probe = msgspec.json.decode(body)
    if isinstance(probe, dict) and "evtId" in probe:
        ev = keti.decode(body)
        msg_type = {v: k.value for k, v in keti.OCR_STS.items()}.get(ev.ocrSts, ev.ocrSts)
        return _Parsed(ev.sender, ev.msgId, "keti", msg_type, ev.ocrDtm, ev.evtId, ())
    wh = webhook.decode(body)
    return _Parsed(wh.sender, wh.identifier, "webhook", wh.msgType, wh.sent, wh.eventId, ())


class Receiver:
    """The request handler and its counters; :func:`serve` runs it."""

    def __init__(self, store: ReceiverStore, *, schema: CapSchema | None = None, fail_first: int = 0,
                 strict: bool = False, ca_bundle: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.schema = schema
        self.ca_bundle = ca_bundle
        self.fail_first = fail_first
        self.strict = strict
        self.clock = clock
        self.requests = 0
        self.failed = 0
        self.duplicates = 0
        self.changed = asyncio.Event()
        """Set after every request (tests wait on it rather than sleep)."""

    def app(self, middlewares: Sequence[Middleware] = ()) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=list(middlewares))
        app.router.add_post(PATH, self.handle)
        app.router.add_post("/", self.handle)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "stored": len(self.store.all())})

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            return await self._handle(request)
        finally:
            self.changed.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.failed < self.fail_first:
            self.failed += 1
            log.info("receiver.failing_on_purpose", extra={"n": self.failed, "of": self.fail_first})
            return web.json_response({"error": "failing on purpose (fail-first)"}, status=503)
        ctype = request.content_type
        try:
            if ctype in _XML:
                parsed = parse_cap(body, self.schema, self.ca_bundle)
            elif ctype == "application/json":
                parsed = parse_json(body)
            else:
                return web.json_response({"error": f"unsupported content type {ctype!r}"}, status=415)
        except CapError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return web.json_response({"error": f"not a platform event or webhook alert: {exc}"}, status=400)
        sig = parsed.signature
        if self.strict and sig is not None and not sig.verified:
            return web.json_response({"error": "signature not verified", "identifier": parsed.identifier,
                                      "problems": [f"signature: {sig.problem}", *parsed.problems]}, status=422)
        if self.strict and parsed.problems:
            return web.json_response({"error": "invalid", "identifier": parsed.identifier,
                                      "problems": list(parsed.problems)}, status=422)
        client = _client_cn(request)
        new = self.store.add(parsed, body, client, self.clock())
        if not new:
            self.duplicates += 1
        log.info("receiver.stored" if new else "receiver.duplicate", extra={
            "identifier": parsed.identifier, "sender": parsed.sender, "format": parsed.format,
            "msg_type": parsed.msg_type, "valid": not parsed.problems, "client": client,
            "signature_verified": None if sig is None else sig.verified, "signer": sig.signer if sig else ""})
        answer: dict[str, object] = {"identifier": parsed.identifier, "status": "accepted" if new else "duplicate",
                                     "valid": not parsed.problems, "problems": list(parsed.problems)}
        if sig is not None:
            answer["signature"] = {"verified": sig.verified, "signer": sig.signer, "problem": sig.problem}
        return web.json_response(answer)


@dataclass
class RunningReceiver:
    url: str
    host: str
    port: int
    receiver: Receiver

    def alerts(self) -> list[Received]:
        return self.receiver.store.all()

    async def wait_for(self, cond: Callable[[], bool], within_s: float = 20.0) -> None:
        """Wait until ``cond()`` holds, re-checking after every request; TimeoutError after ``within_s``."""
        async with asyncio.timeout(within_s):
            while not cond():
                self.receiver.changed.clear()
                if cond():
                    return
                await self.receiver.changed.wait()


@asynccontextmanager
async def serve(*, host: str = "127.0.0.1", port: int = 0, db: Path | None = None, tls: TlsFiles | None = None,
                require_client_cert: bool = False, crl: Path | None = None, fail_first: int = 0,
                strict: bool = False, schema: CapSchema | None = None, ca_bundle: Path | None = None,
                middlewares: Sequence[Middleware] = ()) -> AsyncIterator[RunningReceiver]:
    """Run a receiver until the block ends; yields its URL (``.../alerts``) and its store.

    ``ca_bundle``: verify CAP signatures against these CAs (PEM) and record the outcome."""
    store = ReceiverStore(db)
    receiver = Receiver(store, schema=schema, fail_first=fail_first, strict=strict, ca_bundle=ca_bundle)
    ctx: ssl.SSLContext | None = None
    if tls is not None:
        ctx = server_context(tls, require_client_cert=require_client_cert, crl=crl)
    runner = web.AppRunner(receiver.app(middlewares), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ctx)
        await site.start()
        bound = runner.addresses[0]
        bound_port = int(bound[1])
        shown = f"[{host}]" if ":" in host else host
        url = f"{'https' if ctx else 'http'}://{shown}:{bound_port}{PATH}"
        yield RunningReceiver(url, host, bound_port, receiver)
    finally:
        await runner.cleanup()
        store.close()
