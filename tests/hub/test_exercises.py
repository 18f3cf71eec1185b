"""Exercise mode through the HTTPS API (DESIGN §3): a supervisor starts and ends an exercise
over an area; commands and operations that ask for ``exercise`` are taken only inside one,
signed with ``exercise=True`` and marked with the exercise; its evacuate's CAP alert says
Exercise while a real alarm raised meanwhile stays Actual; every hostile request is refused."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from hub import receiver
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.live import ExerciseChanged
from hub.service import running
from shared.messages import Action, SiteState
from shared.signing import load_public_key, verify_command
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ApiClient, ConfigFactory, add_users, api_client
from tests.hub.forward.helpers import SITE
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

AREA = "gg-drill"
UNDERPASS = ("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "barrier_cmd", "mode", "motor_fault"))


async def bring_up(edge: FakeEdge, depth: float = 1.0) -> None:
    await edge.status(SiteState.ONLINE)
    await edge.birth([UNDERPASS])
    await edge.send([edge.reading("barrier-1", "water_depth_cm", depth)])
    await edge.wait_acked(edge.next_seq - 1)


async def start(c: ApiClient, area: str = AREA, reason: str = "yearly flood drill") -> dict[str, object]:
    resp = await c.post("/api/exercises", {"area": area, "reason": reason})
    assert resp.status == 201, await resp.text()
    body: dict[str, object] = await resp.json()
    return body


async def test_a_supervisor_starts_and_ends_an_exercise_audited_and_announced(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Started: listed as active, audited, an ``exercise`` live event; ended: gone from the list,
    audited, a second live event; ending it again is a conflict (409)."""
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site_id: {"area": AREA}}})
    add_users(cfg)
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(hub, test_pki.dir / "ca.pem") as c:
        await bring_up(edge)
        await c.login("sam")
        with hub.ops.bus.subscription() as live:
            ex = await start(c)
            assert ex["area"] == AREA
            assert ex["started_by"] == "sam"
            assert ex["ended_at"] is None
            assert [e["id"] for e in await (await c.get("/api/exercises")).json()] == [ex["id"]]
            ended = await c.post(f"/api/exercises/{ex['id']}/end", {"reason": "drill done"})
            assert ended.status == 200, await ended.text()
            assert (await ended.json())["ended_by"] == "sam"
            assert await (await c.get("/api/exercises")).json() == []
            again = await c.post(f"/api/exercises/{ex['id']}/end", {"reason": "twice"})
            assert again.status == 409
            events: list[ExerciseChanged] = []
            async with asyncio.timeout(5):
                while len(events) < 2:
                    ev = await live.get()
                    if ev.kind == "exercise":
                        events.append(msgspec.json.decode(ev.data, type=ExerciseChanged))
        assert [(e.id, e.state, e.area) for e in events] == [(ex["id"], "started", AREA), (ex["id"], "ended", AREA)]
        audit = await (await c.get("/api/audit")).json()
        assert [(r["actor"], r["action"]) for r in audit if r["target"] == f"exercise/{ex['id']}"] == [
            ("sam", "exercise.started"), ("sam", "exercise.ended")]


