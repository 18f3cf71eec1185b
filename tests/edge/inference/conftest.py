"""Shared fixtures: the FloodNet events (read from the reference data, never copied)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.inference.events import FloodEvent, Split, floodnet_csv, load_events, select
from edge.inference.flood import default_card_path


@pytest.fixture(scope="session")
def all_events() -> list[FloodEvent]:
    return load_events(floodnet_csv())


@pytest.fixture(scope="session")
def test_events(all_events: list[FloodEvent]) -> list[FloodEvent]:
    return select(all_events, Split.TEST)


@pytest.fixture
def card_copy(tmp_path: Path) -> Path:
    """The shipped card and its model files, copied into a temporary folder."""
    src = default_card_path()
    for f in src.parent.glob("flood_rise*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / src.name
