"""The network forecast on a running hub: neighbours that cross the closing depth first raise a
forecast alarm at a site still below it, naming them, and send the site's edge a signed
forecast.prealert; a site without a position is skipped with its reason; [forecast] errors name
the key."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest

from hub import queries, receiver
from hub.commands import Draft
from hub.errors import Refused
from hub.forecast import load_params
from hub.forecastdesk import DEVICE, RULE
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.roles import Role
from hub.service import Hub, running
from shared import messages
from shared.errors import ConfigError
from shared.messages import Action, SiteState
from shared.paths import models_dir
from shared.signing import load_public_key, verify_command
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ConfigFactory, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

POINTS = ("water_depth_cm", "barrier_state", "motor_fault")
BASE = (37.2636, 127.0286)  # Suwon
# north of the target, 0.45-1.35 km away
OFFSETS = ((0.004, 0.0), (0.008, 0.002), (0.012, 0.004))
ROUNDS = 12


async def forecast_alarms(hub: Hub) -> list[tuple[Any, ...]]:
    def q(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return c.execute("SELECT site, rule, priority, state, active, drivers, message FROM alarms"
                         " WHERE device = ? ORDER BY id", (DEVICE,)).fetchall()

    return await hub.reader.run(q)


def storm_config(hub_config: ConfigFactory, target: str, neighbours: list[str], unplaced: str | None,
                 **forecast: Any) -> Any:
    registry: dict[str, dict[str, Any]] = {target: {"area": "suwon", "lat": BASE[0], "lon": BASE[1]}}
    for site, (dlat, dlon) in zip(neighbours, OFFSETS, strict=False):
        registry[site] = {"area": "suwon", "lat": BASE[0] + dlat, "lon": BASE[1] + dlon}
    if unplaced is not None:
        registry[unplaced] = {"area": "suwon"}
    return hub_config(sites={"registry": registry},
                      forecast={"hold_s": 0, "every_s": 0.2, "prealert_ttl_s": 900, **forecast})


async def storm(edges: dict[str, FakeEdge], target: str, neighbours: list[str], *, target_depth: float,
                rise: bool = True) -> float:
    """Minute-spaced rounds dated in the past; neighbours rise 2 cm/min and cross 15 cm from round 6.
    Every reading of a round has the round's time, and a round is committed before the next. Returns
    the first round's time."""
    t0 = time.time() - ROUNDS * 60.0
    for k in range(ROUNDS):
        ts = t0 + 60.0 * k
        for i, site in enumerate(neighbours):
            e = edges[site]
            depth = min(40.0, 2.0 * k + 3.0 * i) if rise else 1.0
            await e.send([e.reading("barrier-1", "water_depth_cm", depth, ts=ts)])
            await e.wait_acked(e.next_seq - 1)
        e = edges[target]
        await e.send([e.reading("barrier-1", "water_depth_cm", target_depth, ts=ts)])
        await e.wait_acked(e.next_seq - 1)
        await asyncio.sleep(0.3)  # a tick between rounds: the forecast takes them as they come
    return t0


async def edges_up(stack: AsyncExitStack, broker: RunningBroker, pki: PkiFixture, sites: list[str]
                   ) -> dict[str, FakeEdge]:
    edges = {}
    for site in sites:
        e = await stack.enter_async_context(fake_edge(broker, pki.files(site), site))
        await e.status(SiteState.ONLINE)
        await e.birth([("barrier-1", "underpass", POINTS)])
        edges[site] = e
    return edges


