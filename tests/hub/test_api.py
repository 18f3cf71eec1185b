"""The operator API over real HTTPS: who may call what, CSRF and cross-site refusals, sessions,
rate-limited logins, and the OpenAPI description."""

from __future__ import annotations

import pytest

from hub.api import _routes
from hub.openapi import SPEC
from hub.service import Hub
from tests.conftest import PkiFixture
from tests.hub.conftest import PASSWORD, api_client

pytestmark = pytest.mark.broker


async def test_unauthenticated_calls_are_refused(api_hub: Hub, test_pki: PkiFixture) -> None:
    """Without a session cookie every non-public route answers 401, reads and writes alike."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        for method, path, role, _h in _routes():
            if role is None:
                continue
            url = path.replace("{site}", "x").replace("{id}", "1").replace("{cmd_id}", "c").replace("{op_id}", "o")
            resp = await c.session.request(method, url, json={})
            assert resp.status == 401, (method, path, resp.status)
        resp = await c.session.get("/api/alarms", cookies={"jk_session": "forged-token"})
        assert resp.status == 401


async def test_a_role_too_low_is_refused(api_hub: Hub, test_pki: PkiFixture) -> None:
    """A viewer cannot issue commands; an operator can neither approve openings nor read the audit
    log nor take alarms out of service (403), while each may do what their role allows."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("vera")).status == 200
        assert (await c.get("/api/alarms")).status == 200
        body = {"site": "gg-x-01", "device": "b", "action": "barrier.close", "reason": "flood"}
        assert (await c.post("/api/commands", body)).status == 403
        assert (await c.post("/api/operations", {"kind": "block", "area": "gg-x", "reason": "r"})).status == 403
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("olive")).status == 200
        assert (await c.get("/api/audit")).status == 403
        assert (await c.post("/api/commands/abc/approve", {"reason": "ok"})).status == 403
        assert (await c.post("/api/alarms/1/remove", {"reason": "maintenance"})).status == 403
        assert (await c.post("/api/alarms/1/ack", {})).status == 404  # allowed, but there is no alarm 1
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("sam")).status == 200
        assert (await c.get("/api/audit")).status == 200


async def test_cross_site_requests_are_refused(api_hub: Hub, test_pki: PkiFixture) -> None:
    """A state-changing request without the session's CSRF token, with a wrong one, or from
    another origin is refused with 403 even though the session cookie is valid."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("olive")).status == 200
        path = "/api/alarms/1/ack"
        no_token = await c.session.post(path, json={})
        assert no_token.status == 403
        assert "CSRF" in (await no_token.json())["error"]
        assert (await c.post(path, {}, **{"X-CSRF-Token": "guessed"})).status == 403
        assert (await c.post(path, {}, Origin="https://evil.example")).status == 403
        assert (await c.post(path, {}, **{"Sec-Fetch-Site": "cross-site"})).status == 403
        # the same request with the token and our own origin goes through (404: no alarm 1)
        assert (await c.post(path, {}, Origin=f"https://localhost:{api_hub.api_port}")).status == 404
        # a login posted from another site is refused too
        evil = await c.session.post("/api/session", json={"username": "olive", "password": PASSWORD},
                                    headers={"Origin": "https://evil.example"})
        assert evil.status == 403


async def test_session_cookie_is_httponly_secure_strict_and_logout_ends_it(api_hub: Hub, test_pki: PkiFixture) -> None:
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        resp = await c.login("olive")
        cookie = resp.headers["Set-Cookie"]
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert flag in cookie
        me = await (await c.get("/api/session")).json()
        assert me["username"] == "olive"
        assert me["role"] == "operator"
        token = resp.cookies["jk_session"].value
        out = await c.session.delete("/api/session", headers={"X-CSRF-Token": c.csrf})
        assert out.status == 204
        again = await c.session.get("/api/session", cookies={"jk_session": token})
        assert again.status == 401


async def test_failed_logins_are_rate_limited(api_hub: Hub, test_pki: PkiFixture) -> None:
    """After five failed logins (per user name and per address) further logins are refused for the
    window, even with the right password; an unknown user and a wrong password look the same."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        unknown = await c.login("nobody", "whatever-it-is")
        wrong = await c.login("olive", "not the password")
        assert unknown.status == wrong.status == 401
        assert (await unknown.json()) == (await wrong.json())
        for _ in range(3):
            assert (await c.login("olive", "not the password")).status == 401
        locked = await c.login("olive")
        assert locked.status == 429
        assert int(locked.headers["Retry-After"]) > 0


async def test_health_and_openapi_are_public_and_openapi_covers_every_route(api_hub: Hub,
                                                                            test_pki: PkiFixture) -> None:
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        health = await (await c.get("/api/health")).json()
        assert health["mqtt_connected"] is True
        assert health["hub"] == api_hub.cfg.hub_id
        doc = await (await c.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    routes = {(m, p) for m, p, _r, _h in _routes()}
    assert routes == set(SPEC)
    for method, path in routes:
        assert method.lower() in doc["paths"][path]
    assert "AlarmView" in doc["components"]["schemas"]