async def test_exercise_routes_refuse_hostile_and_broken_requests(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Viewer and operator may not start or end one (403); unknown ids (404); a huge body (413);
    wrong types, unknown fields, a missing reason, an area the hub does not know (422); a second
    exercise over an active area (409). None of it leaves an exercise behind."""
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site_id: {"area": AREA}}})
    add_users(cfg)
    ca = test_pki.dir / "ca.pem"
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(hub, ca) as vera, api_client(hub, ca) as olive, api_client(hub, ca) as sam:
        await bring_up(edge)
        await vera.login("vera")
        await olive.login("olive")
        await sam.login("sam")
        for who in (vera, olive):
            assert (await who.post("/api/exercises", {"area": AREA, "reason": "drill"})).status == 403
        bad_bodies: list[object] = [
            {"area": 7, "reason": "drill"}, {"area": AREA, "reason": ["drill"]}, {"area": AREA},
            {"area": AREA, "reason": "drill", "exercise": True}, {"area": "", "reason": "drill"},
            {"area": "x" * 65, "reason": "drill"}, {"area": "gg-nowhere", "reason": "drill"},
            {"area": AREA, "reason": "   "}, ["not", "an", "object"],
        ]
        for body in bad_bodies:
            resp = await sam.session.post("/api/exercises", json=body, headers={"X-CSRF-Token": sam.csrf})
            assert resp.status == 422, (body, resp.status, await resp.text())
        huge = await sam.post("/api/exercises", {"area": AREA, "reason": "x" * 200_000})
        assert huge.status == 413
        assert await (await sam.get("/api/exercises")).json() == []
        ex = await start(sam)
        assert (await sam.post("/api/exercises", {"area": AREA, "reason": "again"})).status == 409
        assert (await olive.post(f"/api/exercises/{ex['id']}/end", {"reason": "stop"})).status == 403
        assert (await vera.post(f"/api/exercises/{ex['id']}/end", {"reason": "stop"})).status == 403
        assert (await sam.post("/api/exercises/no-such-exercise/end", {"reason": "stop"})).status == 404
        assert [e["id"] for e in await (await vera.get("/api/exercises")).json()] == [ex["id"]]


async def test_an_exercise_flag_without_an_active_exercise_is_refused_with_the_reason(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """No exercise, one over another area, or one that has ended: a command or an operation with
    ``exercise`` is refused (422, naming why) and nothing reaches the edge; a non-boolean flag is
    refused as mistyped."""
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site_id: {"area": AREA},
                                                                "gg-else-up-0001": {"area": "gg-elsewhere"}}})
    add_users(cfg)
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(hub, test_pki.dir / "ca.pem") as sam:
        await bring_up(edge)
        await sam.login("sam")
        cmd = {"site": site_id, "device": "barrier-1", "action": "barrier.close", "reason": "drill", "exercise": True}
        op = {"kind": "block", "area": AREA, "reason": "drill", "exercise": True}

        async def refused(why: str) -> None:
            for path, body in (("/api/commands", cmd), ("/api/operations", op)):
                resp = await sam.post(path, body)
                assert resp.status == 422, (path, resp.status)
                assert why in (await resp.json())["error"]

        await refused("no active exercise covers")
        await start(sam, "gg-elsewhere")
        await refused("no active exercise covers")
        ex = await start(sam)
        assert (await sam.post(f"/api/exercises/{ex['id']}/end", {"reason": "done"})).status == 200
        await refused("no active exercise covers")
        for path, body in (("/api/commands", cmd), ("/api/operations", op)):
            mistyped = await sam.post(path, {**body, "exercise": "yes"})
            assert mistyped.status == 422, path
            assert "$.exercise" in (await mistyped.json())["error"]
        assert await (await sam.get("/api/commands")).json() == []
        assert await (await sam.get("/api/operations")).json() == []
        await asyncio.sleep(0.5)  # anything wrongly published would have reached the edge by now
        assert edge.commands == []


async def test_exercise_commands_and_operations_are_signed_and_marked(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Inside an exercise a command and a block are signed with ``exercise=True`` (the signature
    covers it) and their views carry the exercise id; a command without the flag is an ordinary one."""
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site_id: {"area": AREA}}})
    add_users(cfg)
    key = load_public_key(test_pki.dir / "command-signing" / "pub.pem")
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(hub, test_pki.dir / "ca.pem") as sam:
        await bring_up(edge)
        await sam.login("sam")
        ex = await start(sam)
        r1 = await sam.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.close",
                                              "reason": "drill close", "exercise": True})
        assert r1.status == 202, await r1.text()
        r2 = await sam.post("/api/operations", {"kind": "block", "area": AREA, "reason": "drill block",
                                                "exercise": True})
        assert r2.status == 202, await r2.text()
        r3 = await sam.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.close",
                                              "reason": "a real close"})
        assert r3.status == 202
        sent = await edge.wait_commands(3)
        by_id = {c.cmd_id: c for c in sent}
        for c in sent:
            verify_command(c, key)
        drill_cmd = (await r1.json())["cmd_id"]
        op = await (await sam.get(f"/api/operations/{(await r2.json())['operation_id']}")).json()
        (op_cmd,) = [d["cmd_id"] for d in op["devices"]]
        real = (await r3.json())["cmd_id"]
        assert by_id[drill_cmd].exercise
        assert by_id[op_cmd].exercise
        assert not by_id[real].exercise
        assert op["exercise_id"] == ex["id"]
        assert (await (await sam.get(f"/api/commands/{drill_cmd}")).json())["exercise_id"] == ex["id"]
        assert (await (await sam.get(f"/api/commands/{op_cmd}")).json())["exercise_id"] == ex["id"]
        assert (await (await sam.get(f"/api/commands/{real}")).json())["exercise_id"] is None


