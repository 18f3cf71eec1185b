"""The hub's errors.

    HubError                      (shared.errors.JikimiError)
    ├── StoreError                the hub's SQLite file cannot be opened, migrated or written
    ├── UpstreamError             the province outbox cannot take or give a record (also a
    │                             shared.errors.OutboxError; hub/upstream.py)
    ├── IllegalTransition         an alarm action that ISA-18.2 does not allow from its state
    ├── NotFound                  an alarm, command, operation, site or user that does not exist
    ├── Refused                   a request the hub will not carry out (two-person rule,
    │   │                         stale data, unknown device, wrong action for the device)
    │   └── Conflict              the request clashes with what is there (user exists, ...)
    ├── AuthError                 who you are could not be established
    │   ├── BadCredentials        unknown user, wrong password or disabled account
    │   └── RateLimited           too many failed logins; carries ``retry_after_s``
    ├── Forbidden                 you are known but your role or the request's origin forbids it
    └── AuditBroken               the audit chain does not verify; names the first broken row

Config errors are :class:`shared.errors.ConfigError` (file and key); wire errors are
:class:`shared.errors.WireError`. SQLite's and MQTT's errors are translated at the seam.
"""

from __future__ import annotations

from shared.errors import JikimiError, OutboxError


class HubError(JikimiError):
    """Base of the hub's errors."""


class StoreError(HubError):
    """The hub's database cannot be opened, migrated or written."""


class UpstreamError(HubError, OutboxError):
    """The city hub's province outbox (hub/upstream.py) cannot take or give a record."""


class IllegalTransition(HubError):
    """An alarm event that the ISA-18.2 state machine does not allow from the current state."""


class NotFound(HubError):
    """The thing asked for does not exist."""


class Refused(HubError):
    """The hub will not carry out the request (a safety rule or a validation says no)."""


class Conflict(Refused):
    """The request clashes with existing state."""


class AuthError(HubError):
    """Who is asking could not be established."""


class BadCredentials(AuthError):
    """Unknown user, wrong password, or a disabled account (deliberately not told apart)."""


class RateLimited(AuthError):
    """Too many failed logins for this user or address."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Forbidden(HubError):
    """The caller is known, but the role or the request's origin does not allow this."""


class AuditBroken(HubError):
    """The audit chain does not verify."""

    def __init__(self, row_id: int, problem: str) -> None:
        super().__init__(f"audit row {row_id}: {problem}")
        self.row_id = row_id
        self.problem = problem
