"""`jikimi province run --config FILE` refuses a broken config, naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from province.config import load
from shared.errors import ConfigError
from shared.tls import TlsFiles
from tests.conftest import PkiFixture, ProvincePki


@pytest.fixture
def province_files(province_pki: ProvincePki) -> TlsFiles:
    return province_pki.files(province_pki.province)


def _write(tmp_path: Path, files: TlsFiles, *, province_id: str = "province-test", extra: str = "") -> Path:
    path = tmp_path / "province.toml"
    path.write_text(f"""
[province]
id = "{province_id}"

[broker]
host = "localhost"
port = 8883
ca = "{files.ca}"
cert = "{files.cert}"
key = "{files.key}"

[database]
path = "var/province.db"
{extra}
""")
    return path


@pytest.mark.parametrize(("province_id", "extra", "key"), [
    ("gyeonggi", "", "province.id"),  # not a province-* identity
    ("province-suwon", "", "broker.cert"),  # the certificate's CN is not province.id
    ("province-test", "[grouping]\ndistance_m = -1\n", "grouping.distance_m"),
    ("province-test", "[grouping]\ndistanse_m = 10\n", "grouping.distanse_m"),
    ("province-test", "[ingest]\nmax_clock_skew_s = 'soon'\n", "ingest.max_clock_skew_s"),
])
def test_a_broken_config_names_its_file_and_key(tmp_path: Path, province_files: TlsFiles, province_id: str,
                                                extra: str, key: str) -> None:
    """Each problem is one ConfigError naming the file and the key at fault."""
    path = _write(tmp_path, province_files, province_id=province_id, extra=extra)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.file == str(path)
    assert err.value.key == key


def test_a_sound_config_is_read_with_its_defaults(tmp_path: Path, province_files: TlsFiles) -> None:
    """Grouping distance and ingest limits default when their sections are absent."""
    cfg = load(_write(tmp_path, province_files))
    assert cfg.province_id == "province-test"
    assert cfg.distance_m == 3000.0
    assert cfg.db_path == tmp_path / "var" / "province.db"


def test_a_hub_certificate_is_not_a_province_identity(tmp_path: Path, test_pki: PkiFixture) -> None:
    """A city hub's certificate in the province's config is refused at broker.cert."""
    with pytest.raises(ConfigError) as err:
        load(_write(tmp_path, test_pki.files(test_pki.hub)))
    assert err.value.key == "broker.cert"


def test_province_run_refuses_to_start_on_a_broken_config(tmp_path: Path, test_pki: PkiFixture) -> None:
    """The process exits 2 with one line naming file and key, and writes no database."""
    path = _write(tmp_path, test_pki.files(test_pki.hub))
    done = subprocess.run([sys.executable, "-m", "shared.cli", "province", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{path}: broker.cert:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "var" / "province.db").exists()
