"""`jikimi demo --headless --duration 120 --json FILE` runs the whole system and says it worked."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_headless_demo_closes_barriers_commits_everything_and_gets_every_alert_acknowledged(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--headless", "--duration", "120", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["barrier_closed_locally"] is True
    assert len(figures["barriers_closed_locally"]) == 4  # every underpass of the demo
    # the network forecast ran over the storm, and its alarms name the wet neighbours behind them
    # (a site the storm reaches first may be raised on its own readings, with no neighbour wet yet)
    assert figures["forecast_alarms"] >= 1
    assert any(f["neighbours"] for f in figures["forecasts"])
    assert figures["records_sent"] > 1000
    assert figures["outboxes_drained"] is True  # stopped producing, drained, then counted
    assert figures["records_committed"] == figures["records_sent"]
    assert figures["forwarding_settled"] is True
    assert figures["alerts"] > 0
    assert figures["alerts_acknowledged"] is True
    assert figures["camera_snapshots"] >= 1  # an alarm moved an ONVIF camera and stored its picture
    assert figures["city_centre_received"] == figures["alerts"]
    assert figures["cap_received"] >= figures["city_centre_received"]
    assert figures["cap_signed_verified"] == figures["cap_received"]  # every CAP message verified with the CA
    assert figures["latency_ms"]["crossing_to_closed"] is not None
    assert figures["latency_ms"]["crossing_to_cap_ack"] is not None
    centre = sqlite3.connect(tmp_path / "var" / "demo" / "receivers" / "city-centre.db")
    got = dict(centre.execute("SELECT identifier, msg_type FROM received").fetchall())
    centre.close()
    for site, up in figures["underpasses"].items():  # each crossing's own alert, acknowledged after it
        assert got.get(up["crossing_alert"]) == "Alert", site  # the centre itself holds that alert
        assert up["crossing_to_cap_ack_ms"] is not None, site
        assert 0 < up["crossing_to_alarm_ms"] <= up["crossing_to_cap_ack_ms"], site
    # the storm drains: every underpass and gate falls below its reopening depth within the demo
    assert len(figures["below_reopening_s"]) == 6
    assert all(t is not None and t < 120 for t in figures["below_reopening_s"].values()), figures["below_reopening_s"]
    assert any("barrier closed" in line["what"] for line in figures["timeline"])
    assert (tmp_path / "var" / "demo" / "credentials.txt").is_file()  # fresh passwords, no defaults


def test_the_shipped_storm_floods_every_underpass_and_gate_and_drains_below_their_reopening_depth() -> None:
    """The demo's water (the creek's measured rise × each site's scale) crosses each closing depth
    and ends below each reopening depth, so a reopen can be practised before the demo ends."""
    from lab import demo

    stage, rain = demo.storm_series()
    assert [t for t, _ in stage] == [i * 300.0 for i in range(len(stage))]  # every 5 minutes, no gap
    assert stage[-1][0] == demo.STORM_S - 300.0
    assert len(rain) == len(stage)
    for spec in demo.SITES:
        d = demo._drains(spec)
        if d is None:
            continue
        water = [v * spec.scale for _t, v in stage]
        assert max(water) >= d.closing_cm, spec.site
        assert water[-1] < d.reopening_cm, spec.site
