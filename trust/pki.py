"""The project's PKI: a root CA, an issuing CA, the hub's command-signing key, leaf certificates.

Layout of a PKI folder (so people and scripts can find things)::

    DIR/ca.pem                   the chain clients trust (issuing CA, then root CA)
    DIR/crl.pem                  the issuing CA's certificate revocation list
    DIR/index.json               every certificate issued: serial, CN, role, expiry, revoked
    DIR/root-ca/cert.pem, key.pem
    DIR/issuing-ca/cert.pem, key.pem
    DIR/command-signing/key.pem  the hub's Ed25519 command key (private)
    DIR/command-signing/pub.pem  what edges install to verify commands
    DIR/command-signing/cert.pem the command key certified by the issuing CA, so a device that
                                 pins the root can check the key it is given at enrolment
    DIR/audit-signing/key.pem    the hub's Ed25519 key for checkpoints of its audit chain (private)
    DIR/audit-signing/pub.pem    what ``jikimi audit verify --key`` checks them with
    DIR/.index.lock              held while the index is read, changed and written
    DIR/<cn>/cert.pem, key.pem   one folder per issued identity (the hub's CAP alert-signing
                                 key too: ``--role alert``, CN ``alert-<hub>``, DESIGN §6)

Certificates are ECDSA P-256. Private keys are written 0600 and never overwritten. Every
function that writes has a dry-run form that returns the plan instead.

Names are namespaced by role: a hub is ``hub-<name>``, a city broker's bridge ``bridge-<city>``,
a provincial hub ``province-<name>``; an edge's CN is its site id and may not look like any of
these or be ``broker``, and a CN belongs to one role only (the index refuses a
certificate for a CN that another role already holds), so no identity can pass for another's.

(In production the root key lives offline; ``pki init`` keeps it here for a single-machine
deployment and the demo.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import TrustError, WireError
from shared.topics import check_city_id


class PkiError(TrustError):
    """The PKI folder is missing, incomplete, or the request does not fit it."""


class Role(enum.StrEnum):
    EDGE = "edge"
    HUB = "hub"
    OPERATOR = "operator"
    BROKER = "broker"
    ALERT = "alert"
    """The hub's CAP alert-signing key (XML-DSig): document signing only, never a TLS identity."""
    BRIDGE = "bridge"
    """A city broker's bridge at the provincial broker: CN ``bridge-<city>`` (DESIGN §8)."""
    PROVINCE = "province"
    """A provincial hub: CN ``province-<name>``; reads every city's up channels, writes their down ones."""