async def test_neighbours_crossing_first_raise_a_forecast_alarm_naming_them_and_a_signed_prealert(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """Three neighbours 0.45-1.35 km away rise and cross 15 cm while the target stays at 11 cm (above
    the model's 4 in warning depth, below the closing depth): the target gets one forecast alarm with
    the configured priority naming the wet or crossed neighbours that weighed most, and its edge a forecast.prealert
    signed by the hub's key with the model's lead and a probability in range."""
    target, *neighbours = [test_pki.take_site() for _ in range(4)]
    unplaced = test_pki.take_site()
    cfg = storm_config(hub_config, target, neighbours, unplaced, priority="medium")
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running(cfg))
        edges = await edges_up(stack, broker, test_pki, [target, *neighbours, unplaced])
        u = edges[unplaced]
        await u.send([u.reading("barrier-1", "water_depth_cm", 3.0)])
        await u.wait_acked(u.next_seq - 1)
        await storm(edges, target, neighbours, target_depth=11.0)

        async def raised() -> bool:
            return any(row[0] == target for row in await forecast_alarms(hub))

        await until(raised, within_s=15)
        cmds = await edges[target].wait_commands(1)
        (alarm_id,) = await hub.reader.run(lambda c: [r[0] for r in c.execute(
            "SELECT id FROM alarms WHERE site = ? AND device = ?", (target, DEVICE))])
        detail = await hub.reader.run(lambda c: queries.alarm(c, alarm_id))
        desk = hub.engine.forecast
        assert desk is not None
        skipped = dict(desk.skipped)
        health = hub.ops.health().forecast
    rows = [r for r in await asyncio.to_thread(_rows, cfg.db_path) if r[0] == target]
    site, rule, priority, _state, _active, drivers_json, message = rows[0]
    assert (site, rule, priority) == (target, RULE, "medium")
    found = json.loads(drivers_json)
    # the storm comes from the north: the farthest neighbour crosses first; the alarm names
    # whichever neighbours were wet or had crossed when it fired, heaviest first, with distances
    assert found
    assert {d["site"] for d in found} <= set(neighbours)
    arm = cfg.forecast.params.arm_depth_cm
    assert all(d["crossed_ago_s"] is not None or d["depth_cm"] >= arm for d in found)  # crossed, or wet now
    assert [d["weight"] for d in found] == sorted((d["weight"] for d in found), reverse=True)
    km = dict(zip(neighbours, (0.445, 0.907, 1.37), strict=True))
    assert all(d["distance_km"] == pytest.approx(km[d["site"]], abs=0.03) for d in found)
    assert all(d["site"] in message for d in found)
    # what the console's alarm dialog is served (GET /api/alarms/{id})
    assert [msgspec.to_builtins(d) for d in detail.drivers] == found
    # no alarm for the neighbours that crossed: their own closing-depth rule is the hub's alarm for them
    (cmd,) = cmds  # one storm, one prealert: a flickering score does not re-send it
    assert cmd.action is Action.FORECAST_PREALERT
    assert len(rows) == 1
    verify_command(cmd, load_public_key(test_pki.dir / "command-signing" / "pub.pem"))
    assert (cmd.site, cmd.device, cmd.issued_by) == (target, "barrier-1", "system")
    assert cmd.params["expected_minutes"] == round(cfg.forecast.params.horizon_s / 60)  # the model's horizon
    assert 0.0 <= float(cmd.params["probability"]) <= 1.0  # type: ignore[arg-type]
    assert cmd.not_after - cmd.issued_at == pytest.approx(900.0)
    assert skipped == {unplaced: "no position: give [sites.registry.<site>] lat and lon"}
    assert health is not None
    assert (health["sites"], health["skipped_sites"]) == (4, 1)  # the unplaced site is counted, not scored


def _rows(db: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT site, rule, priority, state, active, drivers, message FROM alarms"
                         " WHERE device = ? ORDER BY id", (DEVICE,)).fetchall()


async def test_the_same_site_without_wet_neighbours_raises_no_forecast_alarm(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """The control: the same 11 cm at the target, neighbours dry; the forecast is scored (evaluations
    run) but nothing is raised and no prealert is sent."""
    target, *neighbours = [test_pki.take_site() for _ in range(4)]
    cfg = storm_config(hub_config, target, neighbours, None)
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running(cfg))
        edges = await edges_up(stack, broker, test_pki, [target, *neighbours])
        await storm(edges, target, neighbours, target_depth=11.0, rise=False)
        desk = hub.engine.forecast
        assert desk is not None
        evaluated = desk.evaluations

        async def scored_after() -> bool:
            return desk.evaluations > evaluated + 2

        await until(scored_after, within_s=10)
        assert await forecast_alarms(hub) == []
        assert edges[target].commands == []


@pytest.mark.parametrize(("section", "key"), [
    ({"priority": "urgent"}, "forecast.priority"),
    ({"threshold": 1.5}, "forecast.threshold"),
    ({"model": "missing.json"}, "forecast.model"),
    ({"cap": "yes"}, "forecast.cap"),
    ({"colour": "red"}, "forecast.colour"),
])
def test_a_bad_forecast_section_names_its_key(hub_config: ConfigFactory, section: dict[str, Any], key: str) -> None:
    """A broken [forecast] stops the hub with the file and the key."""
    with pytest.raises(ConfigError) as err:
        hub_config(forecast=section)
    assert key in str(err.value)


