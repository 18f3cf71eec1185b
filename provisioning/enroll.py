"""Field enrolment: one-time tokens, CSRs signed by the hub, renewal with the current certificate.

The flow (the private key never leaves the device):

1. The admin pre-registers a site on the hub (``jikimi provision register``) and gets a
   one-time token (valid for an hour) that carries the enrolment URL, the SHA-256 of the
   root CA certificate, and a secret. The hub stores only the secret's hash.
2. On the device, ``jikimi provision enroll --token T`` fetches the CA chain, checks it
   against the pinned fingerprint, and from then on verifies the hub's certificate against
   it. It makes an ECDSA P-256 key (0600, never sent), posts a CSR with CN = the site id,
   and receives its certificate, the CA chain, the hub's command-verification key and a
   starter site config.
3. The hub refuses a used, expired or unknown token, and a CSR whose CN is not the
   pre-registered site. A site registered with ``--needs-approval`` waits (HTTP 202) until an
   admin runs ``jikimi provision approve``.
4. After issuing, the hub regenerates the broker ACL and reloads the broker, so the new edge
   may publish at once.
5. Renewal (``jikimi provision renew``) proves possession of the current, unrevoked
   certificate over mutual TLS and gets a new one for the same CN; by default only once two
   thirds of the current certificate's life have passed.

Token states: registered → (approved) → used. A token is usable once, before it expires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.pki import Pki, PkiError, Role, ca_fingerprint
from shared.errors import ProvisioningError
from shared.tls import TlsFiles, server_context

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "jk1."  # noqa: S105 - a format marker, not a secret
TOKEN_TTL_S: Final = 3600.0


class EnrolmentError(ProvisioningError):
    """Enrolment or renewal failed; the message says why and what to do."""


class EnrolmentRefused(EnrolmentError):
    """The hub refused the request (bad token, wrong site, revoked certificate...)."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


