"""Pure: operator roles, each allowed everything the ones below it are.

    viewer       sees sites, values, alarms, commands
    operator     + acknowledges and shelves alarms, issues commands and block/evacuate operations
    supervisor   + approves openings (the second person), takes alarms out of service, reads the audit log
    admin        + manages accounts
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}
