"""Escalation is an alarm in the console (DESIGN §6): an alert a real recipient does not
acknowledge raises an ISA-18.2 alarm (priority high, source forwarding) that the alarm list
shows and an operator acknowledges like any other, listed by GET /api/escalations; it returns
to normal when the recipient acknowledges. A deleted delivery settles its escalation."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hub import receiver
from hub.alerting import FORWARDING
from hub.forward.outbox import Enqueued
from hub.service import Hub, running
from hub.store import Tx
from tests.conftest import PkiFixture
from tests.fakes.recipients import CentreFaults
from tests.hub.conftest import ApiClient, ConfigFactory, add_users, api_client, until
from tests.hub.forward.helpers import SITE, notice

pytestmark = pytest.mark.broker

PLACE = "gg-suwon-up-0031"


@asynccontextmanager
async def _escalating_hub(hub_config: ConfigFactory, faults: CentreFaults) -> AsyncIterator[tuple[Hub, str]]:
    """A hub whose one city centre is a real receiver behind ``faults``, escalating after 0.5 s."""
    async with receiver.serve(middlewares=[faults.middleware]) as centre:
        cfg = hub_config(api={"enabled": True},
                         sites={"registry": {PLACE: {"area": "suwon-gwonseon", "lat": SITE.lat, "lon": SITE.lon}}},
                         forward={"recipients": {"centre": {"kind": "city_centre", "url": centre.url,
                                                            "escalate_after_s": 0.5, "max_attempts": 10_000,
                                                            "initial_backoff_s": 0.1, "max_backoff_s": 0.3}}})
        add_users(cfg)
        async with running(cfg) as hub:
            yield hub, centre.url


async def _alert(hub: Hub) -> Enqueued:
    assert hub.ops.forwarder is not None
    sent = await hub.ops.forwarder.enqueue(notice(at=time.time(), site=PLACE))
    assert sent is not None
    return sent


async def _escalations(c: ApiClient) -> list[dict[str, Any]]:
    resp = await c.get("/api/escalations")
    assert resp.status == 200
    body: list[dict[str, Any]] = await resp.json()
    return body


async def _alarm(c: ApiClient, alarm_id: int) -> dict[str, Any]:
    body: dict[str, Any] = (await (await c.get(f"/api/alarms/{alarm_id}")).json())["alarm"]
    return body


async def test_an_unacknowledged_alert_raises_an_alarm_that_clears_when_the_recipient_acks(
    hub_config: ConfigFactory, test_pki: PkiFixture
) -> None:
    """The centre stores the alert but never acknowledges: /api/escalations lists it with its
    alarm, the alarm list shows a high 'forwarding' alarm naming the centre and the alert, an
    operator acknowledges it (a viewer may not), and once the centre acknowledges the alarm is
    back to normal and the escalation is gone."""
    faults = CentreFaults(strip_ack=True)
    async with _escalating_hub(hub_config, faults) as (hub, _url), \
            api_client(hub, test_pki.dir / "ca.pem") as vera, api_client(hub, test_pki.dir / "ca.pem") as olive:
        await vera.login("vera")
        await olive.login("olive")
        with hub.bus.subscription() as live:
            sent = await _alert(hub)
            ((delivery_id, _name),) = sent.deliveries

            async def escalated() -> bool:
                return bool(await _escalations(vera))

            await until(escalated, 20)
            (esc,) = await _escalations(vera)
            kinds = []
            while not live.empty():
                event = live.get_nowait()
                kinds.append(event.kind)
                if event.kind == "escalation":
                    assert json.loads(event.data)["delivery_id"] == delivery_id
        assert "escalation" in kinds  # the live event still flows
        assert "alarm" in kinds
        assert {k: esc[k] for k in ("delivery_id", "recipient", "alert_id", "site")} == {
            "delivery_id": delivery_id, "recipient": "centre", "alert_id": sent.identifier, "site": PLACE}
        assert esc["since"] > 0
        listed = await (await vera.get(f"/api/alarms?site={PLACE}")).json()
        assert [a["id"] for a in listed] == [esc["alarm_id"]]
        alarm = await _alarm(vera, esc["alarm_id"])
        assert (alarm["priority"], alarm["device"], alarm["point"], alarm["state"], alarm["active"]) == (
            "high", FORWARDING, "centre", "unacknowledged", True)
        assert "centre" in alarm["message"]
        assert sent.identifier in alarm["message"]

        assert (await vera.post(f"/api/alarms/{esc['alarm_id']}/ack", {"reason": "seen"})).status == 403
        assert (await olive.post(f"/api/alarms/{esc['alarm_id']}/ack", {"reason": "calling the centre"})).status == 200
        assert (await _alarm(vera, esc["alarm_id"]))["state"] == "acknowledged"

        faults.strip_ack = False  # the centre's gateway is fixed: the next retry is acknowledged

        async def back_to_normal() -> bool:
            return bool((await _alarm(vera, esc["alarm_id"]))["state"] == "normal")

        await until(back_to_normal, 20)
        assert await _escalations(vera) == []
        forwarding = await (await vera.get("/api/forwarding")).json()
    assert [d["state"] for d in forwarding["deliveries"]] == ["acknowledged"]  # the alarm itself was not forwarded


async def test_escalations_need_a_session(hub_config: ConfigFactory, test_pki: PkiFixture) -> None:
    """Without a session (or with a forged cookie) /api/escalations answers 401 and lists nothing."""
    async with _escalating_hub(hub_config, CentreFaults(strip_ack=True)) as (hub, _url), \
            api_client(hub, test_pki.dir / "ca.pem") as anon:
        resp = await anon.get("/api/escalations")
        assert resp.status == 401
        anon.session.cookie_jar.update_cookies({"jk_session": "forged"})
        assert (await anon.get("/api/escalations")).status == 401


async def test_an_escalation_whose_delivery_was_deleted_settles(
    hub_config: ConfigFactory, test_pki: PkiFixture
) -> None:
    """A delivery removed under an active escalation (a purge, a hand edit): the escalation leaves
    the list and its alarm's condition clears with the reason, the hub running on."""
    async with _escalating_hub(hub_config, CentreFaults(strip_ack=True)) as (hub, _url), \
            api_client(hub, test_pki.dir / "ca.pem") as vera:
        await vera.login("vera")
        sent = await _alert(hub)
        ((delivery_id, _name),) = sent.deliveries

        async def escalated() -> bool:
            return bool(await _escalations(vera))

        await until(escalated, 20)
        (esc,) = await _escalations(vera)

        def delete(tx: Tx) -> None:
            tx.conn.execute("DELETE FROM fwd_attempts WHERE delivery_id = ?", (delivery_id,))
            tx.conn.execute("DELETE FROM fwd_deliveries WHERE id = ?", (delivery_id,))

        await hub.writer.call(delete)

        async def settled() -> bool:
            return not (await _alarm(vera, esc["alarm_id"]))["active"]

        await until(settled, 20)
        assert await _escalations(vera) == []
        alarm = await _alarm(vera, esc["alarm_id"])
        assert alarm["state"] == "rtn_unacknowledged"
        assert f"delivery {delivery_id} no longer exists" in alarm["message"]
        assert (await vera.get("/api/health")).status == 200
