"""The operator API over real HTTPS: who may call what, CSRF and cross-site refusals, sessions,
rate-limited logins, and the OpenAPI description."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from hub import auth
from hub.api import _routes
from hub.commands import OperationKind
from hub.errors import Refused
from hub.live import LiveEvent
from hub.openapi import SPEC
from hub.roles import Role
from hub.service import Hub, running
from shared.messages import MAX_TEXT, SiteState
from shared.signing import load_public_key, verify_command
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import PASSWORD, ConfigFactory, add_users, api_client
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def test_unauthenticated_calls_are_refused(api_hub: Hub, test_pki: PkiFixture) -> None:
    """Without a session cookie every non-public route answers 401, reads and writes alike."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        for method, path, role, _h in _routes():
            if role is None:
                continue
            url = path.replace("{site}", "x").replace("{id}", "1").replace("{cmd_id}", "c").replace("{op_id}", "o") \
                .replace("{ex_id}", "e").replace("{camera}", "c").replace("{view}", "v")
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


# --- logins: counted before the password check, back-off per (user, address) -------------------


class Clock:
    """The hub's injected clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check (scrypt) the hub runs, by the password it checked."""
    calls: list[str] = []
    real = auth.check_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "check_password", counting)
    return calls


async def test_parallel_wrong_logins_reach_the_password_check_at_most_the_limit(
    hub_config: ConfigFactory, test_pki: PkiFixture, scrypt_calls: list[str]
) -> None:
    """40 wrong guesses at once against a limit of 5: five are checked (401), 35 refused (429)
    without running scrypt; the right password is refused too until the back-off is over, and
    then it works."""
    cfg = hub_config(api={"enabled": True}, auth={"login_max_failures": 5, "login_backoff_s": 30})
    add_users(cfg)
    clock = Clock()
    async with running(cfg, clock=clock) as hub, api_client(hub, test_pki.dir / "ca.pem") as c:
        answers = await asyncio.gather(*(c.login("sam", f"guess number {i}") for i in range(40)))
        statuses = sorted(r.status for r in answers)
        assert statuses == [401] * 5 + [429] * 35
        assert len(scrypt_calls) == 5
        assert all(int(r.headers["Retry-After"]) > 0 for r in answers if r.status == 429)
        assert (await c.login("sam")).status == 429  # still backing off: not even checked
        assert len(scrypt_calls) == 5
        clock.advance(30)
        assert (await c.login("sam")).status == 200
        assert len(scrypt_calls) == 6


async def test_a_guessed_user_still_logs_in_from_another_room_behind_the_trusted_proxy(
    hub_config: ConfigFactory, test_pki: PkiFixture, scrypt_calls: list[str]
) -> None:
    """Behind the configured proxy, attempts are counted by the client address it names: an
    attacker hammering sam's password slows only itself; sam from the situation room gets in."""
    cfg = hub_config(api={"enabled": True, "trusted_proxy_header": "X-Forwarded-For",
                          "trusted_proxies": ["127.0.0.1"]})
    add_users(cfg)
    async with running(cfg) as hub, api_client(hub, test_pki.dir / "ca.pem") as c:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        answers = await asyncio.gather(*(
            c.session.post("/api/session", json={"username": "sam", "password": f"guess {i}"}, headers=attacker)
            for i in range(40)))
        assert sorted(r.status for r in answers) == [401] * 5 + [429] * 35
        # the attacker's own X-Forwarded-For lands left of the address the proxy appends: no escape
        spoofed = {"X-Forwarded-For": "198.51.100.20, 203.0.113.9"}
        assert (await c.session.post("/api/session", json={"username": "sam", "password": PASSWORD},
                                     headers=spoofed)).status == 429
        room = {"X-Forwarded-For": "198.51.100.20"}
        ok = await c.session.post("/api/session", json={"username": "sam", "password": PASSWORD}, headers=room)
        assert ok.status == 200
        rows = await hub.reader.run(lambda conn: conn.execute(
            "SELECT detail FROM audit WHERE action = 'session.login' ORDER BY id DESC LIMIT 1").fetchone())
        assert "198.51.100.20" in rows[0]


async def test_a_forwarded_for_header_is_ignored_without_a_trusted_proxy(api_hub: Hub, test_pki: PkiFixture) -> None:
    """By default the peer's address counts: a client rotating X-Forwarded-For gains nothing."""
    async with api_client(api_hub, test_pki.dir / "ca.pem") as c:
        statuses = []
        for i in range(8):
            resp = await c.session.post("/api/session", json={"username": "olive", "password": "wrong one"},
                                        headers={"X-Forwarded-For": f"198.51.100.{i}"})
            statuses.append(resp.status)
        assert statuses == [401] * 5 + [429] * 3


