"""The province's HTTPS API (province/api.py; DESIGN §8, issue 18): the real province service fed
through a real provincial Mosquitto, read over real HTTPS with the hub's auth.

The cities' bytes come from real city province outboxes (hub/upstream.py), published by each
city's ``bridge-<city>`` identity straight to the provincial broker: what a city broker's bridge
carries there (the bridge itself is tests/province/test_province_run.py's subject).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from hub import audit, auth
from hub.roles import Role
from province.api import routes
from province.config import ProvinceConfig, load
from province.service import Province, running
from province.store import connect
from shared import messages
from shared.errors import ConfigError
from shared.messages import (
    AlarmRecord,
    CityRecord,
    CityRequest,
    Place,
    Priority,
    SiteState,
    SiteStateRecord,
)
from shared.topics import CityChannel, city_of_hub, city_topic
from tests.conftest import PkiFixture, ProvincePki, mqtt_client, start_province_broker
from tests.hub.conftest import PASSWORD, ApiClient, eventually, until
from tests.hub.web.conftest import VIEWPORT, browser  # noqa: F401 - the real-Chromium fixture
from tests.province.harness import publish_city
from trust.broker import RunningBroker

ROOT = Path(__file__).resolve().parents[2]
USERS = {"vera": Role.VIEWER, "olive": Role.OPERATOR, "sam": Role.SUPERVISOR}

# synthetic places a kilometre apart across a city boundary, and one far from both
NEAR_A = Place(lat=37.4800, lon=126.8000)
NEAR_B = Place(lat=37.4890, lon=126.8000)
FAR = Place(lat=37.6584, lon=126.8320)


def _config_text(pp: ProvincePki, host: str, port: int, api: str = 'listen = "127.0.0.1:0"') -> str:
    files = pp.files(pp.province)
    return f"""
[province]
id = "{pp.province}"

[broker]
host = "{host}"
port = {port}
ca = "{files.ca}"
cert = "{files.cert}"
key = "{files.key}"

[database]
path = "province.db"

[grouping]
distance_m = 3000

[api]
{api}
"""


@dataclass
class Fed:
    """A running province with its API, its broker, and cities that may publish to it."""

    province: Province
    cfg: ProvinceConfig
    config_file: Path
    broker: RunningBroker
    pki: ProvincePki
    cities: list[str]
    tmp: Path

    @asynccontextmanager
    async def client(self) -> AsyncIterator[ApiClient]:
        ctx = ssl.create_default_context(cafile=str(self.pki.files(self.pki.province).ca))
        async with aiohttp.ClientSession(base_url=f"https://localhost:{self.province.api_port}",
                                         connector=aiohttp.TCPConnector(ssl=ctx),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            yield ApiClient(session)

    async def publish(self, city: str, records: Sequence[CityRecord], *, status: SiteState = SiteState.ONLINE) -> int:
        """The city's status, then its records through a real city outbox; returns the epoch."""
        return await publish_city(self.broker, self.pki, self.tmp / f"{city}-outbox.db", city, records, status=status)

    async def committed(self, city: str, n: int) -> None:
        await eventually(lambda: len(self.province.store.committed(city)) >= n, within_s=20)


