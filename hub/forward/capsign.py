"""Signed CAP: an XML-DSig enveloped signature over a rendered CAP message, and its verification.

The hub signs every CAP payload with its alert-signing key (``jikimi pki issue --role alert``,
DESIGN §6), the way NOAA's and WMO's CAP tools do:

- one ``<Signature>`` (XML-DSig namespace) as the last child of ``<alert>``, where the CAP 1.2
  schema's lax wildcard allows it, so the signed message still validates;
- one ``<Reference URI="">`` with the enveloped-signature transform: the whole alert is signed;
- exclusive canonicalisation, SHA-256 digests, ECDSA P-256 with SHA-256 (the PKI's keys; an RSA
  key signs with RSA-SHA256);
- ``KeyInfo/X509Data`` carries the signing certificate (and any intermediates in its file), so a
  receiver verifies with its CA file alone.

Signing is a step with a key, kept out of the pure renderer (hub/forward/cap.py). It happens
once, when the outbox stores a payload (hub/forward/outbox.py rule 2): an ECDSA signature is
randomised, and every attempt must send the same bytes.

:func:`verify` is what a receiver runs: it never raises on a message it can parse, it says
whether the signature verified against the CA file, by whose certificate, or why not.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cryptography.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.exceptions import SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from hub.forward.capread import parse_untrusted
from hub.forward.errors import CapError
from trust.pki import DOCUMENT_SIGNING

DSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
ACCEPTED: Final = frozenset({
    SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.ECDSA_SHA512,
    SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
})
"""Signature methods a receiver accepts: SHA-2 only (SHA-1 signatures are not verified)."""

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _for_documents(cert: x509.Certificate, purpose: x509.ObjectIdentifier) -> bool:
    """Whether ``cert``'s extended key usage allows ``purpose`` (a TLS certificate of an edge or a
    hub from the same CA must not pass for the alert signer)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return purpose in usage


def load_key(path: Path) -> SigningKey:
    """The alert-signing private key (PEM, unencrypted); CapError says why it is unusable."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise CapError(f"{path}: cannot read the alert-signing key: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise CapError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise CapError(f"{path}: the alert-signing key must be ECDSA P-256/P-384 or RSA of 2048 bits or more")


def load_chain(path: Path) -> tuple[x509.Certificate, ...]:
    """The alert-signing certificate, then any intermediates (PEM); CapError says why not."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except OSError as exc:
        raise CapError(f"{path}: cannot read the alert-signing certificate: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CapError(f"{path}: not a PEM certificate: {exc}") from exc
    return certs


class CapSigner:
    """Signs rendered CAP messages with one key, its certificate in the signature's KeyInfo."""

    def __init__(self, key: SigningKey, chain: Sequence[x509.Certificate], *, now: dt.datetime | None = None,
                 purpose: x509.ObjectIdentifier | None = DOCUMENT_SIGNING) -> None:
        if not chain:
            raise CapError("no alert-signing certificate")
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if chain[0].public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
            raise CapError(f"the certificate of {_cn(chain[0])!r} is not for this alert-signing key")
        if purpose is not None and not _for_documents(chain[0], purpose):
            raise CapError(f"the certificate of {_cn(chain[0])!r} is not for signing documents (no extended key "
                           "usage id-kp-documentSigning): issue one with 'jikimi pki issue --role alert'")
        at = now or dt.datetime.now(dt.UTC)
        if not chain[0].not_valid_before_utc <= at <= chain[0].not_valid_after_utc:
            raise CapError(f"the alert-signing certificate of {_cn(chain[0])!r} is valid only from "
                           f"{chain[0].not_valid_before_utc:%Y-%m-%d} to {chain[0].not_valid_after_utc:%Y-%m-%d}")
        self._key = key
        self.chain = tuple(chain)
        self.cn = _cn(chain[0])
        method = SignatureMethod.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) \
            else SignatureMethod.RSA_SHA256
        self._signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm=method,
                                 digest_algorithm=DigestAlgorithm.SHA256,
                                 c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
        self._signer.namespaces = {None: DSIG_NS}  # type: ignore[dict-item]  # <Signature xmlns=...>, as CAP tools write

    @classmethod
    def load(cls, key_file: Path, cert_file: Path) -> CapSigner:
        return cls(load_key(key_file), load_chain(cert_file))

    def __repr__(self) -> str:
        return f"CapSigner(cn={self.cn!r})"

    def sign(self, body: bytes) -> bytes:
        """``body`` (one rendered ``<alert>``) with an enveloped signature appended; CapError if it cannot be."""
        try:
            root = etree.fromstring(body, _parser())
        except etree.XMLSyntaxError as exc:
            raise CapError(f"cannot sign: not well-formed XML: {exc}") from exc
        if root.find(f"{{{DSIG_NS}}}Signature") is not None:
            raise CapError("cannot sign: the message is signed already")
        try:
            signed = self._signer.sign(root, key=self._key, cert=list(self.chain))
        except (SignXMLException, ValueError) as exc:
            raise CapError(f"cannot sign the CAP message: {exc}") from exc
        return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


