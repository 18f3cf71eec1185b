"""The generated systemd units pass systemd-analyze and carry the hardening the issue asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.units import all_units, default_exec, write_units
from shared.cli import main


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing; 'make test' installs Debian's systemd package")
    return found


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("units")
    write_units(out, all_units(default_exec()))
    # instances of the templates, as systemd would start them
    for template, instance in [("jikimi-edge@.service", "jikimi-edge@gg-a-01.service"),
                               ("jikimi-renew@.service", "jikimi-renew@gg-a-01.service"),
                               ("jikimi-renew@.timer", "jikimi-renew@gg-a-01.timer")]:
        (out / instance).symlink_to(out / template)
    return out


@pytest.mark.parametrize("name", ["jikimi-edge@gg-a-01.service", "jikimi-renew@gg-a-01.service",
                                  "jikimi-renew@gg-a-01.timer", "jikimi-hub.service", "jikimi-broker.service",
                                  "jikimi-broker-acl.path", "jikimi-broker-acl.service"])
def test_unit_passes_systemd_analyze_verify(units: Path, name: str) -> None:
    """No errors and no warnings (verify exits 0 even on unknown keys, so stderr must be empty)."""
    out = subprocess.run([_analyze(), "verify", "--man=no", str(units / name)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == ""


@pytest.mark.parametrize("name", ["jikimi-edge@gg-a-01.service", "jikimi-hub.service", "jikimi-broker.service"])
def test_services_are_exposed_little(units: Path, name: str) -> None:
    """systemd's own exposure score stays in its 'OK' band (below 3.0 of 10)."""
    out = subprocess.run([_analyze(), "security", "--offline=true", str(units / name)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m[1]) < 3.0


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_edge_unit_hardening(units: Path) -> None:
    s = _settings((units / "jikimi-edge@.service").read_text())
    expected = {
        "Type": ["notify"], "Restart": ["always"], "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"],
        "PrivateTmp": ["yes"], "ProtectHome": ["yes"], "SupplementaryGroups": ["dialout"],
        "DynamicUser": ["yes"], "User": ["jikimi-%i"], "StateDirectory": ["jikimi/%i"], "CapabilityBoundingSet": [""],
        "LoadCredential": ["key.pem:/etc/jikimi/%i/key.pem"], "TemporaryFileSystem": ["/etc/jikimi:ro"],
        "BindReadOnlyPaths": ["/etc/jikimi/%i"],
    }
    for key, value in expected.items():
        assert s.get(key) == value, key
    assert int(s["WatchdogSec"][0]) > 0
    assert s["ExecStart"][0].endswith("edge run --config /etc/jikimi/%i/site.toml")


def test_units_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "units", "--out", str(tmp_path / "u"), "--dry-run"]) == 0
    assert not (tmp_path / "u").exists()
    assert "would write" in capsys.readouterr().out


def test_each_site_is_its_own_user_and_sees_only_its_own_folder(units: Path) -> None:
    """Two instances of the edge unit run as two different users; the renewal of one site can
    write only that site's folder (the rest of /etc/jikimi is an empty tmpfs in its namespace)
    and skips itself until renewal is due, then restarts that site's agent for the new key."""
    edge = _settings((units / "jikimi-edge@.service").read_text())
    assert edge["User"] == ["jikimi-%i"]
    assert "ReadWritePaths" not in edge  # only its StateDirectory is writable
    renew = _settings((units / "jikimi-renew@.service").read_text())
    assert "User" not in renew
    assert renew["CapabilityBoundingSet"] == [""]
    assert renew["TemporaryFileSystem"] == ["/etc/jikimi:ro"]
    assert renew["BindPaths"] == ["/etc/jikimi/%i"]
    assert renew["ExecCondition"][0].endswith("provision renew --dir /etc/jikimi/%i --check")
    assert renew["ExecStartPost"] == ["+/bin/systemctl try-restart jikimi-edge@%i.service"]


def test_the_broker_follows_the_pki_without_the_hub_touching_it(units: Path) -> None:
    """The hub may write the PKI (to enrol); a root path unit turns an index change into a new
    ACL and a broker reload, so the hub needs no right over the broker's files or process."""
    hub = _settings((units / "jikimi-hub.service").read_text())
    assert "/etc/jikimi/pki" in hub["ReadWritePaths"][0].split()
    path = _settings((units / "jikimi-broker-acl.path").read_text())
    assert path["PathChanged"] == ["/etc/jikimi/pki/index.json"]
    acl = _settings((units / "jikimi-broker-acl.service").read_text())
    assert acl["ExecStart"][0].endswith("broker acl --pki /etc/jikimi/pki --out /etc/jikimi/broker")


def test_renew_check_says_whether_renewal_is_due(tmp_path: Path) -> None:
    """The renew unit's ExecCondition: exit 0 when due, 1 (skip) when not."""
    from trust.pki import Pki, Role

    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("gg-due-01", Role.EDGE)
    site = pki.dir / "gg-due-01"
    assert main(["provision", "renew", "--dir", str(site), "--check"]) == 1
    assert main(["provision", "renew", "--dir", str(site), "--check", "--force"]) == 0


def test_edge_unit_runs_the_agent_with_its_footprint_environment(units: Path) -> None:
    """The unit sets every variable of the agent's environment, the one bench edge measures with."""
    from edge.agent_cli import AGENT_ENV

    s = _settings((units / "jikimi-edge@.service").read_text())
    assert sorted(s["Environment"]) == sorted(f"{k}={v}" for k, v in AGENT_ENV.items())
    assert "MALLOC_ARENA_MAX=2" in s["Environment"]
