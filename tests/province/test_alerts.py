"""Provincial CAP alerts (province/alerts.py) with the real province service, a real provincial
broker, real city outboxes published as each city's bridge identity, and the reference CAP
receiver (hub/receiver.py) verifying the province's signature against the province's CA."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hub import receiver
from hub.forward.capread import CapSchema
from province.alerts import FORWARD_FILE
from province.config import load
from province.service import Province, running
from shared.messages import AlarmRecord, Place, Priority
from shared.topics import city_of_hub
from tests.conftest import PkiFixture, ProvincePki, start_province_broker
from tests.province.harness import province_config, publish_city
from trust.broker import RunningBroker
from trust.pki import Role

# two underpasses a kilometre apart across the Bucheon/Seoul-side boundary, and one far away
NEAR_A = Place(lat=37.4800, lon=126.8000)
NEAR_B = Place(lat=37.4890, lon=126.8000)
ALERT_CN = "alert-province-test"


def _alarm(alarm_id: str, site: str, place: Place, state: str = "unacknowledged") -> AlarmRecord:
    now = time.time()
    return AlarmRecord(seq=0, ts=now, prio=Priority.ALARM, alarm_id=alarm_id, site=site, rule="closing_depth",
                       severity="critical", state=state, raised_at=now - 5, place=place)


async def _until(pred: Callable[[], bool], within_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(within_s):
            while True:
                if pred():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def test_a_cross_boundary_incident_is_one_signed_provincial_alert_and_its_end_a_cancel(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """Alarms of two cities a kilometre apart form one provincial incident: the province's fire
    headquarters gets one CAP Alert for it, signed with the province's alert key (verified against
    the province's CA), and the delivery is acknowledged; the same alarms again send nothing new;
    when the alarms clear, it gets the Cancel of that same event."""
    if not province_pki.pki.cert(ALERT_CN).exists():
        province_pki.pki.issue(ALERT_CN, Role.ALERT)
    a, b = (city_of_hub(test_pki.take_hub()) for _ in range(2))
    for city in (a, b):
        province_pki.bridge_for(city)
    alert = province_pki.files(ALERT_CN)
    async with receiver.serve(schema=CapSchema(), strict=True, ca_bundle=province_pki.dir / "ca.pem") as hq:
        with start_province_broker(province_pki, tmp_path / "pb") as upstream:
            path = province_config(tmp_path, province_pki, upstream)
            path.write_text(path.read_text() + f"""
[grouping]
distance_m = 3000
alert_every_s = 0.5

[forward]
sender = "{province_pki.province}@jikimi.example"
signing_key = "{alert.key}"
signing_cert = "{alert.cert}"

[forward.recipients.gyeonggi-119]
kind = "fire_119"
url = "{hq.url}"
areas = ["*"]
priorities = ["critical"]
initial_backoff_s = 0.0
max_backoff_s = 0.0
""")
            cfg = load(path)
            async with running(cfg) as province:
                await _publish(upstream, province_pki, tmp_path, a, [_alarm("1", f"gg-{a}-up-1", NEAR_A)])
                await _publish(upstream, province_pki, tmp_path, b, [_alarm("7", f"gg-{b}-up-2", NEAR_B)])
                await hq.wait_for(lambda: [m.msg_type for m in hq.alerts()] == ["Alert"], 30)
                [first] = hq.alerts()
                assert first.verified is True, first.signature_problem
                assert first.signer == ALERT_CN
                await _until(lambda: _acked(province) == 1, 30, "the delivery is acknowledged")
                await _publish(upstream, province_pki, tmp_path, a, [_alarm("1", f"gg-{a}-up-1", NEAR_A)])
                await _publish(upstream, province_pki, tmp_path, a, [_alarm("1", f"gg-{a}-up-1", NEAR_A, "normal")])
                await hq.wait_for(lambda: [m.msg_type for m in hq.alerts()] == ["Alert", "Cancel"], 30)
                alert_msg, cancel = hq.alerts()
                assert cancel.event_id == alert_msg.event_id
                assert province.store.verify_audit() >= 2  # forwarding's rows are in the province's chain


async def _publish(upstream: RunningBroker, pki: ProvincePki, tmp: Path, city: str,
                   records: list[AlarmRecord]) -> None:
    await publish_city(upstream, pki, tmp / f"{city}-outbox.db", city, records)


def _acked(province: Province) -> int:
    """Provincial alert deliveries acknowledged, as forwarding's own file holds them."""
    db = sqlite3.connect(f"file:{province.cfg.db_path.with_name(FORWARD_FILE)}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM fwd_deliveries WHERE state = 'acked'").fetchone()[0])
    finally:
        db.close()
