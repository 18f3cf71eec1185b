"""Signed CAP: the hub's alerts carry an enveloped XML-DSig that a receiver verifies with the CA alone."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from hub import receiver
from hub.forward import cap, capsign
from hub.forward.capread import CapSchema, parse_untrusted
from hub.forward.capsign import DSIG_NS, CapSigner
from hub.forward.config import Format, Recipient
from hub.forward.deliver import Answer, Forwarder
from hub.forward.errors import CapError
from hub.forward.ledger import payload_of
from hub.forward.plan import plan
from hub.forward.render import payload
from hub.forward.tx import LocalWriter
from tests.conftest import PkiFixture
from tests.hub.forward.helpers import ALERT_CN, Clock, config, notice, recipient, signer, signing_pki
from tests.hub.forward.test_cap import facts
from trust.pki import Pki, Role


def ca() -> Path:
    return signing_pki().ca_chain


def signed_alert() -> bytes:
    return signer().sign(cap.render(facts()))


def test_a_signed_alert_validates_and_verifies_with_the_ca_alone(schema: CapSchema) -> None:
    body = signed_alert()
    assert schema.errors(body) == ()  # the <Signature> sits in the schema's lax wildcard, and is checked too
    root = parse_untrusted(body)
    sig = root[-1]
    assert sig.tag == f"{{{DSIG_NS}}}Signature"  # enveloped: the last child of <alert>
    assert sig.find(f"{{{DSIG_NS}}}SignedInfo/{{{DSIG_NS}}}SignatureMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256")
    assert sig.find(f".//{{{DSIG_NS}}}X509Certificate") is not None  # the certificate travels with it
    assert capsign.verify(body, ca()) == capsign.SignatureCheck(True, signer=ALERT_CN)


@pytest.mark.parametrize("target", [b"Gwonseon underpass flooded", b"<urgency>Immediate", b"hub-test.0001"])
def test_changing_one_character_of_the_signed_body_fails_verification(target: bytes) -> None:
    body = signed_alert()
    assert target in body
    i = body.index(target) + len(target) - 1
    tampered = body[:i] + (b"X" if body[i:i + 1] != b"X" else b"Y") + body[i + 1:]
    check = capsign.verify(tampered, ca())
    assert not check.verified
    assert check.signer == ""
    assert "Digest mismatch" in check.problem or "Invalid" in check.problem


def test_a_signature_by_a_key_from_another_ca_does_not_verify(tmp_path: Path) -> None:
    other = Pki(tmp_path / "other")
    other.init()
    other.issue("alert-hub-rogue", Role.ALERT)
    body = CapSigner.load(other.key("alert-hub-rogue"), other.cert("alert-hub-rogue")).sign(cap.render(facts()))
    assert capsign.verify(body, other.ca_chain).verified  # good by its own CA...
    check = capsign.verify(body, ca())  # ...but not by ours
    assert not check.verified
    assert "InvalidCertificate" in check.problem


def test_a_tls_identity_of_the_same_ca_cannot_pass_for_the_alert_signer(test_pki: PkiFixture) -> None:
    """Only a document-signing certificate verifies: an edge's or a hub's TLS key signs nothing."""
    key, chain = (capsign.load_key(test_pki.dir / test_pki.hub / "key.pem"),
                  capsign.load_chain(test_pki.dir / test_pki.hub / "cert.pem"))
    with pytest.raises(CapError, match="not for signing documents"):
        CapSigner(key, chain)
    body = CapSigner(key, chain, purpose=None).sign(cap.render(facts()))
    check = capsign.verify(body, test_pki.dir / "ca.pem")
    assert not check.verified
    assert "hub-test" in check.problem
    assert "not for signing documents" in check.problem
    assert capsign.verify(body, test_pki.dir / "ca.pem", purpose=None).verified  # the signature itself is sound


def test_an_unsigned_alert_and_a_second_signature_do_not_verify() -> None:
    assert capsign.verify(cap.render(facts()), ca()) == capsign.SignatureCheck(False, problem="not signed")
    with pytest.raises(CapError, match="signed already"):
        signer().sign(signed_alert())


def test_the_outbox_refuses_to_render_unsigned_cap() -> None:
    cfg = config(recipient("centre", "http://127.0.0.1:9/alerts"), signer=None)
    planned = plan(notice(), None, cfg, "hub-test.0001", None)
    assert planned is not None
    with pytest.raises(CapError, match="refused unsigned"):
        payload(planned, cfg.recipients[0])
    keti = recipient("agency", "http://127.0.0.1:9/alerts", format=Format.KETI)
    assert payload(planned, keti).body  # other formats are not CAP-signed


def test_a_signer_whose_certificate_is_not_for_its_key_is_refused(test_pki: PkiFixture) -> None:
    pki = signing_pki()
    with pytest.raises(CapError, match="not for this alert-signing key"):
        CapSigner(capsign.load_key(pki.key(ALERT_CN)), capsign.load_chain(test_pki.dir / test_pki.alert / "cert.pem"))


class FlakyTransport:
    """Answers 503 to the first ``fail`` attempts, then acknowledges; records every body sent."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.bodies: list[bytes] = []

    async def post(self, recipient: Recipient, body: bytes, content_type: str, identifier: str) -> Answer:
        self.bodies.append(body)
        if len(self.bodies) <= self.fail:
            return Answer(503, "busy")
        return Answer(200, json.dumps({"identifier": identifier}))


