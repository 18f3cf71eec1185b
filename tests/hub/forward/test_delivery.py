"""Delivery to real receivers over HTTP(S) on loopback: once from the receiver's view, restart-safe,
escalated when unacknowledged."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from hub import receiver
from hub.forward import keti, ledger, outbox, webhook
from hub.forward.config import Format, ForwardConfig, RecipientKind
from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.outbox import Escalation
from hub.forward.plan import Change
from hub.forward.tx import LocalWriter, WriteTx
from shared.tls import TlsFiles
from tests.conftest import PkiFixture
from tests.fakes.recipients import CentreFaults
from tests.hub.forward.helpers import T0, Clock, FakeAudit, config, notice, recipient
from trust.pki import Role

MAX_STEPS = 200


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    async with HttpTransport.open() as t:
        yield t


async def settle(fwd: Forwarder, db: LocalWriter) -> None:
    """Step until no delivery is pending (bounded)."""
    for _ in range(MAX_STEPS):
        await fwd.step()
        if not await db.read(lambda c: ledger.deliveries(c, state="pending")):
            return
    raise AssertionError("deliveries still pending after the step limit")


async def test_a_receiver_failing_the_first_attempts_gets_each_alert_once_in_order(
    db: LocalWriter, transport: HttpTransport, schema: object, audit: FakeAudit, clock: Clock
) -> None:
    async with receiver.serve(fail_first=3) as rcv:
        cfg = config(recipient("centre", rcv.url))
        fwd = Forwarder(cfg, db, transport, clock=clock)
        alert = await fwd.enqueue(notice(Change.RAISE))
        update = await fwd.enqueue(notice(Change.UPDATE, at=T0 + 30))
        assert alert is not None
        assert update is not None
        await settle(fwd, db)
        stored = rcv.alerts()
    assert [(a.identifier, a.msg_type, a.receptions) for a in stored] == [
        (alert.identifier, "Alert", 1), (update.identifier, "Update", 1)]
    assert all(a.valid for a in stored)
    rows = await db.read(lambda c: ledger.deliveries(c))
    assert [(r.state, r.attempts) for r in rows] == [("acked", 4), ("acked", 1)]
    tries = await db.read(lambda c: ledger.attempts(c, rows[0].id))
    assert [(a.outcome, a.http_status) for a in tries] == [("retry", 503)] * 3 + [("acked", 200)]
    # every attempt and every outcome is audited
    assert audit.actions("forward.attempt") == ["forward.attempt"] * 5
    assert audit.actions("forward.outcome") == ["forward.outcome"] * 5


async def test_a_2xx_without_the_identifier_is_no_acknowledgement(
    db: LocalWriter, transport: HttpTransport, clock: Clock
) -> None:
    faults = CentreFaults(strip_ack=True)
    async with receiver.serve(middlewares=[faults.middleware]) as rcv:
        fwd = Forwarder(config(recipient("centre", rcv.url)), db, transport, clock=clock)
        sent = await fwd.enqueue(notice())
        assert sent is not None
        await fwd.step()
        await fwd.step()
        faults.strip_ack = False
        await settle(fwd, db)
        stored = rcv.alerts()
    assert [(a.identifier, a.receptions) for a in stored] == [(sent.identifier, 3)]
    (row,) = await db.read(lambda c: ledger.deliveries(c))
    assert (row.state, row.attempts) == ("acked", 3)


async def test_platform_event_and_webhook_recipients_get_their_formats(
    db: LocalWriter, transport: HttpTransport, clock: Clock
) -> None:
    async with receiver.serve() as rcv:
        cfg = config(recipient("platform", rcv.url, format=Format.KETI),
                     recipient("agency", rcv.url, format=Format.WEBHOOK, kind=RecipientKind.AGENCY))
        fwd = Forwarder(cfg, db, transport, clock=clock)
        first = await fwd.enqueue(notice(Change.RAISE))
        last = await fwd.enqueue(notice(Change.CLEAR, at=T0 + 300))
        assert first is not None
        assert last is not None
        await settle(fwd, db)
        stored = rcv.alerts()
    # one receiver plays both recipients: each message arrives once per format, deduped by identifier
    assert sorted((a.format, a.msg_type) for a in stored) == [("keti", "Alert"), ("keti", "Cancel")]
    assert {a.receptions for a in stored} == {2}
    bodies = [msgspec.json.decode(a.body) for a in stored]
    assert bodies[0]["ocrSts"] == "10"
    assert bodies[1]["ocrSts"] == "91"
    assert {b["evtId"] for b in bodies} == {first.identifier}
    rows = await db.read(lambda c: ledger.deliveries(c))
    assert {r.state for r in rows} == {"acked"}
    hook = webhook.decode(await db.read(lambda c: ledger.payload_of(c, last.identifier, "webhook")))
    assert hook.msgType == "Cancel"
    assert hook.references[0].split(",")[1] == first.identifier
    platform = keti.decode(await db.read(lambda c: ledger.payload_of(c, first.identifier, "keti")))
    assert platform.location is not None
    assert (platform.evtGrad, platform.location.y) == ("1", 37.2636)


async def test_a_permanent_refusal_fails_at_once_and_escalates(
    db: LocalWriter, transport: HttpTransport, clock: Clock
) -> None:
    seen: list[Escalation] = []

    def console(tx: WriteTx, esc: Escalation) -> None:
        seen.append(esc)
    async with receiver.serve() as rcv:
        cfg = config(recipient("centre", rcv.url.replace("/alerts", "/wrong-path")))
        fwd = Forwarder(cfg, db, transport, clock=clock, escalation=console)
        await fwd.enqueue(notice())
        await fwd.step()
        assert [r.state for r in await db.read(lambda c: ledger.deliveries(c))] == ["failed"]
        await fwd.step()
    assert [(e.recipient, e.state, e.escalated_to) for e in seen] == [("centre", "failed", None)]


async def test_an_unacknowledged_delivery_escalates_after_the_set_time(
    db: LocalWriter, transport: HttpTransport, clock: Clock, audit: FakeAudit
) -> None:
    """The centre never answers; after escalate_after_s the console is told and 119 gets the alert."""
    consoled: list[Escalation] = []

    def console(tx: WriteTx, esc: Escalation) -> None:
        consoled.append(esc)

    faults = CentreFaults(down=True)
    async with receiver.serve(middlewares=[faults.middleware]) as centre, receiver.serve() as fire:
        cfg = config(
            recipient("centre", centre.url, escalate_after_s=120.0, escalate_to="fire-119"),
            recipient("fire-119", fire.url, kind=RecipientKind.FIRE_119, areas=("nowhere",)),
        )
        fwd = Forwarder(cfg, db, transport, clock=clock, escalation=console)
        sent = await fwd.enqueue(notice())
        assert sent is not None
        assert [n for _, n in sent.deliveries] == ["centre"]
        await fwd.step()
        clock.advance(119.0)
        await fwd.step()
        assert consoled == []
        assert fire.alerts() == []
        clock.advance(1.0)
        await fwd.step()
        assert [(e.recipient, e.escalated_to) for e in consoled] == [("centre", "fire-119")]
        await settle_recipient(fwd, db, "fire-119")
        assert [a.identifier for a in fire.alerts()] == [sent.identifier]
        clock.advance(1000.0)
        await fwd.step()
        assert len(consoled) == 1  # once only
        # the escalation recipient now belongs to the thread: it gets the Cancel too
        faults.down = False
        end = await fwd.enqueue(notice(Change.CLEAR, at=T0 + 1200))
        assert end is not None
        assert sorted(n for _, n in end.deliveries) == ["centre", "fire-119"]
        await settle(fwd, db)
        assert [a.msg_type for a in fire.alerts()] == ["Alert", "Cancel"]
    assert audit.actions("forward.escalate") == ["forward.escalate"]


async def settle_recipient(fwd: Forwarder, db: LocalWriter, name: str) -> None:
    for _ in range(MAX_STEPS):
        await fwd.step()
        rows = await db.read(lambda c: ledger.deliveries(c))
        if all(r.state != "pending" for r in rows if r.recipient == name):
            return
    raise AssertionError(f"{name} still pending")


async def test_an_operator_can_send_a_failed_delivery_again(
    db: LocalWriter, transport: HttpTransport, clock: Clock, audit: FakeAudit
) -> None:
    async with receiver.serve(fail_first=2) as rcv:
        fwd = Forwarder(config(recipient("centre", rcv.url, max_attempts=2)), db, transport, clock=clock)
        await fwd.enqueue(notice())
        await settle(fwd, db)
        (row,) = await db.read(lambda c: ledger.deliveries(c))
        assert (row.state, row.attempts) == ("failed", 2)
        await db.call(lambda tx: outbox.requeue(tx, row.id, "sam", "centre is back", now=clock()))
        await settle(fwd, db)
        (row,) = await db.read(lambda c: ledger.deliveries(c))
        assert row.state == "acked"
        assert len(rcv.alerts()) == 1
    assert "forward.requeue" in audit.actions()


@pytest.fixture(scope="module")
def centre_cn(test_pki: PkiFixture) -> str:
    cn = f"hub-rcv-{uuid.uuid4().hex[:8]}"
    test_pki.pki.issue(cn, Role.HUB)  # server auth, SAN localhost and 127.0.0.1
    return cn


async def test_https_with_client_certificates_both_ways(
    db: LocalWriter, transport: HttpTransport, clock: Clock, test_pki: PkiFixture, centre_cn: str
) -> None:
    async with receiver.serve(tls=test_pki.files(centre_cn), require_client_cert=True) as rcv:
        hub_files = test_pki.files(test_pki.hub)
        assert rcv.url.startswith("https://")
        cfg = config(
            recipient("mtls", rcv.url, tls=_tls(hub_files)),
            recipient("no-cert", rcv.url, tls=_tls(hub_files, with_cert=False), max_attempts=1,
                      areas=("suwon-*",)),
        )
        fwd = Forwarder(cfg, db, transport, clock=clock)
        await fwd.enqueue(notice())
        await settle(fwd, db)
        stored = rcv.alerts()
    assert [a.client for a in stored] == [test_pki.hub]
    rows = {r.recipient: r for r in await db.read(lambda c: ledger.deliveries(c))}
    assert rows["mtls"].state == "acked"
    # TLS 1.3: the server refuses the missing certificate after the handshake (a reset)
    assert rows["no-cert"].state == "failed"
    assert rows["no-cert"].last_error


def _tls(files: TlsFiles, *, with_cert: bool = True) -> object:
    from hub.forward.config import RecipientTls

    return RecipientTls(ca=files.ca, cert=files.cert if with_cert else None, key=files.key if with_cert else None)


async def test_a_hub_killed_mid_attempt_resumes_and_the_receiver_still_has_the_alert_once(
    tmp_path: Path, transport: HttpTransport, audit: FakeAudit
) -> None:
    """The forwarder process is SIGKILLed after the receiver stored the alert but before the
    acknowledgement arrived; a new forwarder on the same database sends it again, the receiver
    dedupes it, and the delivery ends acknowledged."""
    path = tmp_path / "hub.db"
    faults = CentreFaults()
    faults.hold_next_ack()
    async with receiver.serve(fail_first=3, middlewares=[faults.middleware]) as rcv:
        cfg = config(recipient("centre", rcv.url))
        async with LocalWriter.open(path, audit) as w:
            sent = await w.call(lambda tx: outbox.enqueue(tx, notice(), cfg, now=T0))
        assert sent is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.hub.forward.forwarder_proc", str(path), rcv.url,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[3])
        try:
            async with asyncio.timeout(60):
                await faults.held.wait()
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        faults.release.set()
        with sqlite3.connect(path) as conn:
            (row,) = ledger.deliveries(conn)
            assert (row.state, row.attempts) == ("pending", 4)
            assert [a.outcome for a in ledger.attempts(conn, row.id)] == ["retry", "retry", "retry", None]
        async with LocalWriter.open(path, audit) as w:
            fwd = Forwarder(cfg, w, transport)
            assert await fwd.recover() == 1
            await settle(fwd, w)
            (row,) = await w.read(lambda c: ledger.deliveries(c))
            tries = await w.read(lambda c: ledger.attempts(c, row.id))
        stored = rcv.alerts()
    assert [(a.identifier, a.receptions) for a in stored] == [(sent.identifier, 2)]
    assert row.state == "acked"
    assert [a.outcome for a in tries] == ["retry", "retry", "retry", "interrupted", "acked"]


async def test_the_run_loop_delivers_what_is_enqueued_while_it_runs(
    db: LocalWriter, transport: HttpTransport
) -> None:
    async with receiver.serve(fail_first=1) as rcv:
        fwd = Forwarder(config(recipient("centre", rcv.url)), db, transport)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(fwd.run(), name="forwarder")
            sent = await fwd.enqueue(notice())
            assert sent is not None
            await rcv.wait_for(lambda: len(rcv.alerts()) == 1)
            task.cancel()
        assert rcv.alerts()[0].identifier == sent.identifier


def test_config_types_used_here_are_frozen() -> None:
    cfg = config()
    assert isinstance(cfg, ForwardConfig)
    with pytest.raises(AttributeError):
        cfg.sender = "x"  # type: ignore[misc]
