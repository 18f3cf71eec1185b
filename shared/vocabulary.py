"""Pure: the action vocabulary, the one source of what each device kind can be told to do.

DESIGN §3. For every device kind this module says which actions it offers; for every action,
the parameters it takes (name, type and, where the set is closed, the allowed values), the
profile point it writes and with what value (fixed, or taken from a parameter), the point read
back to verify it, and whether it is an *opening* (two-person) action; and for each kind which
actions an area *block* and *evacuate* send, with which parameters.

Who reads it:

- the hub plans commands and operations from it and refuses, before signing, an action a kind
  cannot do or parameters the action does not take (hub/commands.py);
- the edge verifies a signed command against it, then against the device's real profile
  (edge/commands.py);
- the console is served it as JSON (``GET /api/vocabulary``) and never repeats it.

Invariant (tests/shared/test_vocabulary.py): for every shipped profile of a kind, each action the
kind offers writes a point the profile has, that point is writable and allows every value the
action can write, and the read-back point named here exists and is the profile's read-back.
``device.selftest`` writes nothing: the edge reads every point of the device and replies.
``forecast.prealert`` is advisory: it writes nothing; the edge's policy may act on it.
A kind's ``depth`` point, where it has one, is a point of every shipped profile of the kind.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

import msgspec

from shared.messages import Action
from shared.messages import Operation as Operation  # planned here; defined with the wire messages
from shared.profiles import Kind

Value: TypeAlias = bool | int | float | str


class ParamType(enum.StrEnum):
    """The type of a command parameter's value."""

    STR = "str"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"

    def fits(self, value: object) -> bool:
        if self is ParamType.BOOL:
            return isinstance(value, bool)
        if self is ParamType.STR:
            return isinstance(value, str)
        if self is ParamType.INT:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, int | float) and not isinstance(value, bool)




class Param(msgspec.Struct, frozen=True, kw_only=True):
    """One parameter an action takes; every parameter is required."""

    name: str
    type: ParamType
    choices: tuple[Value, ...] = ()
    """The allowed values; empty: any value of the type."""
    lo: float | None = None
    hi: float | None = None
    """For a number: the inclusive range it must lie in (None: unbounded on that side)."""


class Write(msgspec.Struct, frozen=True, kw_only=True):
    """The profile point an action writes, with a fixed ``value`` or the value of ``param``."""

    point: str
    value: Value | None = None
    param: str | None = None


class ActionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What one action means on a device."""

    action: Action
    params: tuple[Param, ...] = ()
    write: Write | None = None
    """None: the action writes nothing (``device.selftest`` reads every point)."""
    readback: str | None = None
    """The point read back until it shows the written state."""
    advisory: bool = False
    """True: the action writes nothing and reads nothing; the edge's policy takes it as advice
    (``forecast.prealert``). False with no ``write``: a self-test."""
    opening: bool = False
    """Opening is deliberate: two distinct approvers and fresh low-water data (DESIGN §5)."""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def values(self) -> tuple[Value, ...]:
        """Every value this action may write (for checking it against a profile)."""
        if self.write is None:
            return ()
        if self.write.param is None:
            return () if self.write.value is None else (self.write.value,)
        p = self.param(self.write.param)
        return p.choices if p is not None else ()


class Arg(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: Value


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One command an area operation sends to a device of a kind."""

    action: Action
    args: tuple[Arg, ...] = ()

    @property
    def params(self) -> dict[str, Value]:
        return {a.name: a.value for a in self.args}


class KindSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a device kind offers, and what block and evacuate send to it."""

    kind: Kind
    actions: tuple[Action, ...]
    block: tuple[Step, ...] = ()
    evacuate: tuple[Step, ...] = ()
    depth: str | None = None
    """The point through which a device of this kind measures the water depth (``water_depth_cm``,
    ``water_level_cm``): the edge's policy watches it unless the site config names another
    ``depth_source``, and the hub judges an opening by it (DESIGN §5). None: it measures none."""

    def steps(self, operation: Operation) -> tuple[Step, ...]:
        return self.block if operation is Operation.BLOCK else self.evacuate


class Vocabulary(msgspec.Struct, frozen=True, kw_only=True):
    """The whole vocabulary; ``GET /api/vocabulary`` serves it encoded as JSON."""

    version: int
    actions: tuple[ActionSpec, ...]
    kinds: tuple[KindSpec, ...]


# --- the vocabulary -------------------------------------------------------------------------

SIGN_TEXTS: Final[tuple[str, ...]] = ("", "하천 범람 위험: 진입 금지", "산책로 통제 중", "FLOOD RISK - NO ENTRY")
"""What a river gate's sign can show ("" blanks it); the JK-RG10 profile's sign_message.allowed."""
BROADCASTS: Final[tuple[str, ...]] = ("off", "flood_warning", "evacuate")
"""What a river gate's loudspeaker can play; the JK-RG10 profile's broadcast.allowed."""

_TEXT: Final = Param(name="text", type=ParamType.STR, choices=SIGN_TEXTS)
_MESSAGE: Final = Param(name="message", type=ParamType.STR, choices=BROADCASTS)

_ACTIONS: Final = (
    ActionSpec(action=Action.BARRIER_CLOSE, write=Write(point="barrier_cmd", value="close"),
               readback="barrier_state"),
    ActionSpec(action=Action.BARRIER_OPEN, write=Write(point="barrier_cmd", value="open"),
               readback="barrier_state", opening=True),
    ActionSpec(action=Action.GATE_CLOSE, write=Write(point="gate_cmd", value="close"), readback="gate_state"),
    ActionSpec(action=Action.GATE_OPEN, write=Write(point="gate_cmd", value="open"), readback="gate_state",
               opening=True),
    ActionSpec(action=Action.SIREN_ON, write=Write(point="siren", value=True), readback="siren_on"),
    ActionSpec(action=Action.SIREN_OFF, write=Write(point="siren", value=False), readback="siren_on"),
    ActionSpec(action=Action.SIGN_SHOW, params=(_TEXT,), write=Write(point="sign_message", param="text"),
               readback="sign_message"),
    ActionSpec(action=Action.BROADCAST_PLAY, params=(_MESSAGE,), write=Write(point="broadcast", param="message"),
               readback="broadcast"),
    ActionSpec(action=Action.DEVICE_SELFTEST),
    # The hub's network forecast (hub/forecast.py) expects this site's water to reach the closing
    # depth within ``expected_minutes`` with ``probability``. It writes nothing itself: the edge's
    # local policy may pre-warn (sirens, signs) or close earlier, as the site's config says, until
    # the command's ``not_after``. The edge's own closing rule never depends on it.
    ActionSpec(action=Action.FORECAST_PREALERT, advisory=True,
               params=(Param(name="expected_minutes", type=ParamType.INT, lo=1, hi=240),
                       Param(name="probability", type=ParamType.FLOAT, lo=0.0, hi=1.0))),
)

_KINDS: Final = (
    KindSpec(kind=Kind.FLOOD_ALARM, actions=(Action.SIREN_ON, Action.SIREN_OFF, Action.DEVICE_SELFTEST,
                                             Action.FORECAST_PREALERT),
             evacuate=(Step(action=Action.SIREN_ON),), depth="water_depth_cm"),
    KindSpec(kind=Kind.DISPLACEMENT, actions=(Action.DEVICE_SELFTEST,)),
    KindSpec(kind=Kind.UNDERPASS, actions=(Action.BARRIER_CLOSE, Action.BARRIER_OPEN, Action.DEVICE_SELFTEST,
                                           Action.FORECAST_PREALERT),
             block=(Step(action=Action.BARRIER_CLOSE),), depth="water_depth_cm"),
    KindSpec(kind=Kind.RIVER_GATE,
             actions=(Action.GATE_CLOSE, Action.GATE_OPEN, Action.SIGN_SHOW, Action.BROADCAST_PLAY,
                      Action.DEVICE_SELFTEST, Action.FORECAST_PREALERT),
             block=(Step(action=Action.GATE_CLOSE),),
             evacuate=(Step(action=Action.SIGN_SHOW, args=(Arg(name="text", value="하천 범람 위험: 진입 금지"),)),
                       Step(action=Action.BROADCAST_PLAY, args=(Arg(name="message", value="evacuate"),))),
             depth="water_level_cm"),
    KindSpec(kind=Kind.RAIN_GAUGE, actions=(Action.DEVICE_SELFTEST,)),
)

VOCABULARY: Final = Vocabulary(version=1, actions=_ACTIONS, kinds=_KINDS)

_BY_ACTION: Final[Mapping[Action, ActionSpec]] = MappingProxyType({a.action: a for a in _ACTIONS})
_BY_KIND: Final[Mapping[str, KindSpec]] = MappingProxyType({k.kind.value: k for k in _KINDS})


# --- reading it -----------------------------------------------------------------------------


def action_spec(action: Action) -> ActionSpec:
    """The meaning of ``action`` (every action of the closed set has one)."""
    return _BY_ACTION[action]


def is_opening(action: Action) -> bool:
    """Opening is deliberate: two approvers, fresh low-water data, the edge's interlock."""
    return action_spec(action).opening


