"""``jikimi edge template``: a commented site config per device kind that the real edge config
loader accepts once the device's address is filled in, and refuses (naming the key) until then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.cli import render_template, site_templates_dir
from edge.config import PolicySection, load_site_config
from shared.cli import main
from shared.errors import ConfigError
from shared.profiles import Kind
from tests.conftest import PkiFixture

ADDRESS = {"tcp": "tcp://192.0.2.10:502", "rtu": "rtu:///dev/ttyUSB0", "serial": "serial:///dev/ttyUSB1"}
DEVICE = {Kind.UNDERPASS: "barrier", Kind.RIVER_GATE: "gate", Kind.FLOOD_ALARM: "alarm",
          Kind.DISPLACEMENT: "meter", Kind.RAIN_GAUGE: "gauge"}
RIVER = PolicySection(closing_depth_cm=100.0, reopening_depth_cm=50.0)
"""The only policy values a template sets away from the agent's defaults: a river is not an underpass."""


def enrolled_folder(folder: Path, pki: PkiFixture, site: str) -> Path:
    """A folder as enrolment leaves it: the CA chain, the site's certificate and key, the hub's command key."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(pki.dir / "ca.pem", folder / "ca.pem")
    shutil.copy(pki.dir / site / "cert.pem", folder / "cert.pem")
    shutil.copy(pki.dir / site / "key.pem", folder / "key.pem")
    shutil.copy(pki.dir / "command-signing" / "pub.pem", folder / "hub-command.pub.pem")
    return folder


def _scheme(kind: Kind) -> str:
    text = render_template(kind)
    line = next(ln for ln in text.splitlines() if ln.startswith("transport = "))
    return line.split('"')[1].split("://")[0]


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_loads_once_its_address_is_filled_in(kind: Kind, test_pki: PkiFixture, tmp_path: Path) -> None:
    """Each kind's template, with only the device address given, loads with the real loader:
    a device of that kind, the agent's default policy (a river gate: its river depths), a river
    gate closing on its own water level."""
    site = test_pki.take_site()
    folder = enrolled_folder(tmp_path / site, test_pki, site)
    out = folder / "site.toml"
    assert main(["edge", "template", "--kind", kind.value, "--site", site, "--hub", "hub.suwon.example:8884",
                 "--transport", ADDRESS[_scheme(kind)], "--out", str(out)]) == 0
    cfg = load_site_config(out)
    assert cfg.site.id == site
    assert cfg.state_dir == Path(f"/var/lib/jikimi/{site}")
    assert (cfg.hub.host, cfg.hub.port) == ("hub.suwon.example", 8884)
    (device,) = cfg.devices
    assert (device.name, device.profile.kind) == (DEVICE[kind], kind)
    expected = RIVER if kind is Kind.RIVER_GATE else PolicySection()
    assert cfg.policy == expected
    if kind is Kind.RIVER_GATE:
        assert device.depth_source == ("gate", "water_level_cm")


@pytest.mark.parametrize("kind", list(Kind))
def test_unfilled_template_is_refused_at_the_address(kind: Kind, test_pki: PkiFixture, tmp_path: Path) -> None:
    """A template whose address was never filled in does not load: the error names the key to fill."""
    site = test_pki.take_site()
    folder = enrolled_folder(tmp_path / site, test_pki, site)
    (folder / "site.toml").write_text(render_template(kind, site=site))
    with pytest.raises(ConfigError, match=rf"devices\.{DEVICE[kind]}\.transport"):
        load_site_config(folder / "site.toml")


def test_a_template_per_kind_and_nothing_else() -> None:
    """The shipped templates are exactly the profile kinds (a new kind needs its template)."""
    assert {p.stem for p in site_templates_dir().glob("*.toml")} == {k.value for k in Kind}


def test_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --out the template goes to standard output, untouched but for what was given."""
    assert main(["edge", "template", "--kind", "underpass"]) == 0
    assert capsys.readouterr().out == (site_templates_dir() / "underpass.toml").read_text()


def test_existing_file_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out never overwrites a file without --force; with it, it does."""
    out = tmp_path / "site.toml"
    out.write_text("mine")
    assert main(["edge", "template", "--kind", "rain_gauge", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["edge", "template", "--kind", "rain_gauge", "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith("# Site config template")


@pytest.mark.parametrize("argv", [
    ["--site", 'gg-x"\n[hub]\nhost = "evil'],
    ["--site", "GG-Upper"],
    ["--hub", "hub.example"],
    ["--hub", 'hub"x:8883'],
    ["--hub", "hub.example:99999"],
    ["--transport", 'tcp://1.2.3.4:502"\nunit_id = 9'],
    ["--transport", "modbus://1.2.3.4:502"],
])
def test_bad_values_are_refused_and_nothing_written(argv: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A value that would break or inject TOML is refused with a one-line error; nothing is written."""
    out = tmp_path / "site.toml"
    assert main(["edge", "template", "--kind", "underpass", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jikimi: ")
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_kind_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--kind takes only the profile kinds."""
    with pytest.raises(SystemExit) as exc:
        main(["edge", "template", "--kind", "dam"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
