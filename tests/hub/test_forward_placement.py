"""Sites without a position (issue 14): the hub refuses to start when it forwards alerts and a
registered site has no position; an alert of a site that reported unregistered still goes out,
placed by its area's geocode; what is not forwarded is counted by reason in /api/forwarding,
and the counts survive a restart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hub import receiver
from hub.alerting import AREA_GEOCODE, AlarmAlerts, AlarmFacts, EvidenceQueue, count_drops
from hub.cctv_geo import GeoPoint
from hub.config import parse
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.forward.outbox import not_forwarded
from hub.migrations import connect
from hub.service import running
from hub.store import Tx
from shared.errors import ConfigError
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import ConfigFactory, add_users, api_client, raw_config, until
from trust.broker import RunningBroker
from trust.enrolment import EnrolmentService, EnrolmentStore
from trust.pki import Pki
from trust.places import Place

pytestmark = pytest.mark.broker

CENTRE = {"kind": "city_centre", "url": "http://127.0.0.1:9/alerts"}


def _parse(test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path, **sections: dict[str, Any]) -> None:
    parse(raw_config(test_pki, broker.port, tmp_path / "hub.db", **sections), tmp_path / "hub.toml")


def test_forwarding_with_an_unplaced_registered_site_refuses_to_start(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path
) -> None:
    """The config error names the file, the key and every site without a position."""
    registry = {"gg-suwon-up-0031": {"area": "gg-suwon"},
                "gg-suwon-up-0032": {"area": "gg-suwon", "lat": 37.26, "lon": 127.02},
                "gg-suwon-up-0033": {"area": "gg-suwon", "name": "no position either"}}
    with pytest.raises(ConfigError) as exc:
        _parse(test_pki, broker, tmp_path, sites={"registry": registry}, forward={"recipients": {"c": CENTRE}})
    err = exc.value
    assert err.file == str(tmp_path / "hub.toml")
    assert err.key == "sites.registry.gg-suwon-up-0031.lat"
    assert "gg-suwon-up-0031, gg-suwon-up-0033" in err.problem
    assert "gg-suwon-up-0032" not in err.problem
    # without forwarding the same registry is fine: nothing would be placed
    _parse(test_pki, broker, tmp_path, sites={"registry": registry})


@pytest.mark.parametrize(("lat", "lon", "key"), [(91.0, 127.0, "lat"), (37.0, math.nan, "lon"),
                                                 (37.0, -180.5, "lon")])
def test_a_registry_position_that_is_not_one_is_a_config_error(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path, lat: float, lon: float, key: str
) -> None:
    """lat 91, a NaN longitude (TOML has nan) or lon -180.5 in [sites.registry] names its key."""
    with pytest.raises(ConfigError) as exc:
        _parse(test_pki, broker, tmp_path, sites={"registry": {"gg-a-01": {"area": "gg-a", "lat": lat, "lon": lon}}})
    assert exc.value.key == f"sites.registry.gg-a-01.{key}"


def _enrolment(test_pki: PkiFixture, tmp_path: Path) -> dict[str, Any]:
    return {"listen": "127.0.0.1:8443", "pki": str(test_pki.dir), "db": str(tmp_path / "enrol.db")}


def test_enrolled_places_reach_the_hub_and_an_unplaced_enrolment_refuses_to_start(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path
) -> None:
    """A site registered with --lat/--lon/--area is in the hub's registry with that place; one
    registered without (an older registration) stops a forwarding hub, naming the enrolment db."""
    service = EnrolmentService(Pki(test_pki.dir), EnrolmentStore(tmp_path / "enrol.db"), mqtt_host="localhost",
                               mqtt_port=broker.port, on_issued=lambda _cn: None)
    service.register("gg-placed-up-0001", "https://hub.example:8443", actor="admin",
                     place=Place(37.2636, 127.0286, "suwon-gwonseon"))
    raw = raw_config(test_pki, broker.port, tmp_path / "hub.db", enrolment=_enrolment(test_pki, tmp_path),
                     forward={"recipients": {"c": CENTRE}})
    cfg = parse(raw, tmp_path / "hub.toml")
    entry = cfg.sites.registry["gg-placed-up-0001"]
    assert (entry.area, entry.lat, entry.lon) == ("suwon-gwonseon", 37.2636, 127.0286)

    service.register("gg-unplaced-up-0002", "https://hub.example:8443", actor="admin")
    with pytest.raises(ConfigError) as exc:
        parse(raw, tmp_path / "hub.toml")
    assert exc.value.key == "enrolment.db"
    assert "gg-unplaced-up-0002" in exc.value.problem
    assert "--lat --lon" in exc.value.problem


def test_a_damaged_enrolment_database_is_a_config_error(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path
) -> None:
    """Garbage in the enrolment database's place stops the hub with the key named, not a traceback."""
    (tmp_path / "enrol.db").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(ConfigError) as exc:
        _parse(test_pki, broker, tmp_path, enrolment=_enrolment(test_pki, tmp_path))
    assert exc.value.key == "enrolment.db"


