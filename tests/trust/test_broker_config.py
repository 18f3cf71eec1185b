"""The generated Mosquitto config and ACL say what DESIGN §3 and the security rules say."""

from __future__ import annotations

from pathlib import Path

import pytest

from trust.broker import BrokerError, write_config
from trust.pki import Pki, Role


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    p = Pki(tmp_path / "pki")
    p.init()
    p.issue("broker", Role.BROKER)
    p.issue("hub-suwon", Role.HUB)
    p.issue("gg-a-01", Role.EDGE)
    p.issue("gg-b-01", Role.EDGE)
    p.issue("kim", Role.OPERATOR)
    return p


def test_conf_is_tls13_mtls_with_crl_and_large_queues(pki: Pki, tmp_path: Path) -> None:
    cfg = write_config(pki.dir, tmp_path / "out", port=18883)
    conf = cfg.conf.read_text().splitlines()
    for line in ["allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true",
                 "tls_version tlsv1.3", f"crlfile {pki.crl.resolve()}", "listener 18883 127.0.0.1"]:
        assert line in conf
    queued = next(int(x.split()[1]) for x in conf if x.startswith("max_queued_messages"))
    assert queued >= 100_000


def test_acl_per_identity(pki: Pki, tmp_path: Path) -> None:
    acl = write_config(pki.dir, tmp_path / "out").acl.read_text()
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in acl.split("\n\n") if b.startswith("user ")}
    assert blocks["user gg-a-01"] == [
        "topic write jk/v1/site/gg-a-01/status",
        "topic write jk/v1/site/gg-a-01/birth",
        "topic write jk/v1/site/gg-a-01/data",
        "topic read jk/v1/site/gg-a-01/cmd",
        "topic read jk/v1/site/gg-a-01/ack",
        "topic read jk/v1/hub/+/status",
    ]
    assert "topic write jk/v1/site/+/cmd" in blocks["user hub-suwon"]
    assert "topic read jk/v1/site/+/data" in blocks["user hub-suwon"]
    assert "user kim" not in blocks  # operators get nothing on the broker
    assert "pattern" not in acl


def test_revoked_identity_leaves_the_acl(pki: Pki, tmp_path: Path) -> None:
    pki.revoke("gg-a-01")
    acl = write_config(pki.dir, tmp_path / "out").acl.read_text()
    assert "gg-a-01" not in acl
    assert "user gg-b-01" in acl


def test_missing_broker_certificate_says_what_to_run(tmp_path: Path) -> None:
    p = Pki(tmp_path / "pki")
    p.init()
    with pytest.raises(BrokerError, match=r"jikimi pki issue .* --role broker"):
        write_config(p.dir, tmp_path / "out")
