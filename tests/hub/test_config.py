"""The hub's TOML config: parsed once into frozen types; every error names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load
from shared.cli import main
from shared.errors import ConfigError
from tests.conftest import PkiFixture


def write(tmp_path: Path, pki: PkiFixture, extra: str = "", *, hub_id: str = "hub-test") -> Path:
    (tmp_path / "pki").symlink_to(pki.dir)
    path = tmp_path / "hub.toml"
    path.write_text(f"""
[hub]
id = "{hub_id}"

[broker]
host = "localhost"
port = 8883
ca = "pki/ca.pem"
cert = "pki/hub-test/cert.pem"
key = "pki/hub-test/key.pem"

[commands]
signing_key = "pki/command-signing/key.pem"

[database]
path = "var/hub.db"
{extra}
""")
    return path


def test_a_full_config_loads_with_paths_relative_to_the_file(tmp_path: Path, test_pki: PkiFixture) -> None:
    path = write(tmp_path, test_pki, """
[api]
listen = "127.0.0.1:9443"

[sites]
accept_any = false
[sites.registry.gg-suwon-up-0031]
area = "suwon-gwonseon"
name = "Gwonseon underpass"

[rules.kinds.underpass]
closing_depth_cm = 12.0
reopening_depth_cm = 4.0
[rules.sites.gg-suwon-up-0031]
data_age_limit_s = 30

[retention]
raw_days = 3
""")
    cfg = load(path)
    assert cfg.hub_id == "hub-test"
    assert cfg.db_path == tmp_path / "var" / "hub.db"
    assert cfg.broker.tls.cert == tmp_path / "pki" / "hub-test" / "cert.pem"
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 9443)
    assert cfg.api.tls.cert == cfg.broker.tls.cert
    assert cfg.sites.accepts("gg-suwon-up-0031")
    assert not cfg.sites.accepts("gg-other-01")
    assert cfg.sites.area_of("gg-suwon-up-0031") == "suwon-gwonseon"
    p = cfg.rules.params("gg-suwon-up-0031", "underpass")
    assert (p.closing_depth_cm, p.reopening_depth_cm, p.data_age_limit_s) == (12.0, 4.0, 30.0)
    assert cfg.rules.params("gg-other-01", "underpass").data_age_limit_s == 120.0
    assert cfg.retention.raw_days == 3


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("[ingest]\ngap_grase_s = 1", "ingest.gap_grase_s", "unknown key"),
        ("[surprise]\nx = 1", "surprise", "unknown key"),
        ("[ingest]\ngap_grace_s = \"soon\"", "ingest.gap_grace_s", "must be a number"),
        ("[api]\nlisten = \"8443\"", "api.listen", "HOST:PORT"),
        ("[rules.kinds.toaster]\nclosing_depth_cm = 1", "rules.kinds.toaster", "unknown kind"),
        ("[rules.kinds.underpass]\nclosing_depth = 15", "rules.kinds.underpass.closing_depth",
         "unknown rule parameter"),
        ("[sites.registry.gg-a-01]\nname = \"x\"", "sites.registry.gg-a-01.area", "missing"),
        ("[sites]\naccept_any = false", "sites.accept_any", "no site could report"),
        ("[alarms]\nflood_count = 0", "alarms.flood_count", "between"),
        ("[api]\ntrusted_proxy_header = \"X-Forwarded-For\"", "api.trusted_proxy_header",
         "needs trusted_proxies"),
        ("[api]\ntrusted_proxies = [\"10.0.0.300\"]", "api.trusted_proxies", "not an IP address"),
        ("[api]\ntrusted_proxy_header = \"X Forwarded\"\ntrusted_proxies = [\"10.0.0.1\"]",
         "api.trusted_proxy_header", "does not match"),
        ("[audit]\ncheckpoint_key = \"nowhere.pem\"", "audit.checkpoint_key", "no such file"),
    ],
)
def test_every_error_names_file_and_key(tmp_path: Path, test_pki: PkiFixture, extra: str, key: str,
                                        problem: str) -> None:
    path = write(tmp_path, test_pki, extra)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert problem in err.value.problem


def test_audit_checkpoints_default_beside_the_database_signed_with_the_command_key(
    tmp_path: Path, test_pki: PkiFixture
) -> None:
    cfg = load(write(tmp_path, test_pki))
    assert cfg.audit is not None
    assert cfg.audit.checkpoints == tmp_path / "var" / "hub.db.checkpoints"
    assert cfg.audit.checkpoint_key == cfg.commands.signing_key
    assert cfg.audit.every_s == 300.0
    assert cfg.api.trusted_proxy_header is None  # the peer's address counts unless a proxy is named
    (tmp_path / "off").mkdir()
    off = load(write(tmp_path / "off", test_pki, "[audit]\nenabled = false"))
    assert off.audit is None


def test_a_bad_hub_id_and_a_missing_file_are_named(tmp_path: Path, test_pki: PkiFixture) -> None:
    with pytest.raises(ConfigError, match=r"hub\.id"):
        load(write(tmp_path, test_pki, hub_id="suwon"))
    path = tmp_path / "hub.toml"
    path.write_text(path.read_text().replace("hub-test/key.pem", "nobody/key.pem").replace('"suwon"', '"hub-test"'))
    with pytest.raises(ConfigError, match=r"broker\.key: .*no such file"):
        load(path)


def test_hub_run_refuses_to_start_with_one_line(tmp_path: Path, test_pki: PkiFixture,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, test_pki, "[ingest]\nqueue = 5")
    assert main(["hub", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ingest.queue: unknown key" in err