# --- request bodies: the wire's limits -----------------------------------------------------------


async def test_an_over_long_reason_is_refused_at_the_api_and_one_at_the_limit_goes_end_to_end(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """A block whose reason is over the wire's 1,024 characters is a 422 naming the field before
    anything is planned or signed (no operation, no command, nothing at the edge); a reason of
    exactly 1,024 characters is signed, sent and decoded by the edge."""
    site = test_pki.take_site()
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site: {"area": "limit-area"}}})
    add_users(cfg)
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site), site) as edge, \
            api_client(hub, test_pki.dir / "ca.pem") as c:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "barrier_cmd", "mode",
                                                      "motor_fault"))])
        await edge.send([edge.reading("barrier-1", "water_depth_cm", 20.0)])
        await edge.wait_acked(edge.next_seq - 1)
        await c.login("olive")
        long = await c.post("/api/operations", {"kind": "block", "area": "limit-area", "reason": "x" * 2000})
        assert long.status == 422
        error = (await long.json())["error"]
        assert f"<= {MAX_TEXT}" in error
        assert "$.reason" in error

        def counts(conn: sqlite3.Connection) -> tuple[int, int]:
            return (conn.execute("SELECT count(*) FROM operations").fetchone()[0],
                    conn.execute("SELECT count(*) FROM commands").fetchone()[0])

        assert await hub.reader.run(counts) == (0, 0)
        cmd = await c.post("/api/commands", {"site": site, "device": "barrier-1", "action": "barrier.close",
                                             "reason": "y" * (MAX_TEXT + 1)})
        assert cmd.status == 422
        with pytest.raises(Refused, match="does not fit the wire"):  # callers past the API are held too
            await hub.ops.start_operation(OperationKind.BLOCK, "limit-area", "olive", Role.OPERATOR, "z" * 2000)
        assert await hub.reader.run(counts) == (0, 0)

        reason = "경" * MAX_TEXT  # characters, not bytes
        ok = await c.post("/api/operations", {"kind": "block", "area": "limit-area", "reason": reason})
        assert ok.status == 202, await ok.text()
        (sent,) = await edge.wait_commands(1)
        assert sent.reason == reason
        verify_command(sent, load_public_key(test_pki.dir / "command-signing" / "pub.pem"))
    assert [c.reason for c in edge.commands] == [reason]


# --- the live stream ends with its session --------------------------------------------------------


@pytest.mark.parametrize("ending", ["logout", "disable", "expiry"])
async def test_the_event_stream_ends_with_its_session(hub_config: ConfigFactory, test_pki: PkiFixture,
                                                      ending: str) -> None:
    """An open /api/events stream is closed (after a ``session_ended`` event) once its session is
    logged out, the account disabled by the CLI's function, or the session has expired."""
    cfg = hub_config(api={"enabled": True, "events_keepalive_s": 0.2}, auth={"session_ttl_s": 600})
    add_users(cfg)
    clock = Clock()
    async with running(cfg, clock=clock) as hub, api_client(hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("olive")).status == 200
        stream = await c.session.get("/api/events")
        assert stream.status == 200
        assert await stream.content.readline() == b": connected\n"
        if ending == "logout":
            assert (await c.session.delete("/api/session", headers={"X-CSRF-Token": c.csrf})).status == 204
        elif ending == "disable":
            await asyncio.to_thread(auth.disable_user, cfg.db_path, "olive", actor="test")
        else:
            clock.advance(601)
        async with asyncio.timeout(20):  # generous: the stream ends at the next keep-alive
            rest = await stream.content.read()
        assert b"event: session_ended" in rest
        assert stream.content.at_eof()


async def test_the_event_stream_outlives_keep_alives_while_its_session_lasts(
    hub_config: ConfigFactory, test_pki: PkiFixture
) -> None:
    """A live session's stream keeps going through keep-alives and still carries events."""
    cfg = hub_config(api={"enabled": True, "events_keepalive_s": 0.05})
    add_users(cfg)
    async with running(cfg) as hub, api_client(hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("olive")).status == 200
        stream = await c.session.get("/api/events")
        async with asyncio.timeout(20):
            for _ in range(3):
                while await stream.content.readline() != b": keep-alive\n":
                    pass
            hub.bus.publish(LiveEvent("resync", b"{}"))
            while (line := await stream.content.readline()) != b"event: resync\n":
                assert line, "the stream ended"
        stream.close()
