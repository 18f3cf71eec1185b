"""One console script whose --help lists every package's commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.cli import main


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "shared.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("pki", "broker"):
        assert command in out


def test_group_without_verb_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki"]) == 2
    assert "init" in capsys.readouterr().err
