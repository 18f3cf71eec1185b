"""TLS contexts are TLS 1.3 only and always verify; missing files are named."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from shared.errors import TlsSetupError
from shared.tls import TlsFiles, client_context, server_context
from trust.pki import Pki, Role


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.init()
    p.issue("gg-a-01", Role.EDGE)
    p.issue("hub-a", Role.HUB)
    return p


def test_client_context_verifies_and_requires_tls13(pki: Pki) -> None:
    ctx = client_context(TlsFiles.from_pki(pki.dir, "gg-a-01"))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_server_context_requires_client_certs_and_checks_crl(pki: Pki) -> None:
    ctx = server_context(TlsFiles.from_pki(pki.dir, "hub-a"), require_client_cert=True, crl=pki.crl)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


def test_missing_file_is_named(pki: Pki, tmp_path: Path) -> None:
    files = TlsFiles(ca=pki.ca_chain, cert=tmp_path / "nope.pem", key=pki.key("gg-a-01"))
    with pytest.raises(TlsSetupError, match=r"nope\.pem"):
        client_context(files)


def test_mismatched_key_is_reported(pki: Pki) -> None:
    files = TlsFiles(ca=pki.ca_chain, cert=pki.cert("gg-a-01"), key=pki.key("hub-a"))
    with pytest.raises(TlsSetupError, match="cannot load certificate and key"):
        client_context(files)


def _pem_count(path: Path) -> int:
    return path.read_text().count("BEGIN CERTIFICATE")


@pytest.mark.parametrize("server", [False, True])
def test_contexts_trust_the_projects_ca_alone_never_the_systems_store(pki: Pki, server: bool) -> None:
    """A public CA in the machine's trust store can vouch for no broker, hub or peer of ours."""
    ctx = (server_context(TlsFiles.from_pki(pki.dir, "hub-a"), require_client_cert=True) if server
           else client_context(TlsFiles.from_pki(pki.dir, "gg-a-01")))
    assert ctx.cert_store_stats()["x509_ca"] == _pem_count(pki.ca_chain)


def test_a_broken_ca_file_is_named(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    files = TlsFiles(ca=bad, cert=pki.cert("gg-a-01"), key=pki.key("gg-a-01"))
    with pytest.raises(TlsSetupError, match=r"ca\.pem: cannot load CA"):
        client_context(files)
