"""Commands are signed over a canonical encoding; any change to any field breaks the signature."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import messages as m
from shared.errors import SigningError
from shared.signing import canonical_bytes, sign_command, verify_command
from tests.shared import strategies as s

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
FIELDS = [f for f in m.Command.__struct_fields__ if f not in ("sig",)]


def _changed(value: Any, data: st.DataObject) -> Any:
    """A value of the same type as ``value`` that differs from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, m.Action):
        return data.draw(st.sampled_from([a for a in m.Action if a is not value]))
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0 if value < 1e9 else value / 2 - 1
    if isinstance(value, str):
        return value + data.draw(st.text(min_size=1, max_size=3))
    if isinstance(value, list):
        return [*value, data.draw(s.names)]
    if isinstance(value, dict):
        return {**value, "+" + data.draw(s.names): data.draw(s.scalars)}
    raise AssertionError(f"no mutation for {type(value)}")


@settings(max_examples=300)
@given(cmd=s.commands, field=st.sampled_from(FIELDS), data=st.data())
def test_signature_fails_after_any_change_to_any_field(cmd: m.Command, field: str, data: st.DataObject) -> None:
    """Sign, verify (ok), change one field, verify again: it must fail."""
    signed = sign_command(cmd, KEY)
    verify_command(signed, KEY.public_key())
    tampered = msgspec.structs.replace(signed, **{field: _changed(getattr(signed, field), data)})
    assert tampered != signed
    with pytest.raises(SigningError):
        verify_command(tampered, KEY.public_key())


@given(s.commands)
def test_signed_command_survives_the_wire(cmd: m.Command) -> None:
    """A signed command still verifies after encode/decode (the canonical form is stable)."""
    signed = sign_command(cmd, KEY)
    verify_command(m.decode(m.Command, m.encode(signed)), KEY.public_key())


def _cmd() -> m.Command:
    return m.Command(cmd_id="c-1", site="gg-suwon-up-0031", device="barrier", action=m.Action.BARRIER_CLOSE,
                     issued_by="kim", issued_at=100.0, not_after=160.0, reason="water rising")


def test_wrong_key_is_refused() -> None:
    """A command signed by another key (a forged hub) is refused and the message says so."""
    with pytest.raises(SigningError, match="signed with key"):
        verify_command(sign_command(_cmd(), OTHER), KEY.public_key())


def test_forged_signature_with_right_key_id_is_refused() -> None:
    """Claiming the trusted key id does not help a forger."""
    forged = msgspec.structs.replace(sign_command(_cmd(), OTHER), key_id=sign_command(_cmd(), KEY).key_id)
    with pytest.raises(SigningError, match="does not verify"):
        verify_command(forged, KEY.public_key())


@pytest.mark.parametrize("sig", ["", "not base64!!", base64.b64encode(b"\0" * 64).decode()])
def test_missing_or_garbage_signature_is_refused(sig: str) -> None:
    cmd = msgspec.structs.replace(sign_command(_cmd(), KEY), sig=sig)
    with pytest.raises(SigningError):
        verify_command(cmd, KEY.public_key())


def test_canonical_bytes_exclude_signature_and_sort_keys() -> None:
    """The signed bytes are sorted-key JSON without the sig field."""
    raw = canonical_bytes(sign_command(_cmd(), KEY))
    assert b'"sig"' not in raw
    keys = list(msgspec.json.decode(raw).keys())
    assert keys == sorted(keys)
