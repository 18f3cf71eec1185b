"""Reading FloodNet-format flood-event CSVs (NYC FloodNet "Street Flooding Events").

Each data row is one event: its start time and the measured depth series
(``flood_profile_depth_inches`` at ``flood_profile_time_secs`` from the start). Depths are
converted to centimetres here, once; everything downstream works in cm and seconds.

The binding split (``../shared/data/README.md``): events starting in 2020–2024 are for
training and tuning, events starting in 2025–2026 are the test set.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import InferenceError
from shared.paths import shared_data_dir

CM_PER_INCH = 2.54
TRAIN_YEARS = frozenset(range(2020, 2025))
TEST_YEARS = frozenset({2025, 2026})

FloatArray = npt.NDArray[np.float64]


class Split(Enum):
    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class FloodEvent:
    """One event: 0-based data row in its CSV, start year, and the depth series."""

    row_index: int
    sensor_id: str
    start_time: str
    year: int
    t_secs: FloatArray
    depth_cm: FloatArray

    @property
    def split(self) -> Split:
        return Split.TEST if self.year in TEST_YEARS else Split.TRAIN


def floodnet_csv() -> Path:
    """The reference FloodNet events file (read-only, never copied into the repo)."""
    return shared_data_dir() / "floodnet-nyc" / "flood-events.csv"


_REQUIRED = ("flood_start_time", "flood_profile_depth_inches", "flood_profile_time_secs")


def load_events(path: Path) -> list[FloodEvent]:
    """Every event of a FloodNet-format CSV, in file order.

    Raises :class:`InferenceError` naming the file (and row) when it cannot be read.
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise InferenceError(f"{path}: missing columns {', '.join(missing)}")
            return [_parse_row(path, i, row) for i, row in enumerate(reader)]
    except OSError as exc:
        raise InferenceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _parse_row(path: Path, index: int, row: dict[str, str]) -> FloodEvent:
    try:
        depth_in = json.loads(row["flood_profile_depth_inches"])
        t = json.loads(row["flood_profile_time_secs"])
        year = int(row["flood_start_time"][:4])
    except (ValueError, TypeError) as exc:
        raise InferenceError(f"{path}: data row {index}: unreadable profile: {exc}") from exc
    if not isinstance(depth_in, list) or not isinstance(t, list) or len(depth_in) != len(t):
        raise InferenceError(f"{path}: data row {index}: depth and time lists differ")
    if not t:
        raise InferenceError(f"{path}: data row {index}: empty profile")
    t_arr = np.asarray(t, dtype=np.float64)
    if np.any(np.diff(t_arr) < 0):
        raise InferenceError(f"{path}: data row {index}: times go backwards")
    return FloodEvent(
        row_index=index,
        sensor_id=row.get("sensor_id", ""),
        start_time=row["flood_start_time"],
        year=year,
        t_secs=t_arr,
        depth_cm=np.asarray(depth_in, dtype=np.float64) * CM_PER_INCH,
    )


def select(events: Sequence[FloodEvent], split: Split) -> list[FloodEvent]:
    return [e for e in events if e.split is split]
