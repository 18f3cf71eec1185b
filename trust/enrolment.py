"""The hub side of field enrolment: one-time tokens, CSRs signed by the hub, renewal.

The flow (the private key never leaves the device; the device side is ``provisioning/enroll.py``):

1. The admin pre-registers a site on the hub (``jikimi provision register``) with its place
   (WGS84 position, and its area when the registry has areas; trust/places.py) and gets a
   one-time token (valid for an hour) that carries the enrolment URL, the SHA-256 of the
   root CA certificate, and a secret. The hub stores only the secret's hash, and the place
   with the registration: the hub places the site's alerts by it (:func:`registered_places`).
2. The device fetches the CA chain (``GET /enroll/ca``), checks it against the token's
   fingerprint, and posts a CSR with CN = the site id (``POST /enroll``).
3. The hub refuses a used, expired or unknown token, and a CSR whose CN is not the
   pre-registered site. A site registered with ``--needs-approval`` waits (HTTP 202) until an
   admin runs ``jikimi provision approve``.
4. After issuing, the hub regenerates the broker ACL and reloads the broker (``on_issued``),
   so the new edge may publish at once.
5. Renewal (``POST /enroll/renew``) proves possession of the current, unrevoked certificate
   over mutual TLS and gets a new one for the same CN.

Token states: registered → (approved) → used. A token is usable once, before it expires.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from shared.errors import TrustError
from shared.tls import TlsFiles, server_context
from trust.pki import Pki, PkiError, Role, check_cn
from trust.places import Place, area_problem, position_problem

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "jk1."  # noqa: S105 - a format marker, not a secret
TOKEN_TTL_S: Final = 3600.0
RENEWALS_PER_DAY: Final = 3
"""A device renews once two thirds of its certificate's life have passed: a few a day is plenty."""


class EnrolmentError(TrustError):
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


