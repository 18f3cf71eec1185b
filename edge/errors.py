"""The edge agent's errors.

    EdgeError                     (shared.errors.JikimiError)
    ├── DeviceError               a device did not give a usable answer
    │   ├── DeviceTimeout         no answer within the timeout
    │   ├── FramingError          CRC, checksum or framing was wrong (garbage on the line)
    │   ├── DeviceException       the device answered with a protocol exception code
    │   └── DeviceUnavailable     the circuit breaker is open; the device is not being asked
    ├── CodecError                registers cannot be turned into a value, or back
    ├── OutboxError               the durable outbox cannot take or give a record
    ├── InferenceError            a model is missing, corrupt or failed
    └── CommandRejected           a command failed verification or an interlock

Modbus exception responses and Python I/O errors are folded into :class:`DeviceError`
subclasses at the driver seam.
"""

from __future__ import annotations

from shared import errors as shared_errors
from shared.errors import JikimiError


class EdgeError(JikimiError):
    """Base of the edge agent's errors."""


class DeviceError(EdgeError):
    """A device did not give a usable answer."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""


class FramingError(DeviceError):
    """The answer was corrupt: CRC, checksum or framing error."""


class DeviceException(DeviceError):
    """The device answered with a protocol exception (e.g. Modbus exception code)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class DeviceUnavailable(DeviceError):
    """The device's circuit breaker is open; it is not asked until the backoff ends."""


class CodecError(EdgeError):
    """Registers cannot be decoded into a value, or a value cannot be encoded."""


class OutboxError(EdgeError, shared_errors.OutboxError):
    """The durable outbox cannot take or give a record."""


class InferenceError(EdgeError):
    """A model is missing, corrupt or failed to run."""


class CommandRejected(EdgeError):
    """A command failed signature, expiry, device/action or interlock checks."""
