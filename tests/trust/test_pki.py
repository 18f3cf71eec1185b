"""The PKI writes the documented layout, keys 0600, real chains, and a CRL that lists revocations."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.cli import main
from trust.pki import Pki, PkiError, Role


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_and_issue_write_the_documented_layout(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("gg-suwon-up-0031", Role.EDGE)
    pki.issue("broker", Role.BROKER)
    for rel in ["ca.pem", "crl.pem", "index.json", "command-signing/key.pem", "command-signing/pub.pem",
                "gg-suwon-up-0031/cert.pem", "gg-suwon-up-0031/key.pem", "broker/cert.pem", "broker/key.pem"]:
        assert (pki.dir / rel).is_file(), rel
    for key in pki.dir.rglob("key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_leaf_is_p256_90_days_with_right_usage_and_chains_to_root(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.init()
    pki.issue("gg-a-01", Role.EDGE)
    pki.issue("broker", Role.BROKER)
    edge = _cert(pki.cert("gg-a-01"))
    assert edge.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gg-a-01"
    assert edge.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert (edge.not_valid_after_utc - edge.not_valid_before_utc).days == 90
    eku = edge.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    broker = _cert(pki.cert("broker"))
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    chain = x509.load_pem_x509_certificates(pki.ca_chain.read_bytes())
    issuing, root = chain
    edge.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(root)


def test_revoke_lists_serial_in_crl(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.init()
    pki.issue("gg-a-01", Role.EDGE)
    pki.issue("gg-b-01", Role.EDGE)
    serial = _cert(pki.cert("gg-a-01")).serial_number
    pki.revoke("gg-a-01")
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(_cert(pki.cert("gg-b-01")).serial_number) is None
    assert pki.active(Role.EDGE) == ["gg-b-01"]


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(target), "--dry-run"]) == 0
    assert not target.exists()
    assert "would write" in capsys.readouterr().out
    assert main(["pki", "init", "--dir", str(target)]) == 0
    assert main(["pki", "issue", "--dir", str(target), "--cn", "gg-a-01", "--role", "edge", "--dry-run"]) == 0
    assert not (target / "gg-a-01").exists()


@pytest.mark.parametrize(
    ("cn", "role"),
    [("GG-UPPER", Role.EDGE), ("gg/slash", Role.EDGE), ("suwon", Role.HUB), ("x", Role.OPERATOR),
     ("hub-suwon", Role.ALERT)],
)
def test_bad_names_are_refused(tmp_path: Path, cn: str, role: Role) -> None:
    pki = Pki(tmp_path)
    pki.init()
    with pytest.raises(PkiError, match="--cn"):
        pki.issue(cn, role)


def test_keys_are_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issuing a second time for the same CN is refused with a one-line error, exit 2."""
    d = str(tmp_path)
    assert main(["pki", "init", "--dir", d]) == 0
    assert main(["pki", "issue", "--dir", d, "--cn", "gg-a-01", "--role", "edge"]) == 0
    key = (tmp_path / "gg-a-01" / "key.pem").read_bytes()
    assert main(["pki", "issue", "--dir", d, "--cn", "gg-a-01", "--role", "edge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jikimi: ")
    assert "exists already" in err
    assert "Traceback" not in err
    assert (tmp_path / "gg-a-01" / "key.pem").read_bytes() == key
    assert main(["pki", "init", "--dir", d]) == 2


def test_issue_without_ca_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "issue", "--dir", str(tmp_path), "--cn", "gg-a-01", "--role", "edge"]) == 2
    assert "jikimi pki init" in capsys.readouterr().err


@pytest.mark.parametrize("cn", ["hub-suwon", "hub-x1", "broker", "alert-hub-suwon"])
def test_an_edge_cannot_take_a_name_that_looks_like_a_hub_or_the_broker(tmp_path: Path, cn: str) -> None:
    """Names are namespaced by role: a site id never looks like a hub's identity."""
    pki = Pki(tmp_path)
    pki.init()
    with pytest.raises(PkiError, match="may not look like a hub"):
        pki.issue(cn, Role.EDGE)