@pytest.fixture
async def fed(test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> AsyncIterator[Fed]:
    cities = [city_of_hub(test_pki.take_hub()) for _ in range(3)]
    for city in cities:
        province_pki.bridge_for(city)  # before the broker starts: its ACL is written then
    with start_province_broker(province_pki, tmp_path / "pb") as upstream:
        path = tmp_path / "province.toml"
        path.write_text(_config_text(province_pki, upstream.host, upstream.port))
        cfg = load(path)
        for name, role in USERS.items():
            auth.add_user(cfg.db_path, name, role, PASSWORD, actor="test", opener=connect)
        async with running(cfg) as province:
            await eventually(province.ingest.connected.is_set, within_s=15)
            yield Fed(province, cfg, path, upstream, province_pki, cities, tmp_path)


def _site(site: str, data_age_s: float, place: Place | None = None) -> SiteStateRecord:
    now = time.time()
    return SiteStateRecord(seq=0, ts=now, prio=Priority.TELEMETRY, site=site, online=True,
                           last_data_ts=now - data_age_s, place=place)


def _alarm(alarm_id: str, site: str, place: Place | None = None) -> AlarmRecord:
    now = time.time()
    return AlarmRecord(seq=0, ts=now, prio=Priority.ALARM, alarm_id=alarm_id, site=site, rule="water_depth_high",
                       severity="high", state="unacknowledged", raised_at=now - 5, place=place)


async def _json(resp: aiohttp.ClientResponse, status: int = 200) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_a_viewer_logs_in_and_sees_a_citys_alarm_its_site_and_the_city_with_their_data_age(fed: Fed) -> None:
    """An alarm at a site of one city, published by that city, is shown to a provincial viewer
    with the site's data age as the city reported it; the city shows its link, epoch and counts."""
    city = fed.cities[0]
    site = f"gg-{city}-up-0001"
    epoch = await fed.publish(city, [_site(site, 30.0, NEAR_A), _alarm("a-1", site)])
    await fed.committed(city, 2)
    async with fed.client() as api:
        assert (await api.login("vera")).status == 200
        [alarm] = await _json(await api.get(f"/api/alarms?city={city}"))
        assert (alarm["city"], alarm["alarm_id"], alarm["site"], alarm["state"]) == (
            city, "a-1", site, "unacknowledged")
        assert 30.0 <= alarm["data_age_s"] < 120.0
        [s] = await _json(await api.get(f"/api/cities/{city}/sites"))
        assert (s["site"], s["state"]) == (site, "online")
        assert 30.0 <= s["data_age_s"] < 120.0
        [c] = await _json(await api.get("/api/cities"))
        assert c["city"] == city
        assert c["link"] == "online"
        assert c["epoch"] == epoch
        assert c["records_committed"] == 2
        assert c["quarantined"] == 0
        assert c["data_age_s"] is not None
        assert c["last_record_ts"] is not None
        assert await _json(await api.get("/api/alarms?state=acknowledged")) == []


async def test_a_city_whose_hub_went_offline_shows_its_link_offline(fed: Fed) -> None:
    """The city's status (its hub's Will says ``offline``) is the link's health the API shows."""
    city = fed.cities[1]
    await fed.publish(city, [_site(f"gg-{city}-up-0001", 5.0)], status=SiteState.OFFLINE)
    await fed.committed(city, 1)
    async with fed.client() as api:
        await api.login("vera")

        async def offline() -> bool:
            got = await _json(await api.get("/api/cities"))
            return [c["link"] for c in got if c["city"] == city] == ["offline"]
        await until(offline, within_s=10)


async def test_alarms_of_two_cities_within_the_distance_are_one_provincial_incident(fed: Fed) -> None:
    """Two cities' alarms a kilometre apart are one incident naming both cities and both alarms;
    a third city's alarm far away is in none."""
    a, b, far = fed.cities
    await fed.publish(a, [_site(f"gg-{a}-up-0001", 10.0), _alarm("x-1", f"gg-{a}-up-0001", NEAR_A)])
    await fed.publish(b, [_site(f"gg-{b}-up-0001", 20.0, NEAR_B), _alarm("y-1", f"gg-{b}-up-0001")])
    await fed.publish(far, [_alarm("z-1", f"gg-{far}-up-0001", FAR)])
    for city, n in ((a, 2), (b, 2), (far, 1)):
        await fed.committed(city, n)
    async with fed.client() as api:
        await api.login("vera")
        [inc] = await _json(await api.get("/api/incidents"))
        assert inc["cities"] == sorted([a, b])
        assert sorted((m["city"], m["alarm_id"]) for m in inc["alarms"]) == sorted([(a, "x-1"), (b, "y-1")])
        ages = {m["city"]: m["data_age_s"] for m in inc["alarms"]}
        assert ages[a] >= 10.0
        assert ages[b] >= 20.0


async def test_without_a_session_every_route_but_health_and_login_is_401(fed: Fed) -> None:
    """No cookie, or a made-up one: 401 on every route of the table that names a role; the two
    public ones are health and logging in."""
    city = fed.cities[0]
    guarded = [(m, p.format(city=city)) for m, p, role, _h in routes() if role is not None]
    assert {(m, p) for m, p, role, _h in routes() if role is None} == {("GET", "/api/health"),
                                                                       ("POST", "/api/session")}
    assert ("GET", "/api/audit") in guarded
    async with fed.client() as api:
        for method, path in guarded:
            assert (await api.session.request(method, path)).status == 401, path
        api.session.cookie_jar.update_cookies({auth.COOKIE: "made-up"})
        for method, path in guarded:
            assert (await api.session.request(method, path)).status == 401, path


async def test_health_is_public_and_names_no_province_city_or_site(fed: Fed) -> None:
    """``/api/health`` answers without a session with counts only."""
    city = fed.cities[0]
    await fed.publish(city, [_site(f"gg-{city}-up-0001", 1.0)])
    await fed.committed(city, 1)
    async with fed.client() as api:
        resp = await api.get("/api/health")
        body = await _json(resp)
        assert body["mqtt_connected"] is True
        assert body["cities"] == 1
        assert body["records_committed"] == 1
        text = await resp.text()
        assert city not in text
        assert fed.pki.province not in text
        assert "gg-" not in text


async def test_a_viewer_is_refused_the_audit_log_and_quarantine_and_a_supervisor_reads_them(fed: Fed) -> None:
    """Roles apply as at the hub: 403 for a viewer, 200 for a supervisor."""
    async with fed.client() as api:
        await api.login("vera")
        for path in ("/api/audit", "/api/quarantine"):
            resp = await api.get(path)
            assert resp.status == 403, path
            assert "supervisor" in (await resp.json())["error"]
    async with fed.client() as api:
        await api.login("sam")
        assert isinstance(await _json(await api.get("/api/audit")), list)
        assert isinstance(await _json(await api.get("/api/quarantine")), list)


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/api/alarms?limit=99999999999999999999999999999", 400, "limit"),
    ("/api/alarms?limit=-1", 400, "limit"),
    ("/api/alarms?limit=0", 400, "limit"),
    ("/api/alarms?limit=ten", 400, "limit"),
    ("/api/alarms?state=burning", 400, "state"),
    ("/api/alarms?city=" + "a" * 5000, 400, "city"),
    ("/api/alarms?city=..%2F..%2Fetc", 400, "city"),
    ("/api/alarms?city=nowhere", 404, "nowhere"),
    ("/api/cities/nowhere/sites", 404, "nowhere"),
    ("/api/cities/NOT%20A%20CITY/sites", 400, "city"),
    ("/api/cities/{city}/sites?limit=100001", 400, "limit"),
    ("/api/audit?after=-5", 400, "after"),
    ("/api/quarantine?limit=1001", 400, "limit"),
])
async def test_hostile_query_parameters_get_a_clear_4xx(fed: Fed, path: str, status: int, says: str) -> None:
    """Huge, negative, malformed or unknown parameters are refused with a JSON error saying which."""
    city = fed.cities[0]
    await fed.publish(city, [_site(f"gg-{city}-up-0001", 1.0)])
    await fed.committed(city, 1)
    async with fed.client() as api:
        await api.login("sam")
        body = await _json(await api.get(path.format(city=city)), status)
        assert says in body["error"]


