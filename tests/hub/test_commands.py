"""Commands through the API to a fake edge on the real broker: signatures, expiry, replies, the
two-person rule for openings, stale-data refusal, timeouts and area operations."""

from __future__ import annotations

import sqlite3
import time

import pytest

from hub.commands import CommandState, Draft, OperationKind
from hub.roles import Role
from hub.service import Hub, running
from shared.messages import UNAUTHENTICATED, Action, Quality, ReplyStatus, SiteState
from shared.signing import load_public_key, verify_command
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ConfigFactory, add_users, api_client, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

UNDERPASS = ("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "barrier_cmd", "mode", "motor_fault"))


async def bring_up(edge: FakeEdge, depth: float, *, age_s: float = 0.0, quality: Quality = Quality.GOOD) -> None:
    """Status online, birth with an underpass barrier, one water-depth reading; wait for the ack."""
    await edge.status(SiteState.ONLINE)
    await edge.birth([UNDERPASS])
    await edge.send([edge.reading("barrier-1", "water_depth_cm", depth, ts=time.time() - age_s, quality=quality)])
    await edge.wait_acked(edge.next_seq - 1)


async def command_state(hub: Hub, cmd_id: str) -> str:
    def q(c: sqlite3.Connection) -> str:
        return str(c.execute("SELECT state FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()[0])

    return await hub.reader.run(q)


async def test_close_is_signed_sent_and_tracked_to_its_terminal_reply(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """An operator's barrier.close reaches the edge signed by the hub's key with an expiry; the
    edge's received and verified replies move the command to verified."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await bring_up(edge, 20.0)
        await c.login("olive")
        resp = await c.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.close",
                                              "reason": "water over the closing depth"})
        assert resp.status == 202, await resp.text()
        cmd_id = (await resp.json())["cmd_id"]
        (cmd,) = await edge.wait_commands(1)
        verify_command(cmd, load_public_key(test_pki.dir / "command-signing" / "pub.pem"))
        assert cmd.cmd_id == cmd_id
        assert cmd.action is Action.BARRIER_CLOSE
        assert cmd.issued_by == "olive"
        assert cmd.not_after == pytest.approx(cmd.issued_at + 30)
        await edge.send([edge.reply(cmd_id, ReplyStatus.RECEIVED)])
        await edge.send([edge.reply(cmd_id, ReplyStatus.VERIFIED, "barrier closed, read back")])
        await edge.wait_acked(edge.next_seq - 1)
        view = await (await c.get(f"/api/commands/{cmd_id}")).json()
        assert view["state"] == "verified"
        assert [r["status"] for r in view["replies"]] == ["received", "verified"]


async def test_a_rejection_of_a_forgery_under_a_commands_id_gives_way_to_the_real_result(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Someone publishes a forgery under a real command's cmd_id; the edge rejects it as
    unauthenticated and then runs the real one: the hub, which signed the real command, ends it
    verified, not rejected. A second unauthenticated rejection after that changes nothing."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await bring_up(edge, 20.0)
        await c.login("olive")
        resp = await c.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.close",
                                              "reason": "water over the closing depth"})
        cmd_id = (await resp.json())["cmd_id"]
        await edge.wait_commands(1)
        forged = f"{UNAUTHENTICATED}signature: does not verify"
        await edge.send([edge.reply(cmd_id, ReplyStatus.REJECTED, forged)])
        await edge.wait_acked(edge.next_seq - 1)
        assert await command_state(api_hub, cmd_id) == "rejected"  # all the hub knows so far
        await edge.send([edge.reply(cmd_id, ReplyStatus.VERIFIED, "barrier closed, read back")])
        await edge.send([edge.reply(cmd_id, ReplyStatus.REJECTED, forged)])
        await edge.wait_acked(edge.next_seq - 1)
        assert await command_state(api_hub, cmd_id) == "verified"


async def test_an_action_the_kind_lacks_is_refused_before_signing(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """siren.on to an underpass (its profile has no siren) is refused (422) with the reason from
    the vocabulary, and nothing reaches the edge; the console is served that vocabulary."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await bring_up(edge, 20.0)
        await c.login("olive")
        resp = await c.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "siren.on",
                                              "reason": "warn the drivers"})
        assert resp.status == 422
        assert "a underpass does not take siren.on" in (await resp.json())["error"]
        vocab = await (await c.get("/api/vocabulary")).json()
        underpass = next(k for k in vocab["kinds"] if k["kind"] == "underpass")
        assert "siren.on" not in underpass["actions"]
        assert edge.commands == []


async def test_the_same_user_cannot_approve_their_own_open(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """A supervisor's barrier.open waits for approval; their own approval is refused (422) and
    nothing reaches the edge; a second supervisor's approval sends it with both names."""
    ca = test_pki.dir / "ca.pem"
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, ca) as sam, api_client(api_hub, ca) as sue:
        await bring_up(edge, 2.0)
        await sam.login("sam")
        await sue.login("sue")
        resp = await sam.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.open",
                                                "reason": "water gone, reopen the road"})
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        assert body["state"] == "awaiting_approval"
        cmd_id = body["cmd_id"]
        own = await sam.post(f"/api/commands/{cmd_id}/approve", {"reason": "looks fine"})
        assert own.status == 422
        assert "two-person" in (await own.json())["error"]
        assert await command_state(api_hub, cmd_id) == "awaiting_approval"
        assert edge.commands == []
        ok = await sue.post(f"/api/commands/{cmd_id}/approve", {"reason": "checked CCTV, road dry"})
        assert ok.status == 202, await ok.text()
        (cmd,) = await edge.wait_commands(1)
        assert cmd.action is Action.BARRIER_OPEN
        assert cmd.issued_by == "sam"
        assert cmd.approved_by == ["sue"]
        audit = await (await sam.get("/api/audit")).json()
        actions = [(r["actor"], r["action"]) for r in audit if r["target"] == f"command/{cmd_id}"]
        assert actions == [("sam", "command.requested"), ("sam", "command.approval_refused"),
                           ("sue", "command.approved")]


