"""The province's errors.

    ProvinceError                 (shared.errors.JikimiError)
    └── ProvinceStoreError        the province's SQLite file cannot be opened, migrated or written

Config errors are :class:`shared.errors.ConfigError`; wire errors :class:`shared.errors.WireError`.
"""

from __future__ import annotations

from shared.errors import JikimiError


class ProvinceError(JikimiError):
    """Base of the province's errors."""


class ProvinceStoreError(ProvinceError):
    """The province's SQLite file cannot be opened, migrated or written."""
