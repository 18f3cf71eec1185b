"""An operation's record per device (planned, refused up front with the reason, sent, then its
terminal state) with per-state counts, through the HTTPS API; and a self-test's per-point
report, stored with its terminal reply and shown on the command, never trusted."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import msgspec
import pytest

from hub.commands import CommandState, DeviceState, count_states, device_state
from hub.live import OperationChanged
from hub.service import Hub, running
from shared import messages, topics
from shared.messages import MAX_REPORT, PointCheck, Priority, Quality, Reply, ReplyStatus, SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ApiClient, ConfigFactory, add_users, api_client, eventually, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

AREA = "gg-ops"
UNDERPASS = ("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "barrier_cmd", "mode", "motor_fault"))
GATE = ("gate-1", "river_gate", ("gate_state", "gate_cmd", "sign_message", "broadcast", "water_level_cm"))


@pytest.mark.parametrize(("command", "device"), [
    (None, DeviceState.REFUSED),
    (CommandState.AWAITING_APPROVAL, DeviceState.PLANNED),
    (CommandState.SENDING, DeviceState.PLANNED),
    (CommandState.SENT, DeviceState.SENT),
    (CommandState.RECEIVED, DeviceState.RECEIVED),
    (CommandState.VERIFIED, DeviceState.VERIFIED),
    (CommandState.REJECTED, DeviceState.REJECTED),
    (CommandState.FAILED, DeviceState.FAILED),
    (CommandState.EXPIRED, DeviceState.EXPIRED),
    (CommandState.TIMED_OUT, DeviceState.EXPIRED),
    (CommandState.SEND_FAILED, DeviceState.FAILED),
    (CommandState.REFUSED, DeviceState.REFUSED),
    (CommandState.CANCELLED, DeviceState.REFUSED),
])
def test_each_command_state_maps_to_one_device_state(command: CommandState | None, device: DeviceState) -> None:
    """No terminal reply in time is expired; never published is failed; withdrawn is refused."""
    assert device_state(command) is device


def test_counts_name_every_state() -> None:
    assert count_states([DeviceState.SENT, DeviceState.SENT, DeviceState.REFUSED]) == {
        s.value: {DeviceState.SENT: 2, DeviceState.REFUSED: 1}.get(s, 0) for s in DeviceState}


async def _online(edge: FakeEdge, device: tuple[str, str, tuple[str, ...]], *extra: tuple[str, str, tuple[str, ...]],
                  point: str, value: float) -> None:
    await edge.status(SiteState.ONLINE)
    await edge.birth([device, *extra])
    await edge.send([edge.reading(device[0], point, value)])
    await edge.wait_acked(edge.next_seq - 1)


async def test_an_operation_records_each_device_to_its_terminal_state(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """A block over an area with a barrier, a gate and a device of a kind the vocabulary does not
    know: the unknown one is refused up front with the reason and gets no command; the others go
    from sent to the state their edge answers; counts and live events follow."""
    a, b = test_pki.take_site(), test_pki.take_site()
    cfg = hub_config(api={"enabled": True}, sites={"registry": {a: {"area": AREA}, b: {"area": AREA}}})
    add_users(cfg)
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(a), a) as ea, \
            fake_edge(broker, test_pki.files(b), b) as eb, api_client(hub, test_pki.dir / "ca.pem") as c:
        await _online(ea, UNDERPASS, ("pump-1", "pump", ("flow_lps",)), point="water_depth_cm", value=20.0)
        await _online(eb, GATE, point="water_level_cm", value=80.0)
        await c.login("olive")
        with hub.ops.bus.subscription() as live:
            r = await c.post("/api/operations", {"kind": "block", "area": AREA, "reason": "river rising"})
            assert r.status == 202, await r.text()
            op_id = (await r.json())["operation_id"]
            view = await (await c.get(f"/api/operations/{op_id}")).json()
            devices = {d["device"]: d for d in view["devices"]}
            assert devices["pump-1"]["state"] == "refused"
            assert devices["pump-1"]["cmd_id"] is None
            assert "knows no kind 'pump'" in devices["pump-1"]["reason"]
            assert {devices["barrier-1"]["state"], devices["gate-1"]["state"]} == {"sent"}
            assert (devices["barrier-1"]["action"], devices["gate-1"]["action"]) == ("barrier.close", "gate.close")
            assert (devices["barrier-1"]["kind"], devices["gate-1"]["kind"]) == ("underpass", "river_gate")
            assert view["counts"]["sent"] == 2
            assert view["counts"]["refused"] == 1
            (ca,) = await ea.wait_commands(1)
            (cb,) = await eb.wait_commands(1)
            await ea.send([ea.reply(ca.cmd_id, ReplyStatus.RECEIVED), ea.reply(ca.cmd_id, ReplyStatus.VERIFIED)])
            await eb.send([eb.reply(cb.cmd_id, ReplyStatus.REJECTED, "interlock: local mode")])

            async def settled() -> bool:
                v = await (await c.get(f"/api/operations/{op_id}")).json()
                return bool(v["counts"]["verified"] == 1 and v["counts"]["rejected"] == 1)

            await until(settled)
            changes: list[OperationChanged] = []
            async with asyncio.timeout(5):
                while not changes or changes[-1].counts["rejected"] + changes[-1].counts["verified"] < 2:
                    ev = await live.get()
                    if ev.kind == "operation" and b'"counts"' in ev.data:
                        changes.append(msgspec.json.decode(ev.data, type=OperationChanged))
        assert {ch.id for ch in changes} == {op_id}
        view = await (await c.get(f"/api/operations/{op_id}")).json()
        devices = {d["device"]: d for d in view["devices"]}
        assert devices["barrier-1"]["state"] == "verified"
        assert devices["gate-1"]["state"] == "rejected"
        assert devices["gate-1"]["reason"] == "interlock: local mode"
        assert view["counts"] == {"planned": 0, "refused": 1, "sent": 0, "received": 0, "verified": 1, "failed": 0,
                                  "rejected": 1, "expired": 0}
        (listed,) = await (await c.get("/api/operations")).json()
        assert listed["counts"] == view["counts"]
        assert (await c.get("/api/operations/no-such-op")).status == 404


def _reply(edge: FakeEdge, cmd_id: str, status: ReplyStatus, report: list[PointCheck]) -> Reply:
    r = Reply(seq=edge.next_seq, ts=time.time(), prio=Priority.REPLY, cmd_id=cmd_id, status=status, report=report)
    edge.next_seq += 1
    edge.held[r.seq] = r
    return r


async def _issue(c: ApiClient, site: str, action: str) -> str:
    resp = await c.post("/api/commands", {"site": site, "device": "barrier-1", "action": action,
                                          "reason": "check the device"})
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["cmd_id"])


async def test_a_selftest_report_is_stored_with_its_reply_and_shown_on_the_command(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """The terminal reply's per-point report is shown as sent; a point the device's birth does not
    name is marked unknown; the command's state is the reply's status, never the report's."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await _online(edge, UNDERPASS, point="water_depth_cm", value=3.0)
        await c.login("olive")
        cmd_id = await _issue(c, site_id, "device.selftest")
        await edge.wait_commands(1)
        report = [PointCheck(point="water_depth_cm", value=3.0, quality=Quality.GOOD, ok=True),
                  PointCheck(point="motor_fault", value=None, quality=Quality.COMM_FAIL, ok=False, why="comm_fail"),
                  PointCheck(point="ghost_point", value=1, quality=Quality.GOOD, ok=True)]
        # a hostile edge: "verified" while its own report says a point failed; the hub shows both as sent
        await edge.send([edge.reply(cmd_id, ReplyStatus.RECEIVED), _reply(edge, cmd_id, ReplyStatus.VERIFIED, report)])
        await edge.wait_acked(edge.next_seq - 1)
        view = await (await c.get(f"/api/commands/{cmd_id}")).json()
        assert view["state"] == "verified"
        assert [(p["point"], p["value"], p["quality"], p["ok"], p["why"], p["known"]) for p in view["report"]] == [
            ("water_depth_cm", 3.0, "good", True, "", True),
            ("motor_fault", None, "comm_fail", False, "comm_fail", True),
            ("ghost_point", 1, "good", True, "", False),
        ]
        # the report's values are not readings: the latest value is still the reading's
        latest = await (await c.get(f"/api/sites/{site_id}/latest")).json()
        assert {(x["device"], x["point"]) for x in latest} == {("barrier-1", "water_depth_cm")}