async def test_logins_failed_logins_and_logouts_are_in_the_provinces_hash_chain(fed: Fed) -> None:
    """Every login is audited in the province's own chain, which still verifies."""
    async with fed.client() as api:
        assert (await api.login("vera", "not the password")).status == 401
        assert (await api.login("nobody", "not the password")).status == 401
        assert (await api.login("vera")).status == 200
        logout = await api.session.delete("/api/session", headers={"X-CSRF-Token": api.csrf})
        assert logout.status == 204
        assert (await api.get("/api/cities")).status == 401
    conn = connect(fed.cfg.db_path)
    try:
        rows = conn.execute("SELECT actor, action FROM audit WHERE action LIKE 'session.%' ORDER BY id").fetchall()
        assert audit.verify_conn(conn) >= len(rows) + len(USERS)  # the accounts' own rows are in it too
    finally:
        conn.close()
    assert rows == [("vera", "session.login_failed"), ("nobody", "session.login_failed"),
                    ("vera", "session.login"), ("vera", "session.logout")]


async def test_a_logout_without_the_csrf_token_is_refused(fed: Fed) -> None:
    """State-changing requests carry the session's CSRF token, as at the hub."""
    async with fed.client() as api:
        await api.login("vera")
        assert (await api.session.delete("/api/session")).status == 403
        assert (await api.get("/api/cities")).status == 200


