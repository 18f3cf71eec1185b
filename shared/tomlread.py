"""The one way jikimi reads TOML: a file parsed once, then read through typed getters.

:func:`load` (or :func:`loads`) parses a TOML document into a :class:`Table`; each getter checks
one key's type (and bounds, pattern or choices) and names the file and the dotted key path in
every problem, as a :class:`shared.errors.ConfigError` (file, key, problem). :meth:`Table.done`
refuses every key nobody read, so a typo never falls back to a default silently. Relative paths
are relative to the config file's folder.

A getter raises at the first problem. A reader that reports *every* problem at once (device
profiles) collects them with :class:`Problems`, which runs each read and keeps its error.

Wording of problems (one style for every file)::

    missing · unknown key · must be an integer, not 'one' (string)
    must be between 1 and 247, not 300 · must be > 0, not -1 · must be at least 0, not -1
    unknown kind 'toaster' (one of a|b|c) · 'GG/BAD' does not match ^[a-z]...$
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, TypeVar

from shared.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F")
E = TypeVar("E", bound=enum.Enum)


class _Required(enum.Enum):
    REQUIRED = "required"


REQUIRED: Final = _Required.REQUIRED
"""A getter's default meaning: the key must be there."""


def load(path: Path, *, error: type[ConfigError] = ConfigError, name: str | None = None) -> Table:
    """Read and parse a TOML file; ``name`` is how problems name the file (default: the path)."""
    file = name if name is not None else str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(file, "", f"cannot read: {exc.strerror or exc}") from exc
    return loads(data, file, base=path.parent, error=error)


