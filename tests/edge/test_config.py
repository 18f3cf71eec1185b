"""Site config errors name the file and the key, and the agent refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_site_config
from shared.errors import ConfigError
from tests.conftest import PkiFixture

GOOD = """
[site]
id = "gg-suwon-up-0031"
state_dir = "state"

[hub]
host = "localhost"
port = 8883
ca = "{pki}/ca.pem"
cert = "{pki}/{site}/cert.pem"
key = "{pki}/{site}/key.pem"
command_key = "{pki}/command-signing/pub.pem"

[policy]
closing_depth_cm = 15.0

[devices.barrier]
profile = "underpass-jk-up300.toml"
transport = "tcp://127.0.0.1:1502"
"""


@pytest.fixture
def site_cfg(tmp_path: Path, test_pki: PkiFixture) -> tuple[Path, str]:
    site = test_pki.edges[0]
    return tmp_path / "site.toml", GOOD.replace("{pki}", str(test_pki.dir)).replace("{site}", site)


def test_good_config_loads(site_cfg: tuple[Path, str]) -> None:
    path, text = site_cfg
    path.write_text(text)
    cfg = load_site_config(path)
    assert cfg.devices[0].profile.model == "JK-UP300"
    assert cfg.state_dir == path.parent / "state"


def test_a_slope_section_sets_the_detector(site_cfg: tuple[Path, str]) -> None:
    path, text = site_cfg
    path.write_text(text.replace("[policy]", "[slope]\nnoise_mm = 0.2\ndownslope_sign = 1\n"
                                              "sample_every_s = 3600\n[policy]"))
    slope = load_site_config(path).slope
    assert (slope.noise_mm, slope.downslope_sign, slope.sample_every_s) == (0.2, 1.0, 3600.0)


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (
            ("closing_depth_cm = 15.0", "closing_depth_cm = 15.0\nclosing_dept_cm = 10"),
            "policy.closing_dept_cm",
            "unknown key",
        ),
        (("closing_depth_cm = 15.0", 'closing_depth_cm = "deep"'), "policy.closing_depth_cm", "must be a number"),
        (("closing_depth_cm = 15.0", "closing_depth_cm = -1"), "policy.closing_depth_cm", "> 0"),
        (('id = "gg-suwon-up-0031"', 'id = "GG/BAD"'), "site.id", "match"),
        (('host = "localhost"\n', ""), "hub.host", "missing"),
        (('transport = "tcp://127.0.0.1:1502"', 'transport = "modbus://x"'), "devices.barrier.transport", "tcp://"),
        (
            ('transport = "tcp://127.0.0.1:1502"', 'transport = "rtu:///dev/ttyUSB0"'),
            "devices.barrier.transport",
            "speaks modbus_tcp",
        ),
        (
            ('profile = "underpass-jk-up300.toml"', 'profile = "nope.toml"'),
            "devices.barrier.profile",
            "no such profile",
        ),
        (("closing_depth_cm = 15.0", "closing_depth_cm = 4.0"), "policy.reopening_depth_cm", "below"),
        (('command_key = "', 'command_key = "/nonexistent'), "hub.command_key", "no such file"),
        (("[policy]", "[slope]\ndownslope_sign = 0.5\n[policy]"), "slope.downslope_sign", "1 or -1"),
        (("[policy]", "[slope]\nnoise_mm = -0.5\n[policy]"), "slope.noise_mm", "> 0"),
        (("[policy]", "[slope]\nvelocity_window_days = 0.5\n[policy]"), "slope.velocity_window_days",
         "fewer than 3 samples"),
        (("[policy]", "[slope]\nwindow_days = 2\n[policy]"), "slope.window_days", "unknown key"),
        (("[policy]", "[slope]\nsample_every_s = 1\n[policy]"), "slope.sample_every_s", "more than 2000 samples"),
    ],
    ids=[
        "unknown-key",
        "bad-type",
        "negative",
        "bad-site",
        "missing",
        "bad-transport",
        "wrong-transport",
        "missing-profile",
        "reopen-above-close",
        "missing-file",
        "slope-sign",
        "slope-noise",
        "slope-window-too-short",
        "slope-unknown-key",
        "slope-window-too-many-samples",
    ],
)
def test_errors_name_file_and_key(site_cfg: tuple[Path, str], edit: tuple[str, str], key: str, problem: str) -> None:
    path, text = site_cfg
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_agent_refuses_to_start_with_one_line(site_cfg: tuple[Path, str]) -> None:
    path, text = site_cfg
    path.write_text(text.replace("closing_depth_cm = 15.0", "closing_dept_cm = 15.0"))
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"jikimi: {path}: policy.closing_dept_cm: unknown key"