@pytest.mark.parametrize(
    ("depth", "age_s", "quality", "why"),
    [
        (2.0, 600.0, Quality.GOOD, "stale"),
        (2.0, 0.0, Quality.STALE, "quality stale"),
        (12.0, 0.0, Quality.GOOD, "not below the reopening depth"),
    ],
)
async def test_an_open_with_stale_or_high_water_data_is_refused_at_the_hub(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, depth: float, age_s: float,
    quality: Quality, why: str
) -> None:
    """Opening needs fresh, good data below the reopening depth: old data, a stale value or water
    still high are refused (422) before anything is sent."""
    site = test_pki.take_site()
    cfg = hub_config(api={"enabled": True})
    add_users(cfg)
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site), site) as edge, \
            api_client(hub, test_pki.dir / "ca.pem") as c:
        await bring_up(edge, depth, age_s=age_s, quality=quality)
        await c.login("sam")
        resp = await c.post("/api/commands", {"site": site, "device": "barrier-1", "action": "barrier.open",
                                              "reason": "reopen"})
        assert resp.status == 422
        assert why in (await resp.json())["error"]
        assert edge.commands == []


async def test_a_command_without_a_terminal_reply_times_out(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Received but never finished: past not_after plus the grace the command is timed_out."""
    cfg = hub_config(commands={"ttl_s": 0.5, "reply_grace_s": 0.5})
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        await bring_up(edge, 20.0)
        out = await hub.ops.issue_command(Draft(site_id, "barrier-1", Action.BARRIER_CLOSE), "olive", Role.OPERATOR,
                                      "flood")
        assert out.state is CommandState.SENT
        await edge.wait_commands(1)
        await edge.send([edge.reply(out.cmd_id, ReplyStatus.RECEIVED)])

        async def timed_out() -> bool:
            return await command_state(hub, out.cmd_id) == "timed_out"

        await until(timed_out)


async def test_block_fans_out_to_every_barrier_and_gate_of_the_area(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """One block operation: a barrier.close for the underpass and a gate.close for the river gate
    of the area, both sent, tracked under one operation id."""
    a, b = test_pki.take_site(), test_pki.take_site()
    cfg = hub_config(sites={"registry": {a: {"area": "test-area"}, b: {"area": "test-area"}}})
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(a), a) as ea, \
            fake_edge(broker, test_pki.files(b), b) as eb:
        await bring_up(ea, 1.0)
        await eb.status(SiteState.ONLINE)
        await eb.birth([("gate-1", "river_gate", ("gate_state", "gate_cmd", "sign_message", "broadcast"))])
        await eb.send([eb.reading("gate-1", "gate_state", "open")])
        await eb.wait_acked(1)
        op = await hub.ops.start_operation(OperationKind.BLOCK, "test-area", "olive", Role.OPERATOR, "river rising")
        assert {c.state for c in op.commands} == {CommandState.SENT}
        (ca,) = await ea.wait_commands(1)
        (cb,) = await eb.wait_commands(1)
        assert (ca.action, cb.action) == (Action.BARRIER_CLOSE, Action.GATE_CLOSE)
