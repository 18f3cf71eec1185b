"""The delivery loop: sends what the outbox says is due, records what came back, escalates.

:class:`Forwarder` is the shell around :mod:`hub.forward.outbox` (state) and
:mod:`hub.forward.policy` (decisions). One pass (:meth:`Forwarder.step`):

1. escalate every delivery that is due for it;
2. claim due deliveries (up to ``concurrency``; each claim opens an attempt row first);
3. post them concurrently through the :class:`Transport`, each bounded by its recipient's
   timeout, and record each outcome with the next attempt's time (full-jitter backoff from
   :mod:`shared.retry`).

:meth:`Forwarder.run` recovers attempts a stopped hub left open, then repeats passes, sleeping
until the next delivery or escalation is due, or until :meth:`Forwarder.wake` (after an enqueue).
All state is in SQLite, so a hub killed at any point resumes where it was: at worst an attempt
whose acknowledgement was lost is made again, and the receiver dedupes it by identifier.

Transport rule (see :mod:`hub.forward.config`): https with TLS 1.3 and a verified server (our
client certificate when configured); plain http only to loopback receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp

from hub.forward import outbox
from hub.forward.capread import CapSchema
from hub.forward.config import ForwardConfig, Recipient, check_url
from hub.forward.errors import DeliveryFailed
from hub.forward.outbox import Claim, Enqueued, EscalationSink
from hub.forward.plan import Notice
from hub.forward.policy import Outcome, backoff_s, classify
from hub.forward.tx import WriteGateway, WriteTx
from shared.errors import TlsSetupError
from shared.tls import TlsFiles, client_context, trusting

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES: Final = 64 * 1024
IDLE_S: Final = 30.0
"""The longest the loop sleeps with nothing due (a safety net; :meth:`Forwarder.wake` is the norm)."""
MIN_IDLE_S: Final = 0.05
"""The shortest sleep when idle, so that no unforeseen state can make the loop spin."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


class Transport(Protocol):
    """Posts one payload to a recipient; raises :class:`DeliveryFailed` when nothing came back."""

    async def post(self, recipient: Recipient, body: bytes, content_type: str, identifier: str) -> Answer: ...


def tls_context(recipient: Recipient) -> ssl.SSLContext | None:
    """The recipient's TLS context: TLS 1.3 only, server verified; our certificate if configured."""
    tls = recipient.tls
    if tls is None:
        return None
    if tls.cert is not None and tls.key is not None:
        return client_context(TlsFiles(ca=tls.ca, cert=tls.cert, key=tls.key))
    # Server authentication only (no client certificate configured): the same rules as
    # shared.tls.client_context, without loading a certificate of ours.
    return trusting(ssl.Purpose.SERVER_AUTH, tls.ca)