def test_a_tampered_model_file_is_refused_naming_the_key(hub_config: ConfigFactory, tmp_path: Any) -> None:
    """A parameter file whose features are not the hub's is refused at start-up, naming forecast.model."""
    bad = tmp_path / "net.json"
    bad.write_text(json.dumps({"features": ["depth"], "threshold": 0.5}))
    with pytest.raises(ConfigError) as err:
        hub_config(forecast={"model": str(bad)})
    assert "forecast.model" in str(err.value)
    assert "features" in str(err.value)


def test_forecast_alarms_are_off_without_the_section(hub_config: ConfigFactory) -> None:
    """No [forecast]: the hub runs no forecast; enabled = false likewise."""
    assert hub_config().forecast is None
    assert hub_config(forecast={"enabled": False}).forecast is None
    on = hub_config(forecast={}).forecast  # an empty [forecast] runs it with the model card's settings
    assert on is not None
    shipped = load_params(models_dir() / "network_warning.json").threshold  # the model card's, chosen on 2024
    assert (on.cap, on.prealert, on.priority.value, on.params.threshold) == (False, True, "high", shipped)
    assert messages.Action.FORECAST_PREALERT.value == "forecast.prealert"


@pytest.mark.parametrize("cap", [True, False], ids=["cap-on", "cap-off-default"])
async def test_a_forecast_alarm_is_a_cap_alert_with_urgency_expected_only_when_cap_is_on(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, cap: bool
) -> None:
    """forecast.cap on: the city centre gets a schema-valid CAP Alert for the forecast alarm with
    urgency Expected and certainty Likely; off (the default): the alarm stays in the hub, while the
    neighbours' own closing-depth alarms are forwarded as ever."""
    target, *neighbours = [test_pki.take_site() for _ in range(4)]
    async with receiver.serve(schema=CapSchema(), strict=True) as centre:
        forward = {"recipients": {"centre": {"kind": "city_centre", "url": centre.url, "initial_backoff_s": 0.0,
                                             "max_backoff_s": 0.0}}}
        registry: dict[str, dict[str, Any]] = {target: {"area": "suwon", "name": "target", "lat": BASE[0],
                                                        "lon": BASE[1]}}
        for site, (dlat, dlon) in zip(neighbours, OFFSETS, strict=True):
            registry[site] = {"area": "suwon", "lat": BASE[0] + dlat, "lon": BASE[1] + dlon}
        cfg = hub_config(sites={"registry": registry}, forward=forward,
                         forecast={"hold_s": 0, "every_s": 0.2, **({"cap": True} if cap else {})})
        async with AsyncExitStack() as stack:
            hub = await stack.enter_async_context(running(cfg))
            edges = await edges_up(stack, broker, test_pki, [target, *neighbours])
            await storm(edges, target, neighbours, target_depth=11.0)

            async def raised() -> bool:
                return any(row[0] == target for row in await forecast_alarms(hub))

            await until(raised, within_s=15)
            await centre.wait_for(lambda: len(centre.alerts()) >= 1, 30)
            if cap:
                await centre.wait_for(lambda: any("target: network_forecast" in _headline(a.body)
                                                  for a in centre.alerts()), 30)
            else:
                await asyncio.sleep(2.0)  # time for a forecast alert to arrive, were it sent
        alerts = centre.alerts()
    forecast = [a for a in alerts if "Alarm at target: network_forecast" in _headline(a.body)]
    assert all(a.valid for a in alerts), [a.problems for a in alerts]
    if not cap:
        assert forecast == []
        return
    (alert,) = [a for a in forecast if a.msg_type == "Alert"]  # later ones update the same alert
    assert {a.event_id for a in forecast} == {alert.event_id}
    for a in forecast:
        assert {(i.urgency, i.certainty) for i in capread.read(a.body).infos} == {("Expected", "Likely")}


def _headline(body: bytes) -> str:
    return " ".join(i.headline for i in capread.read(body).infos)


async def test_an_operator_cannot_send_a_prealert(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """forecast.prealert is the forecast's own advice: an operator's request for one is refused
    before anything is signed, and nothing reaches the edge."""
    cfg = hub_config(sites={"registry": {site_id: {"area": "suwon", "lat": BASE[0], "lon": BASE[1]}}}, forecast={})
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", POINTS)])
        await edge.send([edge.reading("barrier-1", "water_depth_cm", 2.0)])
        await edge.wait_acked(edge.next_seq - 1)
        draft = Draft(site_id, "barrier-1", Action.FORECAST_PREALERT, {"expected_minutes": 30, "probability": 0.9})
        with pytest.raises(Refused, match="sent by the hub's network forecast"):
            await hub.ops.issue_command(draft, "olive", Role.SUPERVISOR, "try")
        await asyncio.sleep(0.5)
        assert edge.commands == []
