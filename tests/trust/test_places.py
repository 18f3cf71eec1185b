"""A site's place at registration: 'provision register' asks for --lat/--lon (and --area), stores
them with the registration, and refuses a position that is not one before anything is stored."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from shared.cli import main
from trust.enrolment import EnrolmentError, EnrolmentService, EnrolmentStore, registered_places
from trust.pki import Pki
from trust.places import Place, degrees, position_problem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("places") / "pki"
    Pki(d).init()
    return d


def _register(pki: Path, db: Path, *extra: str) -> int:
    return main(["provision", "register", "--pki", str(pki), "--db", str(db), "--site", "gg-suwon-up-0031",
                 "--url", "https://hub.example:8443", "--no-qr", *extra])


def test_register_stores_the_position_and_area_with_the_registration(pki: Path, tmp_path: Path) -> None:
    """The position and area given to 'provision register' are what the hub reads back."""
    db = tmp_path / "enrol.db"
    assert _register(pki, db, "--lat", "37.2636", "--lon", "127.0286", "--area", "gg-suwon") == 0
    assert registered_places(db) == {"gg-suwon-up-0031": Place(37.2636, 127.0286, "gg-suwon")}
    assert registered_places(db, "gg-other-up-0001") == {}


@pytest.mark.parametrize(("args", "words"), [
    (["--lat", "91", "--lon", "127"], "lat 91.0 is out of range"),
    (["--lat", "37", "--lon", "x"], "--lon 'x' is not a number"),
    (["--lat", "nan", "--lon", "127"], "lat nan is not a finite number"),
    (["--lat", "37", "--lon=-inf"], "lon -inf is not a finite number"),
    (["--lat", "37", "--lon", "180.5"], "lon 180.5 is out of range"),
    (["--lat", "37", "--lon", "127", "--area", "Suwon Centre"], "is not an area id"),
    (["--lon", "127"], "the following arguments are required: --lat"),
])
def test_register_refuses_a_position_that_is_not_one_and_stores_nothing(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    """A hostile or mistyped --lat/--lon/--area is a clear one-line error; no registration is made."""
    db = tmp_path / "enrol.db"
    with pytest.raises(SystemExit) as exc:
        _register(pki, db, *args)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err
    assert registered_places(db) == {}


@pytest.mark.parametrize("place", [Place(91.0, 0.0), Place(0.0, math.nan), Place(-90.5, 10.0),
                                   Place(37.0, 127.0, "../etc")])
def test_the_service_refuses_a_bad_place_too(pki: Path, tmp_path: Path, place: Place) -> None:
    """The enrolment service checks the place itself (not only the command line) and stores nothing."""
    service = EnrolmentService(Pki(pki), EnrolmentStore(tmp_path / "enrol.db"), mqtt_host="localhost",
                               mqtt_port=8883, on_issued=lambda _cn: None)
    with pytest.raises(EnrolmentError, match="gg-suwon-up-0031: --"):
        service.register("gg-suwon-up-0031", "https://hub.example:8443", actor="admin", place=place)
    assert registered_places(tmp_path / "enrol.db") == {}


def test_a_database_from_before_places_upgrades_and_its_sites_read_as_unplaced(tmp_path: Path) -> None:
    """A registration made before positions were asked for is read as registered without a place;
    the store adds the columns when it opens the file."""
    db = tmp_path / "enrol.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE enrolments (site TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, expires REAL NOT NULL,"
                " needs_approval INTEGER NOT NULL, approved_by TEXT, used_at REAL, registered_by TEXT NOT NULL,"
                " registered_at REAL NOT NULL)")
    old.execute("INSERT INTO enrolments VALUES ('gg-old-up-0001', 'h', 1, 0, NULL, NULL, 'admin', 1)")
    old.commit()
    old.close()
    assert registered_places(db) == {"gg-old-up-0001": None}
    EnrolmentStore(db).close()
    assert registered_places(db) == {"gg-old-up-0001": None}


def test_a_file_that_is_not_an_enrolment_database_is_an_error(tmp_path: Path) -> None:
    """Garbage where the enrolment database should be is an EnrolmentError, not a crash."""
    db = tmp_path / "enrol.db"
    db.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(EnrolmentError, match="cannot read the enrolment database"):
        registered_places(db)


@pytest.mark.parametrize(("lat", "lon", "ok"), [
    (0, 0, True), (-90, 180, True), (90.0, -180.0, True), (90.0001, 0, False), (True, 0, False),
    ("37", 127, False), (None, 127, False), (math.inf, 0, False),
])
def test_position_problem_table(lat: object, lon: object, ok: bool) -> None:
    """Only finite numbers within WGS84's ranges are positions (a bool is not a number)."""
    assert (position_problem(lat, lon) is None) == ok


def test_degrees_reads_the_command_line() -> None:
    """--lat/--lon text becomes degrees; the error names the option."""
    assert degrees("-33.5", "lat") == -33.5
    with pytest.raises(ValueError, match="--lat nan is not a finite"):
        degrees("nan", "lat")
