"""Ed25519 signature verification with the OpenSSL that Python's ``ssl`` module already loaded.

The edge verifies the hub's commands and nothing else with Ed25519. ``cryptography`` brings a
second OpenSSL (its Rust extension, ~6.5 MB of RSS) into a process that already maps the
system's libcrypto for TLS; this module calls that libcrypto's EVP interface through ctypes
instead (``EVP_DigestVerify``, OpenSSL ≥ 1.1.1). Where those symbols are not reachable (an
``ssl`` built against another library), :class:`VerifyKey` falls back to ``cryptography``, so
verification never silently stops working; :data:`BACKEND` says which one is in use.

Only public data passes through here (the key, the message, the signature), so a
verification's timing reveals nothing secret.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import functools
from typing import Final

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
# SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 },
# BIT STRING (0 unused bits) { 32 key bytes } }; everything but the key is fixed.
SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_NID_ED25519: Final = 1087
_PEM_BEGIN: Final = b"-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = b"-----END PUBLIC KEY-----"


class KeyFormatError(ValueError):
    """The bytes are not an Ed25519 public key."""


@functools.cache
def _libcrypto() -> ctypes.CDLL | None:
    """The libcrypto of the ``ssl`` module (its symbols are reachable through ``_ssl``'s handle)."""
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.EVP_PKEY_new_raw_public_key.restype = ctypes.c_void_p
        lib.EVP_PKEY_new_raw_public_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.EVP_PKEY_free.restype = None
        lib.EVP_PKEY_free.argtypes = [ctypes.c_void_p]
        lib.EVP_MD_CTX_new.restype = ctypes.c_void_p
        lib.EVP_MD_CTX_new.argtypes = []
        lib.EVP_MD_CTX_free.restype = None
        lib.EVP_MD_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_DigestVerifyInit.restype = ctypes.c_int
        lib.EVP_DigestVerifyInit.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_void_p]
        lib.EVP_DigestVerify.restype = ctypes.c_int
        lib.EVP_DigestVerify.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                         ctypes.c_size_t]
    except (ImportError, OSError, AttributeError):
        return None
    return lib


def backend() -> str:
    """``openssl`` (the ssl module's libcrypto) or ``cryptography`` (the fallback)."""
    return "openssl" if _libcrypto() is not None else "cryptography"


def _verify_openssl(lib: ctypes.CDLL, key: bytes, signature: bytes, message: bytes) -> bool:
    pkey = lib.EVP_PKEY_new_raw_public_key(_NID_ED25519, None, key, len(key))
    if not pkey:
        return False
    ctx = lib.EVP_MD_CTX_new()
    try:
        if not ctx or lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
            return False
        # 1: valid; 0: invalid; < 0: an error, which is no proof either
        return bool(lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message)) == 1)
    finally:
        if ctx:
            lib.EVP_MD_CTX_free(ctx)
        lib.EVP_PKEY_free(pkey)


def _verify_cryptography(key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class VerifyKey:
    """An Ed25519 public key that can only verify: its 32 raw bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise KeyFormatError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
        self.raw = bytes(raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True only for a valid signature of ``message`` by this key."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        lib = _libcrypto()
        if lib is None:
            return _verify_cryptography(self.raw, signature, message)
        return _verify_openssl(lib, self.raw, signature, message)

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyKey:
        """Read one PEM ``PUBLIC KEY`` block holding an Ed25519 SubjectPublicKeyInfo."""
        text = pem.strip()
        if not text.startswith(_PEM_BEGIN) or not text.endswith(_PEM_END):
            raise KeyFormatError("not a PEM public key (BEGIN/END PUBLIC KEY)")
        body = b"".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyFormatError("the PEM body is not base64") from exc
        if len(der) != len(SPKI_PREFIX) + KEY_BYTES or not der.startswith(SPKI_PREFIX):
            raise KeyFormatError("not an Ed25519 key (SubjectPublicKeyInfo with OID 1.3.101.112)")
        return cls(der[len(SPKI_PREFIX):])