async def test_every_attempt_sends_the_same_signed_bytes(db: LocalWriter, clock: Clock) -> None:
    """Signed once at enqueue and stored: a retried delivery resends those bytes, not a fresh signature."""
    cfg = config(recipient("centre", "http://127.0.0.1:9/alerts"))
    transport = FlakyTransport(fail=2)
    fwd = Forwarder(cfg, db, transport, clock=clock)
    sent = await fwd.enqueue(notice())
    assert sent is not None
    for _ in range(3):
        await fwd.step()
        clock.advance(120)
    assert len(transport.bodies) == 3
    assert len(set(transport.bodies)) == 1
    assert transport.bodies[0] == await db.read(lambda c: payload_of(c, sent.identifier, "cap"))
    assert capsign.verify(transport.bodies[0], ca()).verified
    # signing again gives other bytes (ECDSA is randomised): which is why it is done once, and stored
    planned = plan(notice(), None, cfg, sent.identifier, None)
    assert planned is not None
    assert signer().sign(cap.render(planned.facts)) != transport.bodies[0]


async def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, \
            http.post(url, data=body, headers={"Content-Type": "application/cap+xml"}) as r:
        return r.status, await r.json()


async def test_the_receiver_records_whether_the_signature_verified_and_refuses_when_strict(
    tmp_path: Path, schema: CapSchema
) -> None:
    good = signed_alert()
    bad = good.replace(b"Gwonseon underpass flooded", b"Gwonseon underpass is dry")
    unsigned = cap.render(facts(identifier="hub-test.0002"))
    async with receiver.serve(db=tmp_path / "rcv.db", schema=schema, ca_bundle=ca()) as rcv:
        status, answer = await post(rcv.url, good)
        assert (status, answer["signature"]) == (200, {"verified": True, "signer": ALERT_CN, "problem": ""})
        assert (await post(rcv.url, unsigned))[0] == 200
        got = {a.identifier: a for a in rcv.alerts()}
    assert (got["hub-test.0001"].verified, got["hub-test.0001"].signer) == (True, ALERT_CN)
    assert (got["hub-test.0002"].verified, got["hub-test.0002"].signature_problem) == (False, "not signed")
    async with receiver.serve(schema=schema, ca_bundle=ca(), strict=True) as strict:
        for body in (bad, unsigned):
            status, answer = await post(strict.url, body)
            assert (status, answer["error"]) == (422, "signature not verified")
        assert strict.alerts() == []
        assert (await post(strict.url, good))[0] == 200
    async with receiver.serve(schema=schema) as unchecked:  # no CA bundle: nothing recorded either way
        await post(unchecked.url, good)
        assert unchecked.alerts()[0].verified is None


async def test_a_real_signed_alert_with_a_space_in_its_signature_id_is_recorded_not_verified(
    shared_data: Path, schema: CapSchema
) -> None:
    real = (shared_data / "cap" / "examples_realworld" / "canada_signed.xml").read_bytes()
    check = capsign.verify(real, ca())
    assert not check.verified
    assert check.problem
    async with receiver.serve(schema=schema, ca_bundle=ca()) as rcv:
        status, answer = await post(rcv.url, real)
        assert status == 200
        assert answer["signature"]["verified"] is False  # type: ignore[index]
        (got,) = rcv.alerts()
    assert got.verified is False
