"""A plain (non-editable) install works: the wheel carries every package, the shipped profiles,
models, console files and CAP schema, and ``jikimi`` runs from an empty folder.

The wheel is built from a copy of the source tree and installed with ``--no-deps`` into a fresh
virtualenv; the third-party dependencies come from the test's own environment through a
``.pth`` line (the editable install's finder there is not loaded: ``.pth`` files are only read
in site directories), so the test needs no network and sees nothing of the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _declared_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    """A new package folder that pyproject.toml does not list would be missing from the wheel."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("shared", "trust", "edge", "hub",
             "province", "provisioning", "lab") for p in (ROOT / top).rglob("__init__.py")}
    assert found <= _declared_packages(), sorted(found - _declared_packages())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the project's wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "test-artifacts"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("jikimi-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.run([str(bin_dir / "python"), "-c", where], check=True, capture_output=True,
                                  text=True).stdout.strip())
    (purelib / "jikimi-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JIKIMI_SHARED_DATA"] = str(cwd / "no-reference-data")
    return subprocess.run([str(bin_dir / "jikimi"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_wheel_carries_the_shipped_files(installed: Path) -> None:
    """Profiles, models with their cards, the console, the CAP schema and the demo's storm are in the wheel."""
    wheel = next((installed.parent.parent / "dist").glob("jikimi-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("firmware_configs/profiles/underpass-jk-up300.toml",
                   "firmware_configs/models/flood_rise_int8.tflite",
                   "firmware_configs/models/flood_rise.md", "hub/web/index.html", "hub/web/app.js",
                   "hub/web/data/gyeonggi-municipalities-2018.geojson", "hub/forward/schema/CAP-v1.2.xsd",
                   "lab/data/walnut-creek-2024-08-08_11.csv", "shared/paths.py", "trust/pki.py"):
        assert needed in names, needed


def test_profile_show_with_a_bare_name_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    """``jikimi profile show underpass-jk-up300.toml`` (as the README shows) finds the shipped profile."""
    r = _run(installed, "profile", "show", "underpass-jk-up300.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "JK-UP300" in r.stdout
    assert "barrier_cmd" in r.stdout


def test_the_installed_code_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    """The installed jikimi imports from its own site-packages, and finds its data there."""
    code = "import shared.paths as p, hub; print(hub.__file__); print(p.profiles_dir())"
    r = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=60)
    assert r.returncode == 0, r.stderr
    hub_file, profiles = r.stdout.split()
    assert Path(hub_file).is_relative_to(installed.parent)
    assert not Path(hub_file).is_relative_to(ROOT)
    assert Path(profiles).is_relative_to(installed.parent)
    assert (Path(profiles) / "underpass-jk-up300.toml").is_file()


def test_demo_help_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    """``jikimi demo --help`` runs from the plain install."""
    r = _run(installed, "demo", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--headless" in r.stdout


def test_the_hub_finds_its_cap_schema_when_installed(installed: Path, tmp_path: Path) -> None:
    """The CAP schema is found inside the installed package, without the reference data beside it."""
    code = "from hub.forward.capread import CapSchema; s = CapSchema(); print(s.path)"
    r = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(installed.parent)


def test_site_templates_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    """``jikimi edge template --kind river_gate`` finds the shipped template in the plain install."""
    r = _run(installed, "edge", "template", "--kind", "river_gate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'depth_source = "gate.water_level_cm"' in r.stdout
