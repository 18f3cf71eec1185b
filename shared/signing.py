"""Ed25519 command signing and verification over a canonical encoding.

The canonical encoding of a :class:`shared.messages.Command` is its JSON with every field
but ``sig``, keys sorted, no whitespace (msgspec's deterministic encoder). The hub signs it
with its command key; the edge verifies against the public key installed at provisioning,
never trusting the broker. Any change to any field makes verification fail.

Pure apart from the PEM loaders, which read files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from shared.ed25519 import KeyFormatError, VerifyKey
from shared.errors import ConfigError, SigningError
from shared.messages import Command, to_builtins

if TYPE_CHECKING:  # cryptography is imported where a key is made or loaded: the edge only verifies
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_canonical = msgspec.json.Encoder(order="sorted")


def canonical_bytes(cmd: Command) -> bytes:
    """The bytes that are signed: every field of the command except ``sig``."""
    body = to_builtins(cmd)
    body.pop("sig", None)
    return _canonical.encode(body)


def key_id(public_key: Ed25519PublicKey | VerifyKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    if isinstance(public_key, VerifyKey):
        raw = public_key.raw
    else:
        from cryptography.hazmat.primitives import serialization

        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_command(cmd: Command, private_key: Ed25519PrivateKey) -> Command:
    """Return ``cmd`` with ``key_id`` set and ``sig`` over its canonical encoding."""
    unsigned = msgspec.structs.replace(cmd, key_id=key_id(private_key.public_key()), sig="")
    sig = private_key.sign(canonical_bytes(unsigned))
    return msgspec.structs.replace(unsigned, sig=base64.b64encode(sig).decode("ascii"))


def verify_command(cmd: Command, public_key: Ed25519PublicKey | VerifyKey) -> None:
    """Raise :class:`SigningError` unless ``cmd`` carries a valid signature by ``public_key``."""
    if not cmd.sig:
        raise SigningError(f"command {cmd.cmd_id}: not signed")
    expected = key_id(public_key)
    if cmd.key_id != expected:
        raise SigningError(
            f"command {cmd.cmd_id}: signed with key {cmd.key_id or '(none)'}, "
            f"this edge trusts {expected}"
        )
    try:
        sig = base64.b64decode(cmd.sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"command {cmd.cmd_id}: signature is not base64") from exc
    if isinstance(public_key, VerifyKey):
        if not public_key.verify(sig, canonical_bytes(cmd)):
            raise SigningError(f"command {cmd.cmd_id}: signature does not verify")
        return
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(sig, canonical_bytes(cmd))
    except InvalidSignature as exc:
        raise SigningError(f"command {cmd.cmd_id}: signature does not verify") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the hub's Ed25519 command key (PEM, PKCS#8). Errors name the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "", f"cannot load the command-signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(str(path), "", "the command-signing key is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load the hub's command-verification key (PEM, SubjectPublicKeyInfo). Errors name the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "", f"cannot load the command-verification key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(str(path), "", "the command-verification key is not an Ed25519 key")
    return key


def load_verify_key(path: Path) -> VerifyKey:
    """The edge's form of :func:`load_public_key`: a key that only verifies, without loading
    ``cryptography`` (shared/ed25519.py). Errors name the file."""
    try:
        return VerifyKey.from_pem(path.read_bytes())
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot load the command-verification key: {exc}") from exc
    except KeyFormatError as exc:
        raise ConfigError(str(path), "", f"the command-verification key is not an Ed25519 key: {exc}") from exc