# --- token ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    site: str
    url: str
    ca_sha256: str
    secret: str
    expires: float

    def encode(self) -> str:
        fields = {"s": self.site, "u": self.url, "f": self.ca_sha256, "k": self.secret, "e": int(self.expires)}
        body = json.dumps(fields, separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Token:
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise EnrolmentError("this is not a jikimi enrolment token (it should start with 'jk1.')")
        raw = text[len(TOKEN_PREFIX):]
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            return cls(site=str(body["s"]), url=str(body["u"]), ca_sha256=str(body["f"]), secret=str(body["k"]),
                       expires=float(body["e"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnrolmentError("the enrolment token is damaged; copy it again or scan its QR code") from exc

    @property
    def secret_hash(self) -> str:
        return hashlib.sha256(self.secret.encode()).hexdigest()


# --- the hub side -----------------------------------------------------------------------------------


class EnrolmentStore:
    """Registered sites and their tokens (SQLite; this object is its only writer)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS enrolments (site TEXT PRIMARY KEY, secret_hash TEXT NOT NULL,"
            " expires REAL NOT NULL, needs_approval INTEGER NOT NULL, approved_by TEXT, used_at REAL,"
            " registered_by TEXT NOT NULL, registered_at REAL NOT NULL)"
        )

    def register(
        self, site: str, secret_hash: str, expires: float, needs_approval: bool, actor: str, now: float
    ) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO enrolments VALUES (?, ?, ?, ?, NULL, NULL, ?, ?)",
                (site, secret_hash, expires, int(needs_approval), actor, now),
            )

    def get(self, site: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM enrolments WHERE site=?", (site,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def approve(self, site: str, actor: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("UPDATE enrolments SET approved_by=? WHERE site=?", (actor, site)).rowcount == 0:
                raise EnrolmentError(f"site {site!r} is not registered")

    def mark_used(self, site: str, now: float) -> bool:
        """Mark the token used; False if it already was (two requests racing)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("UPDATE enrolments SET used_at=? WHERE site=? AND used_at IS NULL", (now, site))
            return cur.rowcount == 1

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    ca_pem: bytes
    command_key_pem: bytes
    config_toml: str


class EnrolmentService:
    """The hub's enrolment logic. ``on_issued(cn)`` refreshes the broker ACL (and reloads it)."""

    def __init__(self, pki: Pki, store: EnrolmentStore, *, mqtt_host: str, mqtt_port: int,
                 on_issued: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.pki = pki
        self.store = store
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.on_issued = on_issued
        self.clock = clock

    def register(self, site: str, url: str, *, actor: str, needs_approval: bool = False,
                 ttl_s: float = TOKEN_TTL_S) -> Token:
        try:
            from provisioning.pki import check_cn

            check_cn(site, Role.EDGE)
        except PkiError as exc:
            raise EnrolmentError(str(exc).replace("--cn", "--site")) from exc
        now = self.clock()
        token = Token(site=site, url=url.rstrip("/"), ca_sha256=self.pki.root_fingerprint(),
                      secret=secrets.token_urlsafe(24), expires=now + ttl_s)
        self.store.register(site, token.secret_hash, token.expires, needs_approval, actor, now)
        return token

    def enroll(self, token_text: str, csr_pem: bytes) -> Issued | None:
        """Issue for a valid token and CSR; None while the site waits for approval."""
        token = Token.decode(token_text)
        row = self.store.get(token.site)
        now = self.clock()
        if row is None or not secrets.compare_digest(row["secret_hash"], token.secret_hash):
            raise EnrolmentRefused("unknown enrolment token: ask the admin for a new one")
        if row["used_at"] is not None:
            raise EnrolmentRefused("this enrolment token was used already: ask the admin for a new one")
        if now > row["expires"]:
            raise EnrolmentRefused("this enrolment token has expired (they last an hour): ask the admin for a new one")
        if row["needs_approval"] and not row["approved_by"]:
            return None
        try:
            cert = self.pki.sign_csr(csr_pem, Role.EDGE, expected_cn=token.site)
        except PkiError as exc:
            raise EnrolmentRefused(f"certificate request refused: {exc}", status=400) from exc
        if not self.store.mark_used(token.site, now):
            raise EnrolmentRefused("this enrolment token was used already: ask the admin for a new one")
        self.on_issued(token.site)
        log.info("enrol.issued", extra={"site": token.site})
        return Issued(cert, self.pki.ca_chain.read_bytes(), self.pki.command_pub.read_bytes(),
                      starter_config(token.site, self.mqtt_host, self.mqtt_port))

    def renew(self, peer_cn: str, csr_pem: bytes) -> bytes:
        if peer_cn not in self.pki.active(Role.EDGE):
            raise EnrolmentRefused(f"{peer_cn} has no valid certificate here")
        try:
            return self.pki.sign_csr(csr_pem, Role.EDGE, expected_cn=peer_cn)
        except PkiError as exc:
            raise EnrolmentRefused(f"certificate request refused: {exc}", status=400) from exc


def starter_config(site: str, host: str, port: int) -> str:
    return f'''# Starter site config from enrolment. Add this site's devices, then:
#   jikimi edge check --config site.toml
[site]
id = "{site}"
state_dir = "/var/lib/jikimi/{site}"

[hub]
host = "{host}"
port = {port}
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
command_key = "hub-command.pub.pem"

[policy]
closing_depth_cm = 15.0

# [devices.barrier]
# profile = "underpass-jk-up300.toml"
# transport = "tcp://192.0.2.10:502"
'''


def enrolment_app(service: EnrolmentService) -> web.Application:
    """``GET /enroll/ca``, ``POST /enroll`` and ``POST /enroll/renew`` (mutual TLS)."""
    routes = web.RouteTableDef()

    @routes.get("/enroll/ca")
    async def ca(_: web.Request) -> web.Response:
        return web.Response(body=service.pki.ca_chain.read_bytes(), content_type="application/x-pem-file")

    @routes.post("/enroll")
    async def enroll(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            token, csr = str(body["token"]), str(body["csr"]).encode()
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON with 'token' and 'csr'"}, status=400)
        try:
            issued = service.enroll(token, csr)
        except EnrolmentRefused as exc:
            log.warning("enrol.refused", extra={"reason": str(exc)})
            return web.json_response({"error": str(exc)}, status=exc.status)
        except EnrolmentError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if issued is None:
            return web.json_response({"status": "pending", "detail": "waiting for an admin's approval"}, status=202)
        return web.json_response({"cert": issued.cert_pem.decode(), "ca": issued.ca_pem.decode(),
                                  "command_key": issued.command_key_pem.decode(), "config": issued.config_toml})

    @routes.post("/enroll/renew")
    async def renew(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = _peer_cn(peer)
        if cn is None:
            return web.json_response({"error": "renewal needs the current client certificate"}, status=401)
        try:
            body = await request.json()
            cert = service.renew(cn, str(body["csr"]).encode())
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON with 'csr'"}, status=400)
        except EnrolmentRefused as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response({"cert": cert.decode()})

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes(routes)
    return app


def _peer_cn(peer: Any) -> str | None:
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@contextlib.asynccontextmanager
async def serve_enrolment(service: EnrolmentService, tls: TlsFiles, host: str = "127.0.0.1",
                          port: int = 0) -> AsyncIterator[str]:
    """Run the enrolment endpoint over HTTPS (client certificates optional, for renewal)."""
    ctx = server_context(tls, require_client_cert=False, crl=service.pki.crl)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(enrolment_app(service))
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"https://localhost:{bound}"
    finally:
        await runner.cleanup()


# --- the device side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolPlan:
    writes: list[str]


def _pinned_context(ca_pem: bytes, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _fetch_pinned_ca(session: aiohttp.ClientSession, token: Token) -> bytes:
    # Bootstrap: this one request cannot verify the server yet; what it returns is trusted
    # only if its root matches the fingerprint the token carries.
    bootstrap = ssl.create_default_context()
    bootstrap.check_hostname = False
    bootstrap.verify_mode = ssl.CERT_NONE  # the answer is checked against the pin below
    try:
        async with session.get(f"{token.url}/enroll/ca", ssl=bootstrap) as resp:
            resp.raise_for_status()
            ca_pem = await resp.read()
    except aiohttp.ClientError as exc:
        raise EnrolmentError(f"cannot reach the hub at {token.url}: {exc}") from exc
    try:
        pin = ca_fingerprint(ca_pem)
    except ValueError as exc:
        raise EnrolmentError(f"{token.url} did not return a CA certificate") from exc
    if not secrets.compare_digest(pin, token.ca_sha256):
        raise EnrolmentError(f"{token.url} presented a CA that does not match the token's fingerprint: "
                             "refusing to talk to it (wrong hub, or someone in between)")
    return ca_pem


async def enroll_device(token_text: str, out: Path, *, wait_s: float = 0.0, dry_run: bool = False,
                        poll_s: float = 5.0) -> EnrolPlan:
    """Enrol this device: key → CSR → certificate; write everything under ``out``."""
    token = Token.decode(token_text)
    if time.time() > token.expires:
        raise EnrolmentError("this enrolment token has expired (they last an hour): ask the admin for a new one")
    paths = {name: out / name for name in ("key.pem", "cert.pem", "ca.pem", "hub-command.pub.pem", "site.toml")}
    plan = EnrolPlan([f"{paths['key.pem']} (0600, made here, never sent)"] +
                     [str(p) for n, p in paths.items() if n != "key.pem"])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ca_pem = await _fetch_pinned_ca(session, token)
        if dry_run:
            return plan
        if paths["cert.pem"].exists():
            raise EnrolmentError(f"{paths['cert.pem']} exists: this device is enrolled already "
                                 "(use 'jikimi provision renew')")
        out.mkdir(parents=True, exist_ok=True)
        key = _load_or_make_key(paths["key.pem"])
        csr = _csr(key, token.site)
        ctx = _pinned_context(ca_pem)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                async with session.post(f"{token.url}/enroll", json={"token": token_text, "csr": csr.decode()},
                                        ssl=ctx) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, ValueError) as exc:
                raise EnrolmentError(f"enrolment request to {token.url} failed: {exc}") from exc
            if status == 202 and time.monotonic() < deadline:
                await asyncio.sleep(poll_s)
                continue
            if status == 202:
                raise EnrolmentError("the hub has not approved this site yet: ask the admin to run "
                                     f"'jikimi provision approve --site {token.site}', then run enroll again")
            if status != 200:
                raise EnrolmentError(f"the hub refused: {body.get('error', status)}")
            break
    _write_file(paths["cert.pem"], body["cert"].encode())
    _write_file(paths["ca.pem"], body["ca"].encode())
    _write_file(paths["hub-command.pub.pem"], body["command_key"].encode())
    if not paths["site.toml"].exists():
        _write_file(paths["site.toml"], body["config"].encode())
    return plan


async def renew_device(directory: Path, url: str, *, force: bool = False, dry_run: bool = False,
                       now: dt.datetime | None = None) -> bool:
    """Renew ``directory/cert.pem`` once two thirds of its life have passed. True if renewed."""
    cert_path, key_path, ca_path = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EnrolmentError(f"{cert_path}: cannot read the current certificate: {exc}") from exc
    now = now or dt.datetime.now(dt.UTC)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    due = cert.not_valid_before_utc + life * 2 / 3
    if now < due and not force:
        return False
    if dry_run:
        return True
    cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    new_key_path = directory / "key.next.pem"
    new_key = _load_or_make_key(new_key_path)
    csr = _csr(new_key, cn)
    ctx = _pinned_context(ca_path.read_bytes(), cert_path, key_path)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            async with session.post(f"{url.rstrip('/')}/enroll/renew", json={"csr": csr.decode()}, ssl=ctx) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise EnrolmentError(f"the hub refused the renewal: {body.get('error', resp.status)}")
        except aiohttp.ClientError as exc:
            raise EnrolmentError(f"renewal request to {url} failed: {exc}") from exc
    _write_file(directory / "cert.next.pem", body["cert"].encode())
    os.replace(new_key_path, key_path)
    os.replace(directory / "cert.next.pem", cert_path)
    return True


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EnrolmentError(f"{path}: not an EC key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


def _csr(key: ec.EllipticCurvePrivateKey, cn: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def hub_url_ok(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise EnrolmentError(f"--url {url!r}: the enrolment URL must be https://HOST:PORT")
    return url
