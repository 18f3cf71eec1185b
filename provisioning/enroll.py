"""The device side of field enrolment: ``jikimi provision enroll`` and ``renew``.

The private key is made here (0600) and never sent. The hub's CA chain is fetched and checked
against the fingerprint pinned in the one-time token; from then on the hub's certificate is
verified against it. The hub side (tokens, the endpoint) is ``trust/enrolment.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trust.enrolment import EnrolmentError, Token
from trust.pki import PkiError, issued_by_chain, pinned_chain

log = logging.getLogger(__name__)


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
    """The hub's CA chain, trusted only as far as it leads to the root the token pins.

    Bootstrap: this one request cannot verify the server yet; what it returns is trusted only if
    every certificate in it leads to the pinned root (an attacker's CA put in front of the real
    root refuses the whole chain), and only those certificates are trusted from then on.
    """
    bootstrap = ssl.create_default_context()
    bootstrap.check_hostname = False
    bootstrap.verify_mode = ssl.CERT_NONE  # the answer is checked against the pin below
    try:
        async with session.get(f"{token.url}/enroll/ca", ssl=bootstrap) as resp:
            resp.raise_for_status()
            ca_pem = await resp.read()
    except aiohttp.ClientError as exc:
        raise EnrolmentError(f"cannot reach the hub at {token.url}: {exc}") from exc
    return _pinned_pem(ca_pem, token, "presented a CA")


def _pinned_pem(chain_pem: bytes, token: Token, what: str) -> bytes:
    try:
        chain = pinned_chain(chain_pem, token.ca_sha256)
    except PkiError as exc:
        raise EnrolmentError(f"{token.url} {what} that does not match the token's fingerprint ({exc}): "
                             "refusing to talk to it (wrong hub, or someone in between); the token is unspent") from exc
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in reversed(chain))


def _check_issued(body: dict[str, Any], token: Token, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes, bytes]:
    """What the hub sent, checked against the pinned root: (certificate, CA chain, command key)."""
    try:
        ca_pem = _pinned_pem(str(body["ca"]).encode(), token, "sent a CA chain")
        chain = x509.load_pem_x509_certificates(ca_pem)
        cert = x509.load_pem_x509_certificate(str(body["cert"]).encode())
        command_cert = x509.load_pem_x509_certificate(str(body["command_cert"]).encode())
        command_key = str(body["command_key"]).encode()
        command_pub = serialization.load_pem_public_key(command_key)
    except (KeyError, ValueError) as exc:
        raise EnrolmentError(f"the hub's answer is incomplete or damaged: {exc}") from exc
    if not issued_by_chain(cert, chain) or cert.public_key() != key.public_key():
        raise EnrolmentError("the certificate the hub sent is not for this device's key or not from its CA")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != token.site:
        raise EnrolmentError(f"the certificate the hub sent is not for site {token.site}")
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (not issued_by_chain(command_cert, chain)
            or command_cert.public_key().public_bytes(pem, spki) != command_pub.public_bytes(pem, spki)):
        raise EnrolmentError("the command key the hub sent is not certified by its CA: refusing to install it")
    return cert.public_bytes(pem), ca_pem, command_key


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
    cert_pem, chain_pem, command_key = _check_issued(body, token, key)
    _write_file(paths["cert.pem"], cert_pem)
    _write_file(paths["ca.pem"], chain_pem)
    _write_file(paths["hub-command.pub.pem"], command_key)
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
    try:
        renewed = x509.load_pem_x509_certificate(str(body["cert"]).encode())
    except (KeyError, ValueError) as exc:
        raise EnrolmentError(f"the hub's renewal answer is damaged: {exc}") from exc
    if (not issued_by_chain(renewed, x509.load_pem_x509_certificates(ca_path.read_bytes()))
            or renewed.public_key() != new_key.public_key() or renewed.subject != cert.subject):
        raise EnrolmentError("the renewed certificate is not for this device's new key or not from its CA")
    _write_file(directory / "cert.next.pem", renewed.public_bytes(serialization.Encoding.PEM))
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
