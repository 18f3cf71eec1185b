"""The edge's Ed25519 verifier (OpenSSL of the ssl module, through ctypes) agrees with cryptography's."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import ed25519
from shared import messages as m
from shared.ed25519 import KeyFormatError, VerifyKey
from shared.errors import ConfigError, SigningError
from shared.signing import key_id, load_verify_key, sign_command, verify_command
from tests.shared import strategies as s

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
NOW = time.time()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture(params=["openssl", "cryptography"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs on the ssl module's OpenSSL and on the fallback."""
    if request.param == "cryptography":
        monkeypatch.setattr(ed25519, "_libcrypto", lambda: None)
    assert ed25519.backend() == request.param
    return str(request.param)


def test_this_python_verifies_with_the_ssl_modules_openssl() -> None:
    """On the machines jikimi ships for, no second OpenSSL is needed (the fallback is for others)."""
    assert ed25519.backend() == "openssl"


@settings(max_examples=200, deadline=None)
@given(message=st.binary(max_size=2048), flip=st.integers(min_value=0, max_value=8 * 64 - 1))
def test_valid_signatures_verify_and_any_flipped_bit_does_not(message: bytes, flip: int) -> None:
    """A signature by the key verifies; the same signature with one bit flipped never does."""
    key = VerifyKey(_raw(KEY))
    sig = KEY.sign(message)
    assert key.verify(sig, message)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert not key.verify(bytes(bad), message)


@pytest.mark.parametrize("case", ["other key", "changed message", "empty", "short", "long", "zeros"])
def test_a_hostile_signature_is_refused(case: str, backend: str) -> None:
    """Another key's signature, a changed message and signatures of any wrong shape are all refused."""
    key = VerifyKey(_raw(KEY))
    message = b"barrier.close gg-suwon-up-0031"
    sig = {"other key": OTHER.sign(message), "changed message": KEY.sign(message + b"!"), "empty": b"",
           "short": KEY.sign(message)[:63], "long": KEY.sign(message) + b"\0", "zeros": bytes(64)}[case]
    assert key.verify(KEY.sign(message), message)
    assert not key.verify(sig, message)


def test_verify_command_takes_a_verify_key_like_a_cryptography_key(backend: str) -> None:
    """Same key id, same acceptance of a signed command, same refusal of a tampered one."""
    cmd = sign_command(m.Command(cmd_id="c1", site="gg-a-01", device="barrier", action=m.Action.BARRIER_CLOSE,
                                 issued_by="op", issued_at=NOW, not_after=NOW + 60, reason="test"), KEY)
    key = VerifyKey.from_pem(_pem(KEY))
    assert key_id(key) == key_id(KEY.public_key())
    verify_command(cmd, key)
    with pytest.raises(SigningError, match="does not verify"):
        verify_command(msgspec.structs.replace(cmd, device="other"), key)
    with pytest.raises(SigningError, match="this edge trusts"):
        verify_command(cmd, VerifyKey.from_pem(_pem(OTHER)))


@settings(max_examples=100, deadline=None)
@given(cmd=s.commands)
def test_any_signed_command_verifies_with_the_edge_key(cmd: m.Command) -> None:
    """Every command the hub can sign is accepted by the edge's verifier."""
    verify_command(sign_command(cmd, KEY), VerifyKey.from_pem(_pem(KEY)))


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("pem", [
    pytest.param(lambda: _ec_pem(), id="an EC key"),
    pytest.param(lambda: KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), id="the private key"),
    pytest.param(lambda: _pem(KEY).replace(b"MCow", b"MCo!"), id="not base64"),
    pytest.param(lambda: _pem(KEY)[:-40] + b"\n-----END PUBLIC KEY-----\n", id="truncated"),
    pytest.param(lambda: b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(
        ed25519.SPKI_PREFIX + _raw(KEY) + b"\0") + b"\n-----END PUBLIC KEY-----\n", id="a byte too many"),
    pytest.param(lambda: b"", id="empty"),
])
def test_a_key_file_that_is_not_an_ed25519_public_key_is_refused_naming_the_file(
        pem: object, tmp_path: Path) -> None:
    """The agent refuses to start on a wrong key file, and says which file."""
    assert callable(pem)
    path = tmp_path / "pub.pem"
    path.write_bytes(pem())
    with pytest.raises(KeyFormatError):
        VerifyKey.from_pem(path.read_bytes())
    with pytest.raises(ConfigError, match=r"pub\.pem"):
        load_verify_key(path)


def test_a_missing_key_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        load_verify_key(tmp_path / "nope.pem")


def test_the_edge_loads_and_verifies_without_importing_cryptography(tmp_path: Path) -> None:
    """A fresh process loading the key and verifying a command never imports cryptography."""
    path = tmp_path / "pub.pem"
    path.write_bytes(_pem(KEY))
    cmd = sign_command(m.Command(cmd_id="c1", site="gg-a-01", device="barrier", action=m.Action.BARRIER_CLOSE,
                                 issued_by="op", issued_at=NOW, not_after=NOW + 60, reason="test"), KEY)
    code = (
        "import sys, msgspec\n"
        "from shared import messages as m\n"
        "from shared.signing import load_verify_key, verify_command\n"
        f"cmd = msgspec.json.decode({msgspec.json.encode(cmd)!r}, type=m.Command)\n"
        f"verify_command(cmd, load_verify_key(__import__('pathlib').Path({str(path)!r})))\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'cryptography'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