class HttpTransport:
    """The real transport: one aiohttp session, one TLS context per recipient (built once)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._contexts: dict[str, ssl.SSLContext | None] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[HttpTransport]:
        async with aiohttp.ClientSession(headers={"User-Agent": "jikimi-hub-forward/1"}) as session:
            yield cls(session)

    def _context(self, r: Recipient) -> ssl.SSLContext | None:
        if r.name not in self._contexts:
            self._contexts[r.name] = tls_context(r)
        return self._contexts[r.name]

    async def post(self, recipient: Recipient, body: bytes, content_type: str, identifier: str) -> Answer:
        problem = check_url(recipient.url)
        if problem:  # config parsing refuses these; a second guard where the bytes leave
            raise DeliveryFailed(f"{recipient.url}: {problem}")
        ctx = self._context(recipient)
        headers = {"Content-Type": content_type, "Idempotency-Key": identifier, "X-Jikimi-Identifier": identifier}
        timeout = aiohttp.ClientTimeout(total=recipient.timeout_s)
        try:
            async with self.session.post(recipient.url, data=body, headers=headers, timeout=timeout,
                                         ssl=ctx if ctx is not None else True, allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES)
                return Answer(resp.status, raw.decode("utf-8", errors="replace"))
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise DeliveryFailed(f"{recipient.url}: {type(exc).__name__}: {exc}") from exc


def _no_escalation_sink(tx: WriteTx, escalation: outbox.Escalation) -> None:
    """Without a console to tell, the escalation is in the log (``forward.escalated``) and the audit."""
    return None


@dataclass(frozen=True)
class StepReport:
    attempted: int
    acked: int
    escalated: int


class Forwarder:
    """Delivers the outbox: ``run()`` as a named task in the hub's TaskGroup; ``enqueue()`` and
    ``wake()`` from anywhere in the same event loop."""

    def __init__(self, config: ForwardConfig, gateway: WriteGateway, transport: Transport, *,
                 escalation: EscalationSink = _no_escalation_sink, clock: Callable[[], float] = time.time,
                 schema: CapSchema | None = None, rng: random.Random | None = None) -> None:
        self.config = config
        self.gateway = gateway
        self.transport = transport
        self.escalation = escalation
        self.clock = clock
        self.schema = schema
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was enqueued (or the config changed): look again now."""
        self._wake.set()

    async def enqueue(self, notice: Notice, *, pictures: dict[int, bytes] | None = None) -> Enqueued | None:
        """Queue ``notice`` in its own transaction and wake the loop.

        The hub may instead call :func:`hub.forward.outbox.enqueue` inside the transaction that
        records the alarm transition (atomic with it), then :meth:`wake` after the commit.
        """
        now = self.clock()
        result = await self.gateway.call(
            lambda tx: outbox.enqueue(tx, notice, self.config, now=now, pictures=pictures, schema=self.schema))
        self.wake()
        return result

    async def recover(self) -> int:
        now = self.clock()
        n = await self.gateway.call(lambda tx: outbox.recover(tx, self.config, now))
        if n:
            log.warning("forward.recovered_interrupted_attempts", extra={"count": n})
        return n

    async def step(self) -> StepReport:
        """One pass, awaited to the end (tests, tools): escalate what is due, then make every due
        attempt and record its outcome."""
        escalated = await self._escalate()
        claims = await self._claim(self.config.concurrency)
        if not claims:
            return StepReport(0, 0, escalated)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._attempt(c), name=f"forward-{c.delivery_id}-{c.n}") for c in claims]
        acked = sum(1 for t in tasks if t.result() is Outcome.ACKED)
        return StepReport(len(claims), acked, escalated)

    async def _escalate(self) -> int:
        now = self.clock()
        escalated = await self.gateway.call(lambda tx: outbox.escalate(tx, self.config, now, self.escalation))
        for esc in escalated:
            log.warning("forward.escalated", extra={
                "delivery": esc.delivery_id, "identifier": esc.identifier, "recipient": esc.recipient,
                "escalated_to": esc.escalated_to, "state": esc.state})
        return len(escalated)

    async def _attempt(self, c: Claim) -> Outcome:
        status: int | None = None
        try:
            answer = await self.transport.post(c.recipient, c.body, c.content_type, c.identifier)
            status = answer.status
            outcome, error = classify(answer.status, answer.body, c.identifier)
        except DeliveryFailed as exc:
            outcome, error = Outcome.RETRY, str(exc)
        except TlsSetupError as exc:  # the recipient's files are unusable: tried again, and it escalates
            outcome, error = Outcome.RETRY, str(exc)
        r = c.recipient
        wait = backoff_s(c.in_round, r.initial_backoff_s, r.max_backoff_s, self.rng)
        now = self.clock()
        nxt = await self.gateway.call(
            lambda tx: outbox.finish(tx, c, outcome, now=now, error=error, status=status, wait_s=wait))
        level = logging.INFO if outcome is Outcome.ACKED else logging.WARNING
        log.log(level, "forward.attempt", extra={
            "delivery": c.delivery_id, "identifier": c.identifier, "recipient": r.name, "n": c.n,
            "outcome": outcome.value, "state": nxt.state.value, "http_status": status, "error": error})
        return outcome

    async def _idle(self) -> None:
        """Sleep until the next delivery or escalation is due, or until woken."""
        nxt = await self.gateway.call(lambda tx: outbox.next_wake(tx.conn))
        delay = IDLE_S if nxt is None else min(IDLE_S, max(MIN_IDLE_S, nxt - self.clock()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _claim(self, limit: int) -> list[Claim]:
        now = self.clock()
        return await self.gateway.call(lambda tx: outbox.claim(tx, self.config, now, limit))

    async def _attempt_then_wake(self, c: Claim) -> None:
        try:
            await self._attempt(c)
        finally:
            self.wake()  # a slot is free, and later deliveries of its thread may be unblocked

    async def run(self) -> None:
        """Recover, then deliver forever, up to ``concurrency`` attempts in flight (cancel to stop).

        A slow recipient holds only its own slot: new messages to others go out meanwhile.
        """
        await self.recover()
        inflight: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as tg:
            while True:
                self._wake.clear()
                await self._escalate()
                free = self.config.concurrency - len(inflight)
                claims = await self._claim(free) if free > 0 else []
                for c in claims:
                    task = tg.create_task(self._attempt_then_wake(c), name=f"forward-{c.delivery_id}-{c.n}")
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                if not claims:
                    await self._idle()
