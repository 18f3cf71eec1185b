"""A TOML table being read into frozen config: typed getters that name file and dotted key.

Every problem is a :class:`shared.errors.ConfigError` (file, key, problem); :meth:`Table.done`
refuses keys nobody asked for, so a typo never falls back to a default silently. Relative paths
are relative to the config file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from shared.errors import ConfigError

_REQUIRED: Final = object()


class Table:
    def __init__(self, file: Path, prefix: str, data: Mapping[str, object]) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(str(self.file), self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def _raw(self, name: str, default: object) -> object:
        self._used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.error(name, "missing")
            return default
        return self.data[name]

    def text(self, name: str, default: str | None = None) -> str:
        value = self._raw(name, _REQUIRED if default is None else default)
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, not {value!r}")
        return value

    def number(self, name: str, default: float | None = None, *, lo: float | None = None,
               hi: float | None = None) -> float:
        value = self._raw(name, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, not {value!r}")
        if lo is not None and value < lo:
            raise self.error(name, f"must be at least {lo:g}, not {value:g}")
        if hi is not None and value > hi:
            raise self.error(name, f"must be at most {hi:g}, not {value:g}")
        return float(value)

    def integer(self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 2**31) -> int:
        value = self._raw(name, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, not {value!r}")
        if not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, not {value}")
        return value

    def optional_integer(self, name: str, *, lo: int = 0, hi: int = 2**31) -> int | None:
        self._used.add(name)
        return self.integer(name, lo=lo, hi=hi) if name in self.data else None

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {value!r}")
        return value

    def path(self, name: str, default: str | None = None) -> Path:
        path = Path(self.text(name, default))
        return path if path.is_absolute() else self.file.parent / path

    def optional_path(self, name: str) -> Path | None:
        self._used.add(name)
        return self.path(name) if name in self.data else None

    def strings(self, name: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._raw(name, _REQUIRED if default is None else list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, f"must be a list of strings, not {value!r}")
        return tuple(str(v) for v in value)

    def table(self, name: str) -> Table:
        value = self._raw(name, {})
        if not isinstance(value, Mapping):
            raise self.error(name, f"must be a table, not {value!r}")
        return Table(self.file, self.key(name), value)

    def tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``), possibly empty."""
        value = self._raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(name, "must be an array of tables")
        return [Table(self.file, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def done(self) -> None:
        for name in self.data:
            if name not in self._used:
                raise self.error(name, "unknown key")
