"""Forwarding fixtures: the CAP schema, a recording audit, a clock and a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.forward.capread import CapSchema
from hub.forward.tx import LocalWriter
from tests.hub.forward.helpers import Clock, FakeAudit


@pytest.fixture(scope="session")
def schema() -> CapSchema:
    return CapSchema()


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path, audit: FakeAudit) -> AsyncIterator[LocalWriter]:
    async with LocalWriter.open(tmp_path / "hub.db", audit) as w:
        yield w


