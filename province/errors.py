"""The province's errors.

    ProvinceError                 (shared.errors.JikimiError)
    ├── ProvinceStoreError        the province's SQLite file cannot be opened, migrated or written
    └── ProvinceRequestError      a provincial request is refused before it is sent (unknown city, no reason)

Config errors are :class:`shared.errors.ConfigError`; wire errors :class:`shared.errors.WireError`.
"""

from __future__ import annotations

from shared.errors import JikimiError


class ProvinceError(JikimiError):
    """Base of the province's errors."""


class ProvinceStoreError(ProvinceError):
    """The province's SQLite file cannot be opened, migrated or written."""


class ProvinceRequestError(ProvinceError):
    """A provincial request is refused before it is sent: an unknown city, no reason, a bad bound."""
