"""The [forward] config: recipients parsed into frozen types; every error names file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.forward.config import Format, RecipientKind, parse_config
from hub.rules import AlarmPriority
from shared.errors import ConfigError
from tests.conftest import PkiFixture


def signing(pki: PkiFixture, cn: str | None = None) -> dict[str, str]:
    """The [forward] keys naming an alert-signing identity of ``pki`` (its alert identity by default)."""
    cn = cn or pki.alert
    return {"signing_key": str(pki.dir / cn / "key.pem"), "signing_cert": str(pki.dir / cn / "cert.pem")}


def raw(**recipient: Any) -> dict[str, Any]:
    base = {"kind": "city_centre", "format": "cap", "url": "http://127.0.0.1:8480/alerts"}
    return {"sender": "hub-suwon@jikimi.example", "recipients": {"centre": {**base, **recipient}}}


def test_a_full_recipient_is_read(test_pki: PkiFixture, tmp_path: Path) -> None:
    files = test_pki.files(test_pki.hub)
    tls = {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}
    centre_raw = raw(url="https://centre.suwon.example/cap", areas=["suwon-*"], priorities=["critical", "high"],
                     escalate_after_s=120, escalate_to="fire", embed_evidence=True, **tls)["recipients"]["centre"]
    fire_raw = {"kind": "fire_119", "format": "keti", "url": "https://119.example/events", "ca": str(files.ca)}
    cfg = parse_config({"sender": "hub-suwon@jikimi.example", "sender_name_ko": "수원 지킴이",
                        "recipients": {"centre": centre_raw, "fire": fire_raw}, **signing(test_pki)},
                       tmp_path / "hub.toml", hub_id="hub-suwon")
    centre, fire = cfg.recipients
    assert (centre.kind, centre.format, centre.escalate_to, centre.escalate_after_s) == (
        RecipientKind.CITY_CENTRE, Format.CAP, "fire", 120.0)
    assert centre.priorities == frozenset({AlarmPriority.CRITICAL, AlarmPriority.HIGH})
    assert centre.tls is not None
    assert centre.tls.cert == files.cert
    assert fire.tls is not None
    assert fire.tls.cert is None
    assert centre.covers("suwon-gwonseon")
    assert not centre.covers("yongin-giheung")
    assert cfg.utc_offset_min == 540
    assert cfg.sender_name is not None
    assert cfg.signer is not None
    assert cfg.signer.cn == test_pki.alert


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"url": "http://centre.example/cap"}, "url", "loopback"),
        ({"url": "https://centre.example/cap"}, "ca", "CA"),
        ({"kind": "police"}, "kind", "one of"),
        ({"format": "xml"}, "format", "one of"),
        ({"priorities": ["urgent"]}, "priorities", "one of"),
        ({"escalate_to": "nobody"}, "escalate_to", "not a recipient"),
        ({"areas": []}, "areas", "nothing"),
        ({"retries": 3}, "retries", "unknown key"),
        ({"max_attempts": 0}, "max_attempts", "between"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, change: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        parse_config(raw(**change), tmp_path / "hub.toml", hub_id="hub-suwon")
    assert err.value.key == f"forward.recipients.centre.{key}"
    assert err.value.file == str(tmp_path / "hub.toml")


def test_a_sender_with_a_comma_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"forward\.sender"):
        parse_config({"sender": "a,b"}, tmp_path / "hub.toml", hub_id="hub-suwon")


def test_a_cap_recipient_without_a_signing_key_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CAP recipients \\(centre\\) get signed alerts only") as err:
        parse_config(raw(), tmp_path / "hub.toml", hub_id="hub-suwon")
    assert (err.value.file, err.value.key) == (str(tmp_path / "hub.toml"), "forward.signing_key")


def test_recipients_without_cap_need_no_signing_key(tmp_path: Path) -> None:
    cfg = parse_config(raw(format="keti"), tmp_path / "hub.toml", hub_id="hub-suwon")
    assert cfg.signer is None


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"signing_cert": None}, "signing_cert", "go together"),
        ({"signing_key": "nowhere.pem"}, "signing_key", "cannot read"),
        ({"signing_key": "HUB_KEY"}, "signing_cert", "not for this alert-signing key"),
        ({"signing_cert": "CA_FILE"}, "signing_cert", "not for this alert-signing key"),
        ({"signing_key": "CA_FILE"}, "signing_key", "not an unencrypted PEM private key"),
        ({"signing_key": "HUB_KEY", "signing_cert": "HUB_CERT"}, "signing_cert", "not for signing documents"),
    ],
)
def test_signing_key_errors_name_the_file_and_the_key(test_pki: PkiFixture, tmp_path: Path,
                                                      change: dict[str, Any], key: str, problem: str) -> None:
    """A missing, unreadable or mismatched alert-signing key or certificate stops the hub at start-up."""
    files = {"HUB_KEY": str(test_pki.dir / test_pki.hub / "key.pem"), "CA_FILE": str(test_pki.dir / "ca.pem"),
             "HUB_CERT": str(test_pki.dir / test_pki.hub / "cert.pem")}
    keys = signing(test_pki)
    for name, value in change.items():
        if value is None:
            del keys[name]
        else:
            keys[name] = files.get(value, value)
    with pytest.raises(ConfigError, match=problem) as err:
        parse_config({**raw(), **keys}, tmp_path / "hub.toml", hub_id="hub-suwon")
    assert (err.value.file, err.value.key) == (str(tmp_path / "hub.toml"), f"forward.{key}")


def test_the_hub_refuses_to_start_with_a_cap_recipient_and_no_signing_key(test_pki: PkiFixture,
                                                                         tmp_path: Path) -> None:
    """The hub's own config (hub/config.py) stops at the missing key, naming file and key."""
    from hub.config import parse
    from tests.hub.conftest import raw_config

    whole = raw_config(test_pki, 8883, tmp_path / "hub.db", forward=raw())
    assert parse(whole, tmp_path / "hub.toml").forward is not None  # with the test PKI's alert key, it starts
    for key in ("signing_key", "signing_cert"):
        del whole["forward"][key]
    with pytest.raises(ConfigError) as err:
        parse(whole, tmp_path / "hub.toml")
    assert (err.value.file, err.value.key) == (str(tmp_path / "hub.toml"), "forward.signing_key")