@dataclass(frozen=True)
class SignatureCheck:
    """What a receiver learnt of a message's signature."""

    verified: bool
    signer: str = ""
    """The CN of the certificate that verified (empty unless ``verified``)."""
    problem: str = ""
    """Why it did not verify (empty when it did)."""


def verify(body: bytes, ca_file: Path, *, at: dt.datetime | None = None,
           purpose: x509.ObjectIdentifier | None = DOCUMENT_SIGNING) -> SignatureCheck:
    """Check ``body``'s enveloped signature against the CAs in ``ca_file`` (at ``at``, default now).

    Verified means: exactly one ``<Signature>`` child of the root, one reference covering the
    whole document, a SHA-2 signature method, a certificate chain in ``X509Data`` that leads to
    a CA of ``ca_file``, a signing certificate whose extended key usage allows ``purpose``
    (document signing: not any TLS identity the CA issued), and the signature and digest match.
    Never raises for a bad message.
    """
    try:
        root = parse_untrusted(body)  # no DTDs or entities before anything else reads it
    except CapError as exc:
        return SignatureCheck(False, problem=str(exc))
    sigs = [c for c in root if c.tag == f"{{{DSIG_NS}}}Signature"]
    if not sigs:
        return SignatureCheck(False, problem="not signed")
    if len(sigs) > 1:
        return SignatureCheck(False, problem=f"{len(sigs)} signatures; one enveloped signature is expected")
    config = SignatureConfiguration(location="./", expect_references=1, signature_methods=ACCEPTED,
                                    verification_time=at)
    try:
        result = XMLVerifier().verify(body, ca_pem_file=str(ca_file), expect_config=config, parser=_parser())
    except (SignXMLException, cryptography.exceptions.InvalidSignature, ValueError, TypeError, KeyError,
            etree.LxmlError, OSError) as exc:
        return SignatureCheck(False, problem=f"{type(exc).__name__}: {exc}"[:300])
    if isinstance(result, list):  # expect_references=1 gives one result; a list means something else
        return SignatureCheck(False, problem="more than one signed reference")
    refs = result.signature_xml.findall(f"{{{DSIG_NS}}}SignedInfo/{{{DSIG_NS}}}Reference")
    if len(refs) != 1 or refs[0].get("URI") != "":
        return SignatureCheck(False, problem="the signature does not cover the whole alert (Reference URI=\"\")")
    signer = _signing_cert(result.signature_xml, result.signature_key)
    if signer is None:
        return SignatureCheck(False, problem="the verifying certificate is not in the signature's X509Data")
    if purpose is not None and not _for_documents(signer, purpose):
        return SignatureCheck(False, problem=f"signed by {_cn(signer)!r}, whose certificate is not for signing "
                                             "documents (no extended key usage id-kp-documentSigning)")
    return SignatureCheck(True, signer=_cn(signer))


def _signing_cert(signature: etree._Element, key_pem: object) -> x509.Certificate | None:
    """The certificate of ``signature``'s X509Data whose public key verified it."""
    if not isinstance(key_pem, bytes):
        return None
    want = serialization.load_pem_public_key(key_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for el in signature.iterfind(f"{{{DSIG_NS}}}KeyInfo/{{{DSIG_NS}}}X509Data/{{{DSIG_NS}}}X509Certificate"):
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split())))
        except ValueError:
            continue
        got = cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        if got == want:
            return cert
    return None