async def test_a_report_on_another_action_is_stored_but_never_shown_or_trusted(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """A barrier.close reply carrying a report: the reply is kept as received (report included),
    the command view shows no report and its state follows the status alone."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await _online(edge, UNDERPASS, point="water_depth_cm", value=20.0)
        await c.login("olive")
        cmd_id = await _issue(c, site_id, "barrier.close")
        await edge.wait_commands(1)
        bogus = [PointCheck(point="barrier_state", value="closed", quality=Quality.GOOD, ok=True)]
        await edge.send([_reply(edge, cmd_id, ReplyStatus.FAILED, bogus)])
        await edge.wait_acked(edge.next_seq - 1)
        view = await (await c.get(f"/api/commands/{cmd_id}")).json()
        assert view["state"] == "failed"
        assert view["report"] == []

        def stored(conn: sqlite3.Connection) -> str:
            return str(conn.execute("SELECT report FROM command_replies WHERE cmd_id = ?", (cmd_id,)).fetchone()[0])

        assert msgspec.json.decode(await api_hub.reader.run(stored), type=list[PointCheck]) == bogus


async def test_an_oversized_report_is_quarantined_and_the_command_is_untouched(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """A reply whose report has more than MAX_REPORT points fails the wire decoder: the batch is
    quarantined, no reply is stored and the self-test stays as it was."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await _online(edge, UNDERPASS, point="water_depth_cm", value=3.0)
        await c.login("olive")
        cmd_id = await _issue(c, site_id, "device.selftest")
        await edge.wait_commands(1)
        point = {"point": "water_depth_cm", "value": 3.0, "quality": "good", "ok": True}
        reply = {"type": "reply", "seq": edge.next_seq, "ts": time.time(), "prio": "reply", "cmd_id": cmd_id,
                 "status": "verified", "report": [point] * (MAX_REPORT + 1)}
        batch = {"v": 1, "site": site_id, "boot": edge.boot, "records": [reply], "floor_seq": edge.next_seq}
        quarantine = api_hub.engine.intake.quarantine
        before = sum(quarantine.counts.values())
        await edge.publish_raw(topics.SiteChannel.DATA, msgspec.json.encode(batch))
        await eventually(lambda: sum(quarantine.counts.values()) > before)
        view = await (await c.get(f"/api/commands/{cmd_id}")).json()
        assert view["state"] == "sent"
        assert view["replies"] == []
        assert view["report"] == []
        with pytest.raises(msgspec.ValidationError, match=f"length <= {MAX_REPORT}"):
            msgspec.json.decode(msgspec.json.encode(reply), type=messages.Reply)


async def test_another_sites_reply_and_report_never_touch_a_command(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """A second site answers the first site's self-test with ``verified`` and a report: its reply
    is stored as received, but the command stays sent and shows neither the reply nor the report."""
    other = test_pki.take_site()
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            fake_edge(broker, test_pki.files(other), other) as intruder, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await _online(edge, UNDERPASS, point="water_depth_cm", value=3.0)
        await _online(intruder, UNDERPASS, point="water_depth_cm", value=3.0)
        await c.login("olive")
        cmd_id = await _issue(c, site_id, "device.selftest")
        await edge.wait_commands(1)
        forged = [PointCheck(point="water_depth_cm", value=0.0, quality=Quality.GOOD, ok=True)]
        await intruder.send([_reply(intruder, cmd_id, ReplyStatus.VERIFIED, forged)])
        await intruder.wait_acked(intruder.next_seq - 1)

        def kept(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT site, status FROM command_replies WHERE cmd_id = ?", (cmd_id,)).fetchall()

        assert await api_hub.reader.run(kept) == [(other, "verified")]
        view = await (await c.get(f"/api/commands/{cmd_id}")).json()
        assert view["state"] == "sent"
        assert view["replies"] == []
        assert view["report"] == []