async def test_an_unplaced_site_alerts_by_its_area_geocode_and_skips_are_counted(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    """A site that reported without being registered (accept_any): its critical alarm reaches the
    centre as schema-valid CAP whose <area> has a <geocode> and no circle; its high alarm, which
    no recipient takes, is counted as no_recipient in /api/forwarding, also after a restart."""
    schema = CapSchema()
    area = "-".join(site_id.split("-")[:2])
    async with receiver.serve(schema=schema, strict=True) as centre:
        cfg = hub_config(api={"enabled": True},
                         forward={"recipients": {"centre": {"kind": "city_centre", "url": centre.url,
                                                            "priorities": ["critical"]}}})
        add_users(cfg)
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
            await centre.wait_for(lambda: len(centre.alerts()) == 1, 30)
            await edge.send([edge.reading("barrier-1", "motor_fault", True)])
            async with api_client(hub, test_pki.dir / "ca.pem") as c:
                await c.login("vera")

                async def fault_alarm_raised() -> bool:
                    alarms = await (await c.get(f"/api/alarms?site={site_id}")).json()
                    return any(a["point"] == "motor_fault" for a in alarms)

                await until(fault_alarm_raised, 20)
                forwarding = await (await c.get("/api/forwarding")).json()
            assert hub.engine.alerts is not None
            assert hub.engine.alerts.unplaced == 2
        (alert,) = centre.alerts()
        async with running(cfg) as again, api_client(again, test_pki.dir / "ca.pem") as c:
            await c.login("vera")
            after_restart = await (await c.get("/api/forwarding")).json()
    assert alert.valid, alert.problems
    cap = capread.read(alert.body)
    for info in cap.infos:
        (where,) = info.areas
        assert (where.circles, where.polygons, where.geocodes) == ((), (), ((AREA_GEOCODE, area),))
    assert forwarding["not_forwarded"] == {"no_recipient": 1}
    assert after_restart["not_forwarded"] == {"no_recipient": 1}


async def test_a_failed_delivery_is_counted_as_not_forwarded(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """A centre that keeps failing (the reference receiver's fail_first) ends the delivery failed
    once its attempts are used up: counted as delivery_failed."""
    async with receiver.serve(fail_first=10**6) as centre:
        cfg = hub_config(api={"enabled": True},
                         sites={"registry": {site_id: {"area": "gg-suwon", "lat": 37.26, "lon": 127.02}}},
                         forward={"recipients": {"centre": {"kind": "city_centre", "url": centre.url,
                                                            "max_attempts": 2, "initial_backoff_s": 0.0,
                                                            "max_backoff_s": 0.0}}})
        add_users(cfg)
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
            async with api_client(hub, test_pki.dir / "ca.pem") as c:
                await c.login("vera")

                async def counted() -> bool:
                    got = (await (await c.get("/api/forwarding")).json())["not_forwarded"]
                    return bool(got.get("delivery_failed"))

                await until(counted, 30)
                forwarding = await (await c.get("/api/forwarding")).json()
    assert forwarding["not_forwarded"] == {"delivery_failed": 1}
    assert [d["state"] for d in forwarding["deliveries"]] == ["failed"]


def test_captures_dropped_on_a_full_queue_are_counted_as_not_forwarded(tmp_path: Path) -> None:
    """A camera picture dropped because the capture queue was full is counted (evidence_queue_full)
    in the database, once per drop, when the hub's next tick takes the count."""
    queue = EvidenceQueue(size=1)
    facts = AlarmFacts(alarm_id=1, site="gg-a-01", site_name="", device="d", point="p", rule="high", area="gg-a",
                       priority="critical", kind="underpass", message="m", ts=1.0, event="activate")
    for _ in range(3):
        queue.put(facts, GeoPoint(37.0, 127.0))
    n = queue.take_uncounted()
    assert (n, queue.take_uncounted()) == (2, 0)
    conn = connect(tmp_path / "hub.db")
    try:
        conn.execute("BEGIN IMMEDIATE")
        count_drops(Tx(conn, 5.0), n)
        conn.execute("COMMIT")
        assert not_forwarded(conn) == {"evidence_queue_full": 2}
    finally:
        conn.close()


def test_a_site_enrolled_after_start_is_placed_by_its_registration(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path
) -> None:
    """The hub's registry is read at start; a site enrolled later (the hub runs the enrolment
    endpoint) has its alerts placed by the position stored with its registration."""
    raw = raw_config(test_pki, broker.port, tmp_path / "hub.db", enrolment=_enrolment(test_pki, tmp_path),
                     forward={"recipients": {"c": CENTRE}})
    alerts = AlarmAlerts(parse(raw, tmp_path / "hub.toml"), wake=lambda: None, capture=None)
    assert alerts.position("gg-late-up-0001") is None
    service = EnrolmentService(Pki(test_pki.dir), EnrolmentStore(tmp_path / "enrol.db"), mqtt_host="localhost",
                               mqtt_port=broker.port, on_issued=lambda _cn: None)
    service.register("gg-late-up-0001", "https://hub.example:8443", actor="admin", place=Place(37.5, 127.1))
    assert alerts.position("gg-late-up-0001") == GeoPoint(37.5, 127.1)