def kind_spec(kind: Kind | str) -> KindSpec | None:
    """What ``kind`` offers; None for a kind the vocabulary does not know."""
    return _BY_KIND.get(kind.value if isinstance(kind, Kind) else kind)


def offers(kind: Kind | str) -> tuple[Action, ...]:
    spec = kind_spec(kind)
    return spec.actions if spec is not None else ()


def check_params(action: Action, params: Mapping[str, object]) -> str | None:
    """Why ``params`` do not fit ``action`` (None when they do)."""
    spec = action_spec(action)
    for name in sorted(params):
        if spec.param(name) is None:
            takes = ", ".join(p.name for p in spec.params) or "no parameters"
            return f"{action.value} does not take params.{name} (it takes {takes})"
    for p in spec.params:
        if p.name not in params:
            return f"{action.value} needs params.{p.name}"
        value = params[p.name]
        if not p.type.fits(value):
            return f"{action.value} params.{p.name} must be a {p.type.value}, not {value!r}"
        if p.choices and value not in p.choices:
            return f"{action.value} params.{p.name}={value!r} is not one of {list(p.choices)!r}"
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                not math.isfinite(value) or (p.lo is not None and value < p.lo)
                or (p.hi is not None and value > p.hi)):
            return f"{action.value} params.{p.name}={value!r} is outside {p.lo:g}..{p.hi:g}" if (
                p.lo is not None and p.hi is not None) else f"{action.value} params.{p.name}={value!r} is out of range"
    return None


def check(kind: Kind | str, action: Action, params: Mapping[str, object]) -> str | None:
    """Why a device of ``kind`` cannot do ``action`` with ``params`` (None when it can)."""
    name = kind.value if isinstance(kind, Kind) else kind
    if action not in offers(kind):
        return f"a {name} does not take {action.value}"
    return check_params(action, params)


def write_of(action: Action, params: Mapping[str, object]) -> tuple[str, object] | None:
    """The (point, value) ``action`` writes with ``params``; None if it writes nothing.

    A value taken from a missing parameter is None: :func:`check_params` says why first.
    """
    w = action_spec(action).write
    if w is None:
        return None
    return (w.point, params.get(w.param) if w.param is not None else w.value)


def depth_point(kind: Kind | str) -> str | None:
    """The point through which a device of ``kind`` measures the water depth (None: none)."""
    spec = kind_spec(kind)
    return spec.depth if spec is not None else None


def steps(kind: Kind | str, operation: Operation) -> tuple[Step, ...]:
    """The commands ``operation`` sends to a device of ``kind`` (none for an unknown kind)."""
    spec = kind_spec(kind)
    return spec.steps(operation) if spec is not None else ()


def encode() -> bytes:
    """The vocabulary as JSON, as the console is served it."""
    return msgspec.json.encode(VOCABULARY)