async def test_an_account_added_with_the_province_user_command_logs_in(fed: Fed) -> None:
    """``jikimi province user add`` writes the province's file (audited), while the province runs;
    a too-short password is one line on stderr, no traceback, and no account."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def user(*args: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shared.cli", "province", "user", *args,
                               "--config", str(fed.config_file), "--password-stdin"],
                              input=password + "\n", capture_output=True, text=True, env=env, timeout=60)

    done = user("add", "--username", "pat", "--role", "viewer", password=PASSWORD)
    assert done.returncode == 0, done.stderr
    short = user("add", "--username", "tim", "--role", "viewer", password="short")
    assert short.returncode == 2
    assert "Traceback" not in short.stderr
    assert "10 characters" in short.stderr
    async with fed.client() as api:
        assert (await api.login("pat")).status == 200
        assert (await api.login("tim", "short")).status == 401
    conn = connect(fed.cfg.db_path)
    try:
        adds = [r[0] for r in conn.execute("SELECT target FROM audit WHERE action = 'user.add' ORDER BY id")]
    finally:
        conn.close()
    assert adds == [*(f"operator/{u}" for u in USERS), "operator/pat"]


@pytest.mark.parametrize(("api", "key"), [
    ('listen = "no-port-here"', "api.listen"),
    ('listen = "127.0.0.1:0"\ncert = "missing.pem"', "api.cert"),
    ('listen = "127.0.0.1:0"\nsession_ttl_s = 5', "api.session_ttl_s"),
    ('listen = "127.0.0.1:0"\n[auth]\nsession_ttl_s = -1', "auth.session_ttl_s"),
    ('listen = "127.0.0.1:0"\ntrusted_proxy_header = "X-Forwarded-For"', "api.trusted_proxy_header"),
])
def test_a_bad_api_section_names_the_file_and_key(province_pki: ProvincePki, tmp_path: Path, api: str,
                                                  key: str) -> None:
    """Config errors in ``[api]`` name the file and the key; the province refuses to start."""
    path = tmp_path / "province.toml"
    path.write_text(_config_text(province_pki, "localhost", 8883, api))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)



async def test_the_console_shows_the_province_view_with_every_city_and_all_cities_alarms(
        fed: Fed, browser: Browser) -> None:  # noqa: F811 - the fixture imported above
    """The city console's page, served by the province, logs a viewer in and shows its province
    view in real Chromium: each city with its link, and the alarms of every city with their
    site's data age; no JavaScript error."""
    a, b, _ = fed.cities
    await fed.publish(a, [_site(f"gg-{a}-up-0001", 30.0), _alarm("x-1", f"gg-{a}-up-0001")])
    await fed.publish(b, [_alarm("y-1", f"gg-{b}-up-0002")], status=SiteState.OFFLINE)
    await fed.committed(a, 2)
    await fed.committed(b, 1)
    ctx = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True, locale="ko-KR")
    errors: list[str] = []
    try:
        page = await ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"https://127.0.0.1:{fed.province.api_port}/")
        await page.fill("#login-user", "vera")
        await page.fill("#login-pass", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#province-mode")).to_be_visible()
        await expect(page.locator(f'.city-row[data-city="{a}"]')).to_have_attribute("data-link", "online")
        await expect(page.locator(f'.city-row[data-city="{b}"]')).to_have_attribute("data-link", "offline")
        row = page.locator(f'.alarm-row[data-city="{a}"][data-alarm="x-1"]')
        await expect(row).to_contain_text(f"gg-{a}-up-0001")
        await expect(row.locator(".age").nth(1)).to_have_text(re.compile(r"^([3-8]\d) 초$"))  # its site's data age
        await expect(page.locator(f'.alarm-row[data-city="{b}"][data-alarm="y-1"]')).to_be_visible()
        await expect(page.locator("#alarm-count")).to_have_text("2")
        await page.click("#logout")
        await expect(page.locator("#login-form")).to_be_visible()
        assert errors == [], f"JavaScript errors in the console: {errors}"
    finally:
        await ctx.close()


async def test_an_operator_requests_an_evacuate_of_a_city_and_hostile_requests_are_refused(fed: Fed) -> None:
    """A provincial operator's request is stored in their name, audited, listed as ``sent`` (no
    answer from the city yet) and published on that city's request topic; a viewer may not ask;
    an unknown city, an unknown action, a missing reason, an unknown field or an absurd time to
    live are refused with what is wrong, and none of them is stored."""
    city = fed.cities[0]
    await fed.publish(city, [_site(f"gg-{city}-up-0001", 10.0)])
    await fed.committed(city, 1)
    good: dict[str, Any] = {"city": city, "action": "evacuate", "area": f"gg-{city}",
                            "reason": "Hangang over the warning level"}
    async with fed.client() as api:
        await api.login("vera")
        assert (await api.post("/api/requests", good)).status == 403
    async with fed.client() as api:
        await api.login("olive")
        hostile: list[tuple[dict[str, Any], int]] = [
            ({**good, "city": "nowhere"}, 404), ({**good, "action": "reopen"}, 422), ({**good, "reason": "  "}, 422),
            ({**good, "extra": 1}, 422), ({**good, "ttl_s": -5}, 422), ({**good, "ttl_s": 1e12}, 422),
            ({**good, "area": "x" * 5000}, 422)]
        for body, status in hostile:
            resp = await api.post("/api/requests", body)
            assert resp.status == status, (body, await resp.text())
        bridge = fed.pki.bridge_for(city)
        async with mqtt_client(fed.broker, fed.pki.files(bridge), bridge) as c:
            await c.subscribe(city_topic(city, CityChannel.REQ), qos=1)
            made = await _json(await api.post("/api/requests", good), 201)
            async with asyncio.timeout(15):
                msg = await anext(aiter(c.messages))
        sent = messages.decode_city(CityRequest, bytes(msg.payload), city)
        assert (sent.request_id, sent.action, sent.requested_by) == (made["request_id"], "evacuate", "olive")
        [listed] = await _json(await api.get("/api/requests"))
        assert (listed["request_id"], listed["state"], listed["requested_by"]) == (made["request_id"], "sent", "olive")
        await api.login("sam")
        trail = await _json(await api.get("/api/audit"))
        assert any(r["action"] == "request.evacuate" and r["actor"] == "olive" for r in trail)


def _collect(errors: list[str], exc: Exception) -> None:
    errors.append(str(exc))


async def test_the_province_view_maps_a_cross_boundary_incident_and_an_operator_sends_a_request(
        fed: Fed, browser: Browser) -> None:  # noqa: F811 - the fixture imported above
    """In real Chromium: the province's map draws both cities' alarms at their places, ringed as
    one cross-boundary incident; a viewer gets no request form; an operator sends a request from
    the form and it is listed as sent (the city has not answered); no JavaScript error."""
    a, b, _ = fed.cities
    await fed.publish(a, [_alarm("x-1", f"gg-{a}-up-0001", NEAR_A)])
    await fed.publish(b, [_alarm("y-1", f"gg-{b}-up-0002", NEAR_B)])
    await fed.committed(a, 1)
    await fed.committed(b, 1)
    for user in ("vera", "olive"):
        ctx = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True, locale="ko-KR")
        errors: list[str] = []
        try:
            page = await ctx.new_page()
            page.on("pageerror", functools.partial(_collect, errors))
            await page.goto(f"https://127.0.0.1:{fed.province.api_port}/")
            await page.fill("#login-user", user)
            await page.fill("#login-pass", PASSWORD)
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#province-map .site-marker")).to_have_count(2)
            await expect(page.locator("#province-map .incident-ring")).to_have_count(2)
            await expect(page.locator("#incident-count")).to_have_text("1")
            if user == "vera":
                await expect(page.locator("#request-form")).to_have_count(0)
                continue
            await page.select_option("#req-city", b)
            await page.select_option("#req-action", "evacuate")
            await page.fill("#req-area", f"gg-{b}")
            await page.fill("#req-reason", "both sides of the boundary are flooding")
            await page.click("#req-send")
            row = page.locator("#request-list .request-row")
            await expect(row).to_have_count(1)
            await expect(row).to_have_attribute("data-state", "sent")
            assert errors == [], f"JavaScript errors in the console: {errors}"
        finally:
            await ctx.close()
    [listed] = fed.province.store.requests()
    assert (listed.city, listed.action, listed.requested_by) == (b, "evacuate", "olive")
