"""Shared fixtures for the edge tests: the shipped device profiles."""

from __future__ import annotations

import pytest

from shared.paths import profiles_dir
from shared.profiles import Profile, load_profile


def profile(name: str) -> Profile:
    return load_profile(profiles_dir() / name)


@pytest.fixture
def underpass() -> Profile:
    return profile("underpass-jk-up300.toml")


@pytest.fixture
def flood() -> Profile:
    return profile("flood-alarm-jk-fa100.toml")


@pytest.fixture
def displacement() -> Profile:
    return profile("displacement-jk-dx200.toml")


@pytest.fixture
def gate() -> Profile:
    return profile("river-gate-jk-rg10.toml")


@pytest.fixture
def rain() -> Profile:
    return profile("rain-gauge-jk-rn05.toml")
