"""The reference receiver accepts, verifies, stores and acknowledges alerts, once per identifier."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest

from hub import receiver
from hub.forward import cap
from hub.forward.capread import CapSchema
from tests.hub.forward.test_cap import PICTURE, facts


async def post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.json()


async def test_cap_is_validated_stored_and_acknowledged_once(tmp_path: Path, schema: CapSchema) -> None:
    xml = cap.render(facts())
    async with receiver.serve(db=tmp_path / "rcv.db", schema=schema) as rcv:
        assert await post(rcv.url, xml, "application/cap+xml") == (
            200, {"identifier": "hub-test.0001", "status": "accepted", "valid": True, "problems": []})
        status, body = await post(rcv.url, xml, "application/cap+xml")
        assert (status, body["status"]) == (200, "duplicate")
    # the store is a file: it outlives the receiver
    async with receiver.serve(db=tmp_path / "rcv.db", schema=schema) as again:
        (got,) = again.alerts()
    assert (got.identifier, got.sender, got.msg_type, got.receptions, got.valid) == (
        "hub-test.0001", "hub-test@jikimi.example", "Alert", 2, True)


async def test_a_real_world_alert_that_does_not_validate_is_stored_tolerantly_or_refused_when_strict(
    shared_data: Path, schema: CapSchema
) -> None:
    signed = (shared_data / "cap" / "examples_realworld" / "canada_signed.xml").read_bytes()
    async with receiver.serve(schema=schema) as rcv:
        status, body = await post(rcv.url, signed, "application/xml")
        assert status == 200
        assert body["valid"] is False
        assert "NAADS Signature" in str(body["problems"])
    async with receiver.serve(schema=schema, strict=True) as strict:
        status, body = await post(strict.url, signed, "application/xml")
        assert status == 422
        assert strict.alerts() == []


async def test_an_embedded_picture_that_does_not_match_its_digest_is_a_problem(schema: CapSchema) -> None:
    xml = cap.render(facts()).replace(hashlib.sha1(PICTURE, usedforsecurity=False).hexdigest().encode(), b"0" * 40)
    async with receiver.serve(schema=schema) as rcv:
        status, body = await post(rcv.url, xml, "application/cap+xml")
    assert status == 200
    assert "do not match the digest" in str(body["problems"])


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"<feed/>", "application/xml", 400),
        (b"{}", "application/json", 400),
        (b"hello", "text/plain", 415),
    ],
)
async def test_what_is_not_an_alert_is_refused(body: bytes, content_type: str, status: int) -> None:
    async with receiver.serve() as rcv:
        assert (await post(rcv.url, body, content_type))[0] == status
        assert rcv.alerts() == []


async def test_fail_first_answers_503_and_stores_nothing(schema: CapSchema) -> None:
    xml = cap.render(facts())
    async with receiver.serve(fail_first=2, schema=schema) as rcv:
        codes = [(await post(rcv.url, xml, "application/cap+xml"))[0] for _ in range(3)]
        assert codes == [503, 503, 200]
        assert [a.receptions for a in rcv.alerts()] == [1]