# --- the service -----------------------------------------------------------------------------------


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
        self._db.execute("CREATE TABLE IF NOT EXISTS renewals (cn TEXT NOT NULL, ts REAL NOT NULL)")
        have = {str(r[1]) for r in self._db.execute("PRAGMA table_info(enrolments)")}
        for column in _PLACE_COLUMNS:  # a database made before registrations had places
            if column.split()[0] not in have:
                self._db.execute(f"ALTER TABLE enrolments ADD COLUMN {column}")

    def register(
        self, site: str, secret_hash: str, expires: float, needs_approval: bool, actor: str, now: float,
        place: Place | None = None,
    ) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO enrolments (site, secret_hash, expires, needs_approval, approved_by, used_at,"
                " registered_by, registered_at, lat, lon, area) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?)",
                (site, secret_hash, expires, int(needs_approval), actor, now,
                 place.lat if place else None, place.lon if place else None, place.area if place else None),
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

    def take_renewal(self, cn: str, now: float, per_day: int) -> bool:
        """Count one renewal of ``cn`` unless ``per_day`` happened in the last 24 hours."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM renewals WHERE ts < ?", (now - 86400,))
            (n,) = self._db.execute("SELECT count(*) FROM renewals WHERE cn = ?", (cn,)).fetchone()
            if n >= per_day:
                return False
            self._db.execute("INSERT INTO renewals (cn, ts) VALUES (?, ?)", (cn, now))
            return True

    def close(self) -> None:
        self._db.close()


_PLACE_COLUMNS: Final = ("lat REAL", "lon REAL", "area TEXT")


def registered_places(path: Path, site: str | None = None) -> dict[str, Place | None]:
    """Every registered site (or only ``site``) and its place (None: registered before places
    were asked for), read without writing; no database yet: none. Raises :class:`EnrolmentError`
    for a file that is not an enrolment database."""
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise EnrolmentError(f"{path}: cannot read the enrolment database: {exc}") from exc
    try:
        have = {str(r[1]) for r in db.execute("PRAGMA table_info(enrolments)")}
        if not have:
            return {}
        args = (site, site)
        if "lat" not in have:
            return {str(r[0]): None for r in db.execute("SELECT site FROM enrolments WHERE ? IS NULL OR site = ?",
                                                         args)}
        out: dict[str, Place | None] = {}
        for name, lat, lon, area in db.execute(
                "SELECT site, lat, lon, area FROM enrolments WHERE ? IS NULL OR site = ?", args):
            ok = lat is not None and lon is not None and position_problem(lat, lon) is None
            out[str(name)] = Place(float(lat), float(lon), None if area is None else str(area)) if ok else None
        return out
    except sqlite3.Error as exc:
        raise EnrolmentError(f"{path}: cannot read the enrolment database: {exc}") from exc
    finally:
        db.close()


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    ca_pem: bytes
    command_key_pem: bytes
    command_cert_pem: bytes
    config_toml: str


class EnrolmentService:
    """The hub's enrolment logic. ``on_issued(cn)`` refreshes the broker ACL (and reloads it)."""

    def __init__(self, pki: Pki, store: EnrolmentStore, *, mqtt_host: str, mqtt_port: int,
                 on_issued: Callable[[str], None], clock: Callable[[], float] = time.time,
                 ready: Callable[[], str | None] = lambda: None) -> None:
        self.pki = pki
        self.store = store
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.on_issued = on_issued
        self.clock = clock
        self.ready = ready
        """Why the hub could not make a new identity work now (PKI or broker not writable...), or None."""

    def register(self, site: str, url: str, *, actor: str, needs_approval: bool = False,
                 ttl_s: float = TOKEN_TTL_S, place: Place | None = None) -> Token:
        """Register ``site`` at ``place`` (None: no position, and a hub that forwards alerts
        refuses to start until the site is registered again with one)."""
        try:
            check_cn(site, Role.EDGE)
        except PkiError as exc:
            raise EnrolmentError(str(exc).replace("--cn", "--site")) from exc
        if place is not None:
            problem = position_problem(place.lat, place.lon) or (
                area_problem(place.area) if place.area is not None else None)
            if problem is not None:
                raise EnrolmentError(f"{site}: --{problem}")
        now = self.clock()
        token = Token(site=site, url=url.rstrip("/"), ca_sha256=self.pki.root_fingerprint(),
                      secret=secrets.token_urlsafe(24), expires=now + ttl_s)
        self.store.register(site, token.secret_hash, token.expires, needs_approval, actor, now, place)
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
        problem = self.ready()
        if problem is not None:
            log.error("enrol.not_ready", extra={"site": token.site, "problem": problem})
            raise EnrolmentRefused(f"the hub cannot enrol a device now ({problem}); the token is unspent: "
                                   "ask the admin to fix it, then run enroll again", status=503)
        try:
            cert = self.pki.sign_csr(csr_pem, Role.EDGE, expected_cn=token.site)
        except PkiError as exc:
            raise EnrolmentRefused(f"certificate request refused: {exc}", status=400) from exc
        if not self.store.mark_used(token.site, now):
            raise EnrolmentRefused("this enrolment token was used already: ask the admin for a new one")
        self.on_issued(token.site)
        log.info("enrol.issued", extra={"site": token.site})
        return Issued(cert, self.pki.ca_chain.read_bytes(), self.pki.command_pub.read_bytes(),
                      self.pki.command_cert(), starter_config(token.site, self.mqtt_host, self.mqtt_port))

    def renew(self, peer_cn: str, peer_serial: int, csr_pem: bytes) -> bytes:
        """A new certificate for the identity that presented certificate ``peer_serial``.

        Authorised by that very certificate: it must be in the index (read now, so a revocation
        made a second ago counts), not revoked, an edge's, and of ``peer_cn``; revoking a CN
        revokes every certificate of it, so none of them renews. At most
        ``RENEWALS_PER_DAY`` renewals per CN in any 24 hours.
        """
        entry = self.pki.entry(peer_serial)
        if entry is None or entry.cn != peer_cn or entry.role is not Role.EDGE:
            raise EnrolmentRefused(f"{peer_cn}: the presented certificate was not issued here for this site")
        if entry.revoked:
            log.warning("enrol.renewal_revoked", extra={"site": peer_cn, "serial": f"{peer_serial:x}"})
            raise EnrolmentRefused(f"{peer_cn}: the presented certificate is revoked")
        now = self.clock()
        if not self.store.take_renewal(peer_cn, now, RENEWALS_PER_DAY):
            raise EnrolmentRefused(f"{peer_cn}: {RENEWALS_PER_DAY} renewals in 24 hours already; try tomorrow",
                                   status=429)
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
                                  "command_key": issued.command_key_pem.decode(),
                                  "command_cert": issued.command_cert_pem.decode(), "config": issued.config_toml})

    @routes.post("/enroll/renew")
    async def renew(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = _peer_cn(peer)
        if cn is None or peer is None:
            return web.json_response({"error": "renewal needs the current client certificate"}, status=401)
        try:
            body = await request.json()
            cert = service.renew(cn, int(str(peer["serialNumber"]), 16), str(body["csr"]).encode())
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


def hub_url_ok(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise EnrolmentError(f"--url {url!r}: the enrolment URL must be https://HOST:PORT")
    return url
