"""The error tree shared by every jikimi package.

    JikimiError                       anything jikimi raises on purpose
    ├── ConfigError                   a config file is wrong; names the file and the key
    │   └── ProfileError              a device profile is wrong; names the file and the key
    ├── WireError                     a payload or topic does not follow the wire contract
    ├── SigningError                  a command signature is missing, forged or malformed
    ├── TlsSetupError                 certificates or keys cannot be loaded into a TLS context
    ├── RetryExhausted                the retry helper gave up (attempts or total time)
    ├── MqttError                     an MQTT connection could not be made, or it ended
    ├── OutboxError                   a durable outbox (shared/outbox.py) cannot take or give a record
    ├── EdgeError (edge/errors.py)    the edge agent's tree
    ├── HubError (hub/errors.py)      the hub's tree
    ├── TrustError                    identity: PKI, broker config, the enrolment endpoint (trust/)
    └── ProvisioningError             the technician's tools' tree

Library exceptions are translated at the seam with ``raise ... from exc`` so a caller only
ever has to catch these.
"""

from __future__ import annotations


class JikimiError(Exception):
    """Base of every error jikimi raises on purpose."""


class ConfigError(JikimiError):
    """A configuration file is invalid.

    The message always names the file and the key (``file: key: problem``) so an operator
    can fix it without reading code.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class ProfileError(ConfigError):
    """A device profile (TOML) is invalid."""


class WireError(JikimiError):
    """A payload or topic does not follow the wire contract (DESIGN §3)."""


class OutboxError(JikimiError):
    """A durable outbox cannot take or give a record; each owner raises its own subclass
    (edge.errors.OutboxError, hub.errors.UpstreamError), so it is caught in its own tree."""


class SigningError(JikimiError):
    """A command's signature is missing, malformed or does not verify."""


class TlsSetupError(JikimiError):
    """Certificates or keys could not be loaded into a TLS context."""


class RetryExhausted(JikimiError):
    """The retry helper gave up after its attempts or total time ran out."""


class TrustError(JikimiError):
    """Identity went wrong: the PKI, the broker's config or ACL, the enrolment endpoint."""


class MqttError(JikimiError):
    """An MQTT connection could not be made, an operation on it failed, or it ended."""


class ProvisioningError(JikimiError):
    """Base of the provisioning tools' errors (PKI, broker config, enrolment, units)."""