def loads(data: bytes | str, file: str, *, base: Path | None = None,
          error: type[ConfigError] = ConfigError) -> Table:
    """Parse TOML text; ``file`` names it in problems, ``base`` anchors relative paths."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise error(file, "", "not UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and the integer-length limit tomllib itself hits
        raise error(file, "", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise error(file, "", "not valid TOML: nested too deeply") from exc
    return Table(file, doc, base=base, error=error)


def finite(value: int | float) -> bool:
    """A number a float can hold (an integer too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def type_name(value: object) -> str:
    """TOML's name for a value's type."""
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return f"{text[:40]}…" if len(text) > 41 else text


class Table:
    """A TOML table being read: typed getters that name file and dotted key."""

    def __init__(self, file: str | Path, data: Mapping[str, object], prefix: str = "", *,
                 base: Path | None = None, error: type[ConfigError] = ConfigError) -> None:
        self.file = str(file)
        self.data = data
        self.prefix = prefix
        self.base = base if base is not None else Path(file).parent
        self._error = error
        self._used: set[str] = set()

    # --- plumbing -----------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The dotted key path of ``name`` in this table."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        """A problem with key ``name`` of this table (``name`` "" for the table itself)."""
        return self._error(self.file, self.key(name) if name else self.prefix, problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def names(self) -> list[str]:
        """The keys of this table, in file order (for tables keyed by names, e.g. devices)."""
        return list(self.data)

    def raw(self, name: str, default: object = REQUIRED) -> object:
        """The value of ``name`` unchecked (``default`` when absent); marks it read."""
        self._used.add(name)
        if name not in self.data:
            if default is REQUIRED:
                raise self.error(name, "missing")
            return default
        return self.data[name]

    def _typed(self, name: str, default: object, ok: Callable[[object], bool], what: str) -> object:
        value = self.raw(name, default)
        if name not in self.data:
            return value
        if not ok(value):
            raise self.error(name, f"must be {what}, not {_shown(value)} ({type_name(value)})")
        return value

    # --- scalars ------------------------------------------------------------------------------

    def text(self, name: str, default: str | _Required = REQUIRED, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self._typed(name, default, lambda v: isinstance(v, str), "a string")
        assert isinstance(value, str)
        if pattern is not None and name in self.data and not pattern.match(value):
            raise self.error(name, f"{value!r} does not match {pattern.pattern}")
        return value

    def optional_text(self, name: str, *, pattern: re.Pattern[str] | None = None) -> str | None:
        self._used.add(name)
        return self.text(name, pattern=pattern) if name in self.data else None

    def integer(self, name: str, default: int | _Required = REQUIRED, *, lo: int = 0, hi: int = 2**31) -> int:
        value = self._typed(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
        assert isinstance(value, int)
        if name in self.data and not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, not {value}")
        return value

    def optional_integer(self, name: str, *, lo: int = 0, hi: int = 2**31) -> int | None:
        self._used.add(name)
        return self.integer(name, lo=lo, hi=hi) if name in self.data else None

    def number(self, name: str, default: float | _Required = REQUIRED, *, lo: float | None = None,
               hi: float | None = None, positive: bool = False) -> float:
        """A finite number (an integer is taken as one); ``positive``: above 0."""

        def ok(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and finite(v)

        value = self._typed(name, default, ok, "a number")
        assert isinstance(value, int | float)
        if name in self.data:
            if positive and value <= 0:
                raise self.error(name, f"must be > 0, not {value:g}")
            if lo is not None and value < lo:
                raise self.error(name, f"must be at least {lo:g}, not {value:g}")
            if hi is not None and value > hi:
                raise self.error(name, f"must be at most {hi:g}, not {value:g}")
        return float(value)

    def optional_number(self, name: str, *, lo: float | None = None, hi: float | None = None,
                        positive: bool = False) -> float | None:
        self._used.add(name)
        return self.number(name, lo=lo, hi=hi, positive=positive) if name in self.data else None

    def flag(self, name: str, default: bool | _Required = REQUIRED) -> bool:
        value = self._typed(name, default, lambda v: isinstance(v, bool), "true or false")
        assert isinstance(value, bool)
        return value

    def path(self, name: str, default: str | Path | _Required = REQUIRED) -> Path:
        """A file or folder; relative to the config file's folder."""
        raw = self.text(name, str(default) if isinstance(default, Path) else default)
        p = Path(raw)
        return p if p.is_absolute() else self.base / p

    def optional_path(self, name: str) -> Path | None:
        self._used.add(name)
        return self.path(name) if name in self.data else None

    def enum(self, name: str, cls: type[E], default: E | _Required = REQUIRED, *, what: str | None = None) -> E:
        """One of an Enum's values; the problem lists them (``what`` names the kind of value)."""
        value = self.raw(name, default)
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            choices = "|".join(str(m.value) for m in cls)
            what = what or cls.__name__.lower()
            raise self.error(name, f"unknown {what} {_shown(value)} (one of {choices})") from None

    # --- containers ---------------------------------------------------------------------------

    def array(self, name: str, default: tuple[object, ...] | _Required = REQUIRED) -> tuple[object, ...]:
        """An array of any values (check the items with :meth:`item_error`)."""
        value = self._typed(name, default, lambda v: isinstance(v, list | tuple), "an array")
        assert isinstance(value, list | tuple)
        return tuple(value)

    def item_error(self, name: str, index: int, problem: str) -> ConfigError:
        return self.error(f"{name}[{index}]", problem)

    def strings(self, name: str, default: tuple[str, ...] | _Required = REQUIRED) -> tuple[str, ...]:
        value = self._typed(name, default, lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v),
                            "a list of strings")
        assert isinstance(value, list | tuple)
        return tuple(str(v) for v in value)

    def table(self, name: str, *, required: bool = False) -> Table:
        """A sub-table (absent: an empty one, unless ``required``)."""
        value = self._typed(name, REQUIRED if required else {}, lambda v: isinstance(v, Mapping), "a table")
        assert isinstance(value, Mapping)
        return Table(self.file, value, self.key(name), base=self.base, error=self._error)

    def tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``), possibly empty."""
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(name, "must be an array of tables")
        return [Table(self.file, v, f"{self.key(name)}[{i}]", base=self.base, error=self._error)
                for i, v in enumerate(value)]

    # --- unknown keys -------------------------------------------------------------------------

    def unknown(self, allowed: Iterable[str] | None = None) -> list[ConfigError]:
        """A problem for every key not in ``allowed`` (default: every key not read yet)."""
        known = set(allowed) if allowed is not None else self._used
        return [self.error(name, "unknown key") for name in sorted(set(self.data) - known)]

    def done(self) -> None:
        """Refuse the first key nobody read (in file order)."""
        for name in self.data:
            if name not in self._used:
                raise self.error(name, "unknown key")


class Problems:
    """Collects problems so a reader can report every one at once, not just the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, *errors: ConfigError) -> None:
        self.errors.extend(errors)

    def attempt(self, read: Callable[[], T], fallback: F) -> T | F:
        """``read()``; on a :class:`ConfigError`, keep it and return ``fallback``."""
        try:
            return read()
        except ConfigError as exc:
            self.errors.append(exc)
            return fallback
