"""TLS context factory: TLS 1.3 only, a client certificate always, the server always verified.

There is deliberately no option to turn verification off, to fall back to TLS 1.2, or to
skip the hostname check. Errors loading files raise :class:`TlsSetupError` naming the file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from shared.errors import TlsSetupError


@dataclass(frozen=True)
class TlsFiles:
    """The three files of an identity: the CA chain to trust, our certificate, our key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_pki(cls, pki_dir: Path, cn: str) -> TlsFiles:
        """The files of identity ``cn`` in a ``jikimi pki`` folder."""
        return cls(ca=pki_dir / "ca.pem", cert=pki_dir / cn / "cert.pem", key=pki_dir / cn / "key.pem")


def trusting(purpose: ssl.Purpose, ca: Path) -> ssl.SSLContext:
    """TLS 1.3 trusting the CA file ``ca`` alone: given ``cafile``, ``create_default_context`` does
    not load the system's trust store, so no public CA can vouch for a broker, hub or peer."""
    try:
        ctx = ssl.create_default_context(purpose, cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"{ca}: cannot load CA: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _base(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    for label, path in (("CA", files.ca), ("certificate", files.cert), ("key", files.key)):
        if not path.is_file():
            raise TlsSetupError(f"{path}: {label} file not found")
    ctx = trusting(purpose, files.ca)
    try:
        ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"{files.cert} / {files.key}: cannot load certificate and key: {exc}") from exc
    return ctx


def cert_cn(path: Path) -> str:
    """The CN of the PEM certificate at ``path`` ("" when it cannot be read or has none)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return ""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """For connecting out (edge → broker, hub → broker, hub → recipients): TLS 1.3, the
    server's certificate and host name verified against ``files.ca`` alone (the system's public
    CAs are not loaded: safer, and ~0.9 MB less per context, which an edge pays on every
    reconnect attempt), our certificate sent."""
    ctx = _base(ssl.Purpose.SERVER_AUTH, files)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(files: TlsFiles, *, require_client_cert: bool, crl: Path | None = None) -> ssl.SSLContext:
    """For serving (hub API, enrolment, receivers): TLS 1.3; with ``require_client_cert`` the
    peer must present a certificate from ``files.ca`` (not revoked in ``crl``)."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH, files)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    if crl is not None:
        try:
            ctx.load_verify_locations(cafile=str(crl))
        except (ssl.SSLError, OSError) as exc:
            raise TlsSetupError(f"{crl}: cannot load CRL: {exc}") from exc
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx
