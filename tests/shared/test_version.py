import tomllib
from pathlib import Path

from shared.version import VERSION


def test_the_version_the_parts_announce_is_the_packages() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == VERSION