def test_a_name_belongs_to_one_role(tmp_path: Path) -> None:
    """An operator certificate cannot carry a site's name, nor a site an operator's (CSR too)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pki = Pki(tmp_path)
    pki.init()
    pki.issue("gg-suwon-up-0031", Role.EDGE)
    with pytest.raises(PkiError, match="belongs to a edge identity"):
        pki.issue("gg-suwon-up-0031", Role.OPERATOR)
    pki.issue("kim-jiwoo", Role.OPERATOR)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kim-jiwoo")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PkiError, match="belongs to a operator identity"):
        pki.sign_csr(csr, Role.EDGE, expected_cn="kim-jiwoo")


def test_parallel_issuance_loses_no_index_entry(tmp_path: Path) -> None:
    """The index is read, changed and written under a lock: 24 CSRs signed from 8 threads at
    once leave 24 entries (without the lock, writers overwrite each other's additions)."""
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pki = Pki(tmp_path)
    pki.init()

    def sign(i: int) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gg-par-{i:02d}")]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        pki.sign_csr(csr, Role.EDGE, expected_cn=f"gg-par-{i:02d}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(sign, range(24)))
    assert sorted(e.cn for e in pki.index()) == [f"gg-par-{i:02d}" for i in range(24)]


def test_the_command_key_is_certified_by_the_issuing_ca(tmp_path: Path) -> None:
    """A device that pins the root can check the command key it is given at enrolment."""
    from cryptography.hazmat.primitives import serialization

    from trust.pki import issued_by_chain, pinned_chain

    pki = Pki(tmp_path)
    pki.init()
    cert = x509.load_pem_x509_certificate(pki.command_cert())
    chain = pinned_chain(pki.ca_chain.read_bytes(), pki.root_fingerprint())
    assert issued_by_chain(cert, chain)
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == pki.command_pub.read_bytes()


def test_the_alert_signing_certificate_signs_documents_and_is_no_tls_identity(tmp_path: Path) -> None:
    """``pki issue --role alert``: the hub's CAP signing key, usable for document signing only."""
    d = str(tmp_path)
    assert main(["pki", "init", "--dir", d]) == 0
    assert main(["pki", "issue", "--dir", d, "--cn", "alert-hub-suwon", "--role", "alert"]) == 0
    pki = Pki(tmp_path)
    cert = _cert(pki.cert("alert-hub-suwon"))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")]  # id-kp-documentSigning, no clientAuth
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert [e.role for e in pki.index()] == [Role.ALERT]
    assert (pki.active(Role.HUB), pki.active(Role.EDGE)) == ([], [])  # so the broker's ACL never lists it


def test_issue_many_writes_what_issue_would_and_records_every_certificate(tmp_path: Path) -> None:
    """A fleet at once: each site gets its key (0600) and a certificate chaining to the issuing CA,
    recorded in the index with its serial; the index keeps what was there."""
    pki = Pki(tmp_path)
    pki.init()
    pki.issue("broker", Role.BROKER)
    sites = [f"gg-a-{i:03d}" for i in range(40)]
    pki.issue_many(sites, Role.EDGE)
    by_cn = {e.cn: e for e in pki.index()}
    assert set(by_cn) == {"broker", *sites}
    issuing = _cert(pki.dir / "issuing-ca" / "cert.pem")
    for cn in sites:
        cert = _cert(pki.cert(cn))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert cert.serial_number == by_cn[cn].serial
        assert by_cn[cn].role is Role.EDGE
        cert.verify_directly_issued_by(issuing)
        assert stat.S_IMODE(pki.key(cn).stat().st_mode) == 0o600


@pytest.mark.parametrize(("cns", "role", "why"), [
    (["gg-a-001", "gg-a-001"], Role.EDGE, "named twice"),
    (["gg-a-001", "hub-x"], Role.EDGE, "may not look like a hub"),
    (["gg-a-001", "kim-jiwoo"], Role.EDGE, "belongs to a operator"),
    (["gg-a-001", "gg-b-000"], Role.EDGE, "exists already"),
])
def test_issue_many_refuses_a_bad_or_taken_name_before_writing_anything(tmp_path: Path, cns: list[str], role: Role,
                                                                         why: str) -> None:
    pki = Pki(tmp_path)
    pki.init()
    pki.issue("kim-jiwoo", Role.OPERATOR)
    pki.issue("gg-b-000", Role.EDGE)
    before = pki.index()
    with pytest.raises(PkiError, match=why):
        pki.issue_many(cns, role)
    assert pki.index() == before
    assert not pki.cert("gg-a-001").exists()
    assert not pki.key("gg-a-001").exists()
