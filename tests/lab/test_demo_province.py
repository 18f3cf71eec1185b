"""`jikimi demo --province --headless --duration 180 --json FILE` runs three cities and the province
and says nothing was lost on either tier (issue 18)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CITIES = ["bucheon", "goyang", "suwon"]


def jikimi(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def count(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.broker
@pytest.mark.slow
def test_province_demo_commits_every_record_on_both_tiers_and_groups_alarms_across_the_city_boundary(
        tmp_path: Path) -> None:
    """Each city's hub commits every record its edges sent and each city's underpass barrier is
    closed by its own edge; the province commits every record the three city hubs sent (the
    figures agree with the files left behind), and the Bucheon and Goyang underpasses' alarms form
    one provincial incident, sent as a signed provincial CAP alert and acknowledged."""
    out = tmp_path / "demo.json"
    proc = jikimi(tmp_path, "demo", "--province", "--headless", "--duration", "180", "--json", str(out),
                  timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    state = tmp_path / "var" / "demo-province"
    cities, province = figures["cities"], figures["province"]
    assert sorted(cities) == CITIES
    assert figures["outboxes_drained"] is True  # the edges stopped producing, drained, then were counted
    for name, city in cities.items():
        assert city["records_sent"] > 500, name
        assert city["records_committed"] == city["records_sent"], name
        [(in_file,)] = count(state / name / "hub" / "hub.db", "SELECT count(*) FROM records")
        assert in_file == city["records_committed"], name
        assert city["barrier_closed_locally"] is True, name  # by the edge itself, whatever the province does
        assert city["province_records_sent"] > 0, name
        assert city["province_records_committed"] == city["province_records_sent"], name
    assert province["city_outboxes_drained"] is True
    assert province["city_records_sent"] == sum(c["province_records_sent"] for c in cities.values())
    assert province["city_records_committed"] == province["city_records_sent"]
    committed = {city: n for city, n in count(state / "province" / "province.db",
                                               "SELECT city, count(*) FROM city_records GROUP BY city")}
    assert committed == {name: c["province_records_committed"] for name, c in cities.items()}
    assert province["cities_seen"] == CITIES
    assert province["sites"] == 9
    assert province["incidents_cross_boundary"] >= 1
    assert len(province["cross_boundary"]) == province["incidents_cross_boundary"]
    assert any(inc["cities"] == ["bucheon", "goyang"]
               and {"gg-bucheon-up-0002", "gg-goyang-up-0002"} <= set(inc["sites"])
               for inc in province["cross_boundary"]), province["cross_boundary"]
    assert any(line["what"].startswith("provincial incident") for line in figures["timeline"])
    # the incident went out as the province's own signed CAP alert, acknowledged by its fire headquarters
    assert province["forwarding_settled"] is True
    assert province["deliveries"] >= 1
    assert province["deliveries_acknowledged"] == province["deliveries"]
    assert province["cap_received"] >= 1
    assert province["cap_signed_verified"] == province["cap_received"]
    got = [t for (t,) in count(state / "province" / "gyeonggi-119.db", "SELECT msg_type FROM received")]
    assert "Alert" in got
    credentials = (state / "credentials.txt").read_text().splitlines()  # fresh passwords, no defaults
    assert credentials[0].split()[:2] == ["province", "operator"]
    assert len(credentials) == 1 + 3 * len(CITIES)


@pytest.mark.parametrize("args", [
    ["--province", "--headless"],
    ["--province", "--forward-to", "http://127.0.0.1:9/cap", "--duration", "5"],
])
def test_province_demo_refuses_a_command_line_it_cannot_honour_before_starting_anything(
        tmp_path: Path, args: list[str]) -> None:
    """A headless run without a duration, or the one-city demo's --forward-to (the province demo
    forwards nothing), is one line on stderr and exit code 2; nothing is made under var/."""
    proc = jikimi(tmp_path, "demo", *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("jikimi: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "var").exists()


def test_a_provincial_incident_is_followed_by_its_alarms_across_a_change_of_id_and_ends_when_they_do() -> None:
    """The demo counts incidents, not ids: an incident whose earliest alarm clears goes on under
    a new id (province/grouping.py rule 3) and is counted once; once none of its alarms is
    grouped it has ended, and a later group of other alarms, or a second group beside it, is
    another incident."""
    from lab.demo_province import Seen, follow
    from province.grouping import ProvincialIncident

    def inc(*alarms: tuple[str, str]) -> ProvincialIncident:
        first = alarms[0]
        return ProvincialIncident(f"pi-{first[0]}-{first[1]}", tuple(sorted({c for c, _ in alarms})), alarms)

    sites = {("bucheon", "1"): "gg-bucheon-up-0002", ("goyang", "2"): "gg-goyang-up-0002",
             ("bucheon", "3"): "gg-bucheon-fa-0001"}
    seen: list[Seen] = []
    assert len(follow(seen, [inc(("bucheon", "1"), ("goyang", "2"))], sites)) == 1
    assert follow(seen, [inc(("goyang", "2"), ("bucheon", "3"))], sites) == []  # alarm 1 cleared: same incident
    assert len(seen) == 1
    assert seen[0].ids == ["pi-bucheon-1", "pi-goyang-2"]
    assert seen[0].sites == {"gg-bucheon-up-0002", "gg-goyang-up-0002", "gg-bucheon-fa-0001"}
    assert follow(seen, [], sites) == []  # every alarm cleared: it has ended
    again = follow(seen, [inc(("bucheon", "7"), ("goyang", "8")), inc(("suwon", "4"), ("bucheon", "9"))], sites)
    assert len(again) == 2
    assert [s.cities for s in seen] == [{"bucheon", "goyang"}, {"bucheon", "goyang"}, {"bucheon", "suwon"}]
