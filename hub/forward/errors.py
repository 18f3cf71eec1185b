"""The forwarding and CCTV errors.

    HubError (hub/errors.py)
    └── ForwardError              anything forwarding or CCTV linkage raises on purpose
        ├── CapError              a CAP message cannot be rendered valid, or cannot be read at all
        ├── DeliveryFailed        one delivery attempt did not get an acknowledgement
        │   └── Rejected          the recipient refused the message for good (e.g. HTTP 400, 415)
        ├── CameraError           a camera's PTZ move or snapshot failed
        └── EvidenceError         stored evidence is missing or does not match its digest

A delivery or evidence item that does not exist is :class:`hub.errors.NotFound`. Recipient and
camera configuration errors are :class:`shared.errors.ConfigError` (file and key);
aiohttp's, xmlschema's and SQLite's errors are translated at the seam with ``raise ... from exc``.
"""

from __future__ import annotations

from hub.errors import HubError


class ForwardError(HubError):
    """Base of forwarding's and the CCTV linkage's errors."""


class CapError(ForwardError):
    """A CAP message does not validate (when rendering) or is not CAP at all (when reading)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message + (": " + "; ".join(problems[:5]) if problems else ""))
        self.problems = problems


class DeliveryFailed(ForwardError):
    """A delivery attempt got no acknowledgement (network error, timeout, non-2xx, no identifier)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Rejected(DeliveryFailed):
    """The recipient answered that it will never accept this message (a permanent HTTP 4xx)."""


class CameraError(ForwardError):
    """A camera could not be moved to its preset or did not give a snapshot."""


class EvidenceError(ForwardError):
    """Stored evidence is missing, or its bytes no longer match the recorded digest."""