async def test_an_opening_approved_after_its_exercise_ended_is_refused(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """An exercise barrier.open waits for a second supervisor; the exercise ends meanwhile, so the
    approval is refused with the reason and nothing is sent."""
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site_id: {"area": AREA}}})
    add_users(cfg)
    ca = test_pki.dir / "ca.pem"
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(hub, ca) as sam, api_client(hub, ca) as sue:
        await bring_up(edge, 1.0)
        await sam.login("sam")
        await sue.login("sue")
        ex = await start(sam)
        r = await sam.post("/api/commands", {"site": site_id, "device": "barrier-1", "action": "barrier.open",
                                             "reason": "drill reopen", "exercise": True})
        assert r.status == 202, await r.text()
        cmd_id = (await r.json())["cmd_id"]
        assert (await sam.post(f"/api/exercises/{ex['id']}/end", {"reason": "done"})).status == 200
        approve = await sue.post(f"/api/commands/{cmd_id}/approve", {"reason": "ok"})
        assert approve.status == 422
        assert "has ended" in (await approve.json())["error"]
        await asyncio.sleep(0.5)
        assert edge.commands == []


async def test_an_exercise_evacuate_alert_says_exercise_and_a_real_alarm_stays_actual(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """During an exercise the evacuate's CAP alert has status Exercise; water really over the
    closing depth meanwhile raises an alarm whose alert is Actual: a drill never masks a real event."""
    schema = CapSchema()
    async with receiver.serve(schema=schema, strict=True) as centre:
        cfg = hub_config(
            api={"enabled": True},
            sites={"registry": {site_id: {"area": AREA, "name": "Drill underpass", "lat": SITE.lat,
                                          "lon": SITE.lon}}},
            forward={"recipients": {"centre": {"kind": "city_centre", "url": centre.url,
                                               "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
        )
        add_users(cfg)
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
                api_client(hub, test_pki.dir / "ca.pem") as sam:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("alarm-1", "flood_alarm", ("water_depth_cm", "alarm_active", "siren", "battery_v"))])
            await edge.send([edge.reading("alarm-1", "water_depth_cm", 1.0)])
            await edge.wait_acked(edge.next_seq - 1)
            await sam.login("sam")
            await start(sam)
            r = await sam.post("/api/operations", {"kind": "evacuate", "area": AREA, "reason": "drill evacuate",
                                                   "exercise": True})
            assert r.status == 202, await r.text()
            (cmd,) = await edge.wait_commands(1)
            assert cmd.action is Action.SIREN_ON
            assert cmd.exercise
            await centre.wait_for(lambda: len(centre.alerts()) >= 1, 30)
            await edge.send([edge.reading("alarm-1", "water_depth_cm", 40.0, ts=time.time())])
            await centre.wait_for(lambda: len(centre.alerts()) >= 2, 30)
        alerts = centre.alerts()
    docs = [capread.read(a.body) for a in alerts]
    assert all(a.valid for a in alerts), [a.problems for a in alerts]
    drill, *real = docs  # the drill's alert went out before the water rose
    assert {rt for i in drill.infos for rt in i.response_types} == {"Evacuate"}
    assert drill.status == "Exercise"
    assert real
    assert {d.status for d in real} == {"Actual"}
