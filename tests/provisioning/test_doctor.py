"""``provision doctor`` tells a ready site from a broken one, one line per check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edge.sim.servers import run_simulator
from provisioning.doctor import check_site
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from tests.edge.harness import UNDERPASS, write_config
from trust.broker import RunningBroker, free_port
from trust.pki import Pki, Role


def _yes(_argv: list[str]) -> str | None:
    return "yes"


async def test_ready_site_is_all_ok(broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path) -> None:
    site = test_pki.take_site()
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        checks = await check_site(cfg, run=_yes)
    assert {c.name: c.status for c in checks} == {
        "config": "ok", "clock": "ok", "certificate": "ok", "command key": "ok", "broker": "ok",
        "device barrier": "ok", "disk": "ok",
    }, checks


async def test_broken_site_says_what_is_wrong(broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path) -> None:
    """A foreign certificate, a device that is not there, an unsynchronised clock, renewal due."""
    site = test_pki.take_site()
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
    # the simulator is gone now: nothing listens at its address any more
    foreign = Pki(tmp_path / "foreign")
    foreign.init()
    foreign.issue(site, Role.EDGE)
    text = cfg.read_text().replace(str(test_pki.dir / site / "cert.pem"), str(foreign.cert(site)))
    text = text.replace(str(test_pki.dir / site / "key.pem"), str(foreign.key(site)))
    cfg.write_text(text)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=70)
    checks = {c.name: c for c in await check_site(cfg, now=later, run=lambda _a: "no")}
    assert checks["clock"].status == "fail"
    assert "set-ntp" in checks["clock"].detail
    assert checks["certificate"].status == "warn"
    assert "renew" in checks["certificate"].detail
    assert checks["broker"].status == "fail"
    assert checks["device barrier"].status == "fail"
    assert "cannot connect" in checks["device barrier"].detail


async def test_unreachable_broker(test_pki: PkiFixture, tmp_path: Path, broker: RunningBroker) -> None:
    site = test_pki.take_site()
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        cfg.write_text(cfg.read_text().replace(f"port = {broker.port}", f"port = {free_port()}"))
        checks = {c.name: c for c in await check_site(cfg, run=_yes)}
    assert checks["broker"].status == "fail"
    assert "unreachable" in checks["broker"].detail


async def test_bad_config_is_reported_not_raised(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text("[site]\nid = 3\n")
    checks = await check_site(cfg, run=_yes)
    assert [(c.name, c.status) for c in checks] == [("config", "fail")]
    assert str(cfg) in checks[0].detail