_CN_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}$")
_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_HUB_RE = re.compile(r"^hub-[a-z0-9][a-z0-9-]{0,58}$")
_ALERT_RE = re.compile(r"^alert-[a-z0-9][a-z0-9-]{0,56}$")
_PROVINCE_RE = re.compile(r"^province-[a-z0-9][a-z0-9-]{0,53}$")
BRIDGE_PREFIX = "bridge-"
_RESERVED_PREFIXES = ("hub-", "alert-", BRIDGE_PREFIX, "province-")
"""What an edge's CN may not start with: the other roles' namespaces."""
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): what an alert-signing certificate may do, and nothing else."""
DEFAULT_DAYS = 90
ROOT_DAYS = 3650
ISSUING_DAYS = 1825
CRL_DAYS = 90


@dataclass(frozen=True)
class Plan:
    """What a PKI operation writes (or would write, with ``--dry-run``)."""

    writes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self, dry_run: bool = False) -> list[str]:
        verb = "would write" if dry_run else "write"
        return [f"{verb} {w}" for w in self.writes] + self.notes


@dataclass(frozen=True)
class IndexEntry:
    serial: int
    cn: str
    role: Role
    not_after: str
    revoked: bool = False


def _check_days(days: int) -> None:
    if days < 1 or days > 825:
        raise PkiError(f"--days {days}: must be between 1 and 825")


def _default_sans(role: Role) -> tuple[str, ...]:
    """The SANs a server-side identity gets when none are named: this machine's names."""
    return ("localhost", "127.0.0.1") if role in (Role.BROKER, Role.HUB, Role.PROVINCE) else ()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jikimi"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey | Ed25519PublicKey, serial: int,
    days: int, *,
    ca: bool, path_length: int | None = None,
) -> x509.CertificateBuilder:
    """What every certificate here has: validity (5 min back-dated for clock skew), basic
    constraints, key usage for a CA or a leaf, and the subject key identifier."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    path_length: int | None,
) -> x509.Certificate:
    builder = _builder(subject, issuer, key.public_key(), x509.random_serial_number(), days, ca=True,
                       path_length=path_length)
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A PKI folder on disk."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    # --- paths ---------------------------------------------------------------------------

    @property
    def ca_chain(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def index_file(self) -> Path:
        return self.dir / "index.json"

    @property
    def command_key(self) -> Path:
        return self.dir / "command-signing" / "key.pem"

    @property
    def command_pub(self) -> Path:
        return self.dir / "command-signing" / "pub.pem"

    @property
    def command_cert_file(self) -> Path:
        return self.dir / "command-signing" / "cert.pem"

    @property
    def audit_key(self) -> Path:
        return self.dir / "audit-signing" / "key.pem"

    @property
    def audit_pub(self) -> Path:
        return self.dir / "audit-signing" / "pub.pem"

    def command_cert(self) -> bytes:
        """The command key's certificate (made on first use for a PKI that predates it)."""
        if not self.command_cert_file.exists():
            pub = serialization.load_pem_public_key(self.command_pub.read_bytes())
            if not isinstance(pub, Ed25519PublicKey):
                raise PkiError(f"{self.command_pub}: not an Ed25519 public key")
            issuer_cert, issuer_key = self._issuing()
            cert = (
                _builder(_name("command-signing", "command-signing"), issuer_cert.subject, pub,
                         x509.random_serial_number(), ISSUING_DAYS, ca=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                               critical=False)
                .sign(issuer_key, hashes.SHA256())
            )
            _write(self.command_cert_file, _cert_pem(cert), private=False)
        return self.command_cert_file.read_bytes()

    def cert(self, cn: str) -> Path:
        return self.dir / cn / "cert.pem"

    def key(self, cn: str) -> Path:
        return self.dir / cn / "key.pem"

    # --- init ------------------------------------------------------------------------------

    def init(self, *, dry_run: bool = False) -> Plan:
        """Create the root CA, the issuing CA, the command-signing and audit-signing keys and an empty CRL."""
        if self.ca_chain.exists():
            raise PkiError(f"{self.dir}: already holds a PKI (ca.pem exists); use another --dir")
        plan = Plan(
            writes=[
                str(self.dir / "root-ca" / "cert.pem"),
                str(self.dir / "root-ca" / "key.pem") + " (0600)",
                str(self.dir / "issuing-ca" / "cert.pem"),
                str(self.dir / "issuing-ca" / "key.pem") + " (0600)",
                str(self.ca_chain),
                str(self.crl),
                str(self.command_key) + " (0600)",
                str(self.command_pub),
                str(self.command_cert_file),
                str(self.audit_key) + " (0600)",
                str(self.audit_pub),
                str(self.index_file),
            ]
        )
        if dry_run:
            return plan
        self.dir.mkdir(parents=True, exist_ok=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name("jikimi root CA", "pki")
        root = _ca_cert(root_name, root_key, root_name, root_key, ROOT_DAYS, path_length=1)
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing_name = _name("jikimi issuing CA", "pki")
        issuing = _ca_cert(issuing_name, issuing_key, root_name, root_key, ISSUING_DAYS, path_length=0)
        _write(self.dir / "root-ca" / "key.pem", _key_pem(root_key), private=True)
        _write(self.dir / "root-ca" / "cert.pem", _cert_pem(root), private=False)
        _write(self.dir / "issuing-ca" / "key.pem", _key_pem(issuing_key), private=True)
        _write(self.dir / "issuing-ca" / "cert.pem", _cert_pem(issuing), private=False)
        _write(self.ca_chain, _cert_pem(issuing) + _cert_pem(root), private=False)
        cmd_key = Ed25519PrivateKey.generate()
        _write(self.command_key, _key_pem(cmd_key), private=True)
        _write(
            self.command_pub,
            cmd_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            private=False,
        )
        audit_key = Ed25519PrivateKey.generate()
        _write(self.audit_key, _key_pem(audit_key), private=True)
        _write(self.audit_pub, audit_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), private=False)
        self._save_index([])
        self._write_crl([])
        self.command_cert()
        return plan

    # --- issuing ---------------------------------------------------------------------------

    def _issuing(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert_path = self.dir / "issuing-ca" / "cert.pem"
        key_path = self.dir / "issuing-ca" / "key.pem"
        if not cert_path.exists() or not key_path.exists():
            raise PkiError(f"{self.dir}: no issuing CA here; run 'jikimi pki init --dir {self.dir}' first")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path}: not an EC key")
        return cert, key

    def issue(
        self,
        cn: str,
        role: Role,
        *,
        days: int = DEFAULT_DAYS,
        sans: Sequence[str] = (),
        dry_run: bool = False,
    ) -> Plan:
        """Issue a certificate for ``cn`` with a fresh key (written 0600, never overwritten)."""
        check_cn(cn, role)
        self._check_role_of(cn, role)
        _check_days(days)
        if self.key(cn).exists() or self.cert(cn).exists():
            raise PkiError(f"{self.dir / cn}: an identity named {cn!r} exists already; revoke it or pick another CN")
        sans = tuple(sans) or _default_sans(role)
        san_entries = [_san(s) for s in sans]
        plan = Plan(
            writes=[str(self.key(cn)) + " (0600)", str(self.cert(cn)), str(self.index_file)],
            notes=[f"{role.value} certificate for CN={cn}, {days} days" + (f", SAN {', '.join(sans)}" if sans else "")],
        )
        if dry_run:
            self._issuing()  # still fail early when there is no CA
            return plan
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(cn, role, key.public_key(), days, san_entries)
        _write(self.key(cn), _key_pem(key), private=True)
        _write(self.cert(cn), _cert_pem(cert), private=False)
        return plan

    def sign_csr(self, csr_pem: bytes, role: Role, *, expected_cn: str, days: int = DEFAULT_DAYS) -> bytes:
        """Issue a certificate for a CSR whose key was made elsewhere (enrolment, renewal).

        The CSR must be self-signed correctly, carry exactly ``expected_cn``, and hold an
        ECDSA P-256 key. The certificate is recorded in the index (not written under DIR/<cn>:
        the private key never leaves the device).
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate request: {exc}") from exc
        if not csr.is_signature_valid:
            raise PkiError("the certificate request's signature does not verify")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if len(cns) == 1 else ""
        if cn != expected_cn:
            raise PkiError(f"the certificate request is for CN {cn!r}, expected {expected_cn!r}")
        check_cn(cn, role)
        self._check_role_of(cn, role)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise PkiError("the certificate request must carry an ECDSA P-256 key")
        return _cert_pem(self._leaf(cn, role, public_key, days, []))

    def issue_many(self, cns: Sequence[str], role: Role, *, days: int = DEFAULT_DAYS) -> None:
        """Issue certificates for many CNs of one role (a city's sites), each as :meth:`issue`
        would (default SANs included), under one hold of the index lock: the index is read and written once,
        where :meth:`issue` reads and writes all of it for every certificate (6,500 sites one by
        one took 210 s). Every CN is checked before anything is written; should writing fail
        midway, the index still records every certificate written before."""
        _check_days(days)
        if len(set(cns)) != len(cns):
            raise PkiError("the same CN is named twice")
        for cn in cns:
            check_cn(cn, role)
        with self._locked():
            entries = self.index()
            roles: dict[str, set[Role]] = {}
            for e in entries:
                roles.setdefault(e.cn, set()).add(e.role)
            for cn in cns:
                other = roles.get(cn, set()) - {role}
                if other:
                    raise PkiError(f"--cn {cn!r}: the name belongs to a {other.pop().value} identity already")
                if self.key(cn).exists() or self.cert(cn).exists():
                    raise PkiError(f"{self.dir / cn}: an identity named {cn!r} exists already")
            issuer = self._issuing()
            sans = [_san(s) for s in _default_sans(role)]
            try:
                for cn in cns:
                    key = ec.generate_private_key(ec.SECP256R1())
                    cert = self._sign_leaf(cn, role, key.public_key(), days, sans, issuer)
                    _write(self.key(cn), _key_pem(key), private=True)
                    _write(self.cert(cn), _cert_pem(cert), private=False)
                    entries.append(IndexEntry(serial=cert.serial_number, cn=cn, role=role,
                                              not_after=cert.not_valid_after_utc.isoformat()))
            finally:
                self._save_index(entries)

    def _leaf(
        self, cn: str, role: Role, public_key: ec.EllipticCurvePublicKey, days: int, sans: Sequence[x509.GeneralName]
    ) -> x509.Certificate:
        cert = self._sign_leaf(cn, role, public_key, days, sans, self._issuing())
        with self._locked():
            entries = self.index()
            entries.append(IndexEntry(serial=cert.serial_number, cn=cn, role=role,
                                      not_after=cert.not_valid_after_utc.isoformat()))
            self._save_index(entries)
        return cert

    @staticmethod
    def _sign_leaf(cn: str, role: Role, public_key: ec.EllipticCurvePublicKey, days: int,
                   sans: Sequence[x509.GeneralName],
                   issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> x509.Certificate:
        issuer_cert, issuer_key = issuer
        usages = {
            Role.EDGE: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Role.OPERATOR: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Role.HUB: [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            Role.BROKER: [ExtendedKeyUsageOID.SERVER_AUTH],
            Role.ALERT: [DOCUMENT_SIGNING],
            Role.BRIDGE: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Role.PROVINCE: [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        }[role]
        serial = x509.random_serial_number()
        builder = (
            _builder(_name(cn, role.value), issuer_cert.subject, public_key, serial, days, ca=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def _check_role_of(self, cn: str, role: Role) -> None:
        other = {e.role for e in self.index() if e.cn == cn} - {role}
        if other:
            raise PkiError(f"--cn {cn!r}: the name belongs to a {other.pop().value} identity already; "
                           f"a {role.value} needs a name of its own")

    def root_fingerprint(self) -> str:
        """SHA-256 (hex) of the root CA certificate's DER: what enrolment tokens pin."""
        return ca_fingerprint(self.ca_chain.read_bytes())

    # --- revocation ------------------------------------------------------------------------

    def revoke(self, cn: str, *, dry_run: bool = False) -> Plan:
        """Mark every certificate of ``cn`` revoked and regenerate ``crl.pem``."""
        with self._locked():
            return self._revoke(cn, dry_run)

    def _revoke(self, cn: str, dry_run: bool) -> Plan:
        entries = self.index()
        hits = [e for e in entries if e.cn == cn and not e.revoked]
        if not hits:
            raise PkiError(f"{self.index_file}: no valid certificate with CN {cn!r}")
        plan = Plan(
            writes=[str(self.crl), str(self.index_file)],
            notes=[f"revoke CN={cn} serial {e.serial:x}" for e in hits],
        )
        if dry_run:
            return plan
        updated = [
            IndexEntry(e.serial, e.cn, e.role, e.not_after, True) if e in hits else e for e in entries
        ]
        self._save_index(updated)
        self._write_crl([e.serial for e in updated if e.revoked])
        return plan

    def _write_crl(self, serials: Sequence[int]) -> None:
        issuer_cert, issuer_key = self._issuing()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(issuer_key, hashes.SHA256())
        _write(self.crl, crl.public_bytes(serialization.Encoding.PEM), private=False)

    # --- index -----------------------------------------------------------------------------

    def index(self) -> list[IndexEntry]:
        """Every certificate issued from this PKI, oldest first."""
        try:
            raw = json.loads(self.index_file.read_text())
        except FileNotFoundError:
            raise PkiError(f"{self.dir}: no PKI here; run 'jikimi pki init --dir {self.dir}' first") from None
        except json.JSONDecodeError as exc:
            raise PkiError(f"{self.index_file}: not valid JSON: {exc}") from exc
        return [
            IndexEntry(int(e["serial"], 16), e["cn"], Role(e["role"]), e["not_after"], bool(e["revoked"]))
            for e in raw["certificates"]
        ]

    def _save_index(self, entries: Sequence[IndexEntry]) -> None:
        body = {
            "certificates": [
                {
                    "serial": f"{e.serial:x}",
                    "cn": e.cn,
                    "role": e.role.value,
                    "not_after": e.not_after,
                    "revoked": e.revoked,
                }
                for e in entries
            ]
        }
        _write(self.index_file, json.dumps(body, indent=2).encode() + b"\n", private=False)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the index lock (an exclusive flock): one read-change-write of the index at a time,
        across processes (``pki issue`` by hand while the hub enrols a site)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def entry(self, serial: int) -> IndexEntry | None:
        """The index entry of one certificate, by serial."""
        return next((e for e in self.index() if e.serial == serial), None)

    def active(self, role: Role) -> list[str]:
        """CNs of ``role`` with at least one certificate that is not revoked."""
        seen: dict[str, None] = {}
        for e in self.index():
            if e.role is role and not e.revoked:
                seen[e.cn] = None
        return list(seen)


def ca_fingerprint(chain_pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the last (root) certificate in a PEM chain."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    return certs[-1].fingerprint(hashes.SHA256()).hex()


def pinned_chain(chain_pem: bytes, root_sha256: str) -> list[x509.Certificate]:
    """The certificates of ``chain_pem``, all of which must lead to the root pinned by its SHA-256.

    The pinned root must be there and self-signed; every other certificate must be a CA issued
    by the root or by a certificate already accepted. One certificate that does not (an attacker's
    CA put in front of the real root) refuses the whole chain: nothing from it is trusted.
    Returns the chain, root first.
    """
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate chain: {exc}") from exc
    roots = [c for c in certs if c.fingerprint(hashes.SHA256()).hex() == root_sha256.lower()]
    if not roots:
        raise PkiError("the chain does not hold the pinned root CA")
    root = roots[0]
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError("the pinned certificate is not a self-signed root CA") from exc
    accepted = [root]
    pending = [c for c in certs if c is not root and c != root]
    while pending:
        progress = False
        for cert in list(pending):
            if _is_ca(cert) and any(_issued_by(cert, a) for a in accepted):
                accepted.append(cert)
                pending.remove(cert)
                progress = True
        if not progress:
            names = ", ".join(c.subject.rfc4514_string() for c in pending)
            raise PkiError(f"the chain holds a certificate the pinned root did not issue: {names}")
    return accepted


def issued_by_chain(cert: x509.Certificate, chain: Sequence[x509.Certificate]) -> bool:
    """True if ``cert`` was signed by one of ``chain`` (which :func:`pinned_chain` accepted)."""
    return any(_issued_by(cert, a) for a in chain)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_cn(cn: str, role: Role) -> None:
    """Refuse names that would not be valid identities (and MQTT topic segments) for ``role``."""
    if role is Role.EDGE and not _SITE_RE.match(cn):
        raise PkiError(f"--cn {cn!r}: an edge's CN is its site id: 2-63 of a-z, 0-9 and '-'")
    if role is Role.EDGE and (cn.startswith(_RESERVED_PREFIXES) or cn == "broker"):
        raise PkiError(f"--cn {cn!r}: a site id may not look like a hub's (hub-...), an alert signer's "
                       "(alert-...), a bridge's (bridge-...), a provincial hub's (province-...) "
                       "or the broker's name")
    if role is Role.BRIDGE:
        try:
            city_of_bridge(cn)
        except PkiError:
            raise PkiError(f"--cn {cn!r}: a bridge's CN is 'bridge-<city>', e.g. bridge-suwon") from None
    if role is Role.PROVINCE and not _PROVINCE_RE.match(cn):
        raise PkiError(f"--cn {cn!r}: a provincial hub's CN is 'province-<name>', e.g. province-gyeonggi")
    if role is Role.ALERT and not _ALERT_RE.match(cn):
        raise PkiError(f"--cn {cn!r}: an alert-signing CN is 'alert-<hub>', e.g. alert-hub-suwon")
    if role is Role.HUB and not _HUB_RE.match(cn):
        raise PkiError(f"--cn {cn!r}: a hub's CN is 'hub-<name>' with a-z, 0-9 and '-'")
    if not _CN_RE.match(cn):
        raise PkiError(f"--cn {cn!r}: use 2-63 of a-z, 0-9, '.' and '-'")


def bridge_cn(city: str) -> str:
    """The CN of the identity city ``city``'s broker bridges to the province with."""
    try:
        return BRIDGE_PREFIX + check_city_id(city)
    except WireError as exc:
        raise PkiError(f"--city {city!r}: {exc}") from exc


def city_of_bridge(cn: str) -> str:
    """The city a bridge identity speaks for: its CN without ``bridge-``."""
    if not cn.startswith(BRIDGE_PREFIX):
        raise PkiError(f"{cn!r} is not a bridge identity (bridge-<city>)")
    try:
        return check_city_id(cn[len(BRIDGE_PREFIX):])
    except WireError as exc:
        raise PkiError(f"{cn!r}: {exc}") from exc


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)
