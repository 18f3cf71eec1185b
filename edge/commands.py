"""Signed commands at the edge: verification, interlocks, idempotent execution.

Rules and invariants (DESIGN §3, §5):

1. The edge trusts the hub's command key installed at provisioning, never the broker: a
   command whose signature does not verify is ``rejected``.
2. Checks, in order: addressed to this site; signature; not expired (``not_after``) —
   ``expired``; not issued in the future beyond the clock-skew allowance; device known;
   action offered by the device's kind with fitting params (the action vocabulary,
   shared/vocabulary.py), then allowed by the device's own profile (the point it writes exists,
   is writable, and the value is allowed; it names a read-back point); for opening actions: a
   second approver distinct from the issuer, a fresh good depth reading below the reopening
   depth, the device in remote mode.
3. Every command is answered ``received`` first, then exactly one terminal status:
   ``rejected`` / ``expired`` (with the reason), ``verified`` (written and read back in the
   expected state) or ``failed`` (written, but the device did not reach the state in time,
   or the write itself failed).
4. A ``cmd_id`` seen before never acts twice: its stored terminal reply is sent again, a
   self-test's report with it (a command still running is just acknowledged ``received``).
5. Authentication comes before everything else (:func:`authenticate`): a command not for this
   site or not signed by the hub's key is ``rejected`` (its reason begins with
   ``shared.messages.UNAUTHENTICATED``) and leaves no trace in the store, so a forged command
   reusing a real ``cmd_id`` can neither take the real one's result nor be answered with it.
6. Before the device write, ``executing`` is stored durably with the write plan. A command
   found ``executing`` (the agent died between the write and the result) is never written
   again: the device is read back and the command answered ``verified`` or ``failed``.
7. Errors of one command (device, codec, storage) become its reply; they never end the
   executor. Without a durable ``executing`` mark nothing is written.
8. An ``exercise`` command (a drill) passes every check of rule 2 exactly as a real one —
   signature, expiry, vocabulary, profile, interlocks — and then writes nothing: its terminal
   reply is ``verified`` saying it was a dry run (:class:`DryRun`), or the refusal a real one
   would have met. Its result is stored like any other, so a repeat is answered, not re-run.
9. ``device.selftest`` reads every polled point of the device fresh from the device (never the
   cache) and replies ``verified`` with a per-point report only when every point read ``good``
   and inside the profile's range; otherwise ``failed`` naming what was wrong, with the full
   report. A device that cannot be reached is ``failed`` with every point ``comm_fail``.
   (Derived points are computed by the edge, not read, so they are not in the report.)

10. ``forecast.prealert`` (the hub's network forecast) passes rules 1-2 like any command, its
   params within the vocabulary's ranges; it writes nothing. Its terminal reply is ``verified``
   once the agent's policy holds it until ``not_after`` (edge/policy.py rule 7 decides what it
   does); an exercise one is verified as a dry run and held by nothing.

:func:`plan` is pure; :class:`CommandExecutor` is the shell that writes and reads back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import msgspec

from edge.config import PolicySection
from edge.errors import CodecError, DeviceError, OutboxError
from edge.policy import Latest
from shared import vocabulary
from shared.errors import SigningError
from shared.messages import MAX_REPORT, MAX_TEXT, UNAUTHENTICATED, Command, PointCheck, Quality, ReplyStatus, Scalar
from shared.profiles import Profile
from shared.signing import verify_command

if TYPE_CHECKING:  # the agent verifies with shared.ed25519.VerifyKey; cryptography's key works too
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from shared.ed25519 import VerifyKey

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Refusal:
    status: ReplyStatus  # rejected or expired
    reason: str


@dataclass(frozen=True)
class WritePlan:
    device: str
    point: str
    value: Scalar
    readback: str
    expect: Scalar
    timeout_s: float


@dataclass(frozen=True)
class DryRun:
    """Rule 8: what an exercise command would have written, had it been real."""

    plan: WritePlan


@dataclass(frozen=True)
class Prealert:
    """Rule 10: the hub expects ``device``'s water to reach the closing depth soon; advice until ``until``."""

    device: str
    expected_minutes: int
    probability: float
    until: float
    exercise: bool = False


@dataclass(frozen=True)
class SelfTestPoint:
    name: str
    lo: float | None
    hi: float | None


@dataclass(frozen=True)
class SelfTest:
    device: str
    points: tuple[SelfTestPoint, ...] = ()


EXECUTING = "executing"
"""The stored status of a command whose write may have happened (rule 6)."""


def authenticate(cmd: Command, *, site: str, key: Ed25519PublicKey | VerifyKey) -> Refusal | None:
    """Rule 5: addressed to this site and signed by the hub's key, or why not (pure)."""
    if cmd.site != site:
        return Refusal(ReplyStatus.REJECTED, f"{UNAUTHENTICATED}addressed to site {cmd.site}, this is {site}")
    try:
        verify_command(cmd, key)
    except SigningError as exc:
        return Refusal(ReplyStatus.REJECTED, f"{UNAUTHENTICATED}signature: {exc}")
    return None


def plan(
    cmd: Command,
    *,
    site: str,
    key: Ed25519PublicKey | VerifyKey,
    devices: Mapping[str, Profile],
    depth_of: Mapping[str, tuple[str, str]],
    latest: Latest,
    policy: PolicySection,
    now: float,
) -> Refusal | WritePlan | SelfTest | DryRun | Prealert:
    """Decide what a command does, or why it is refused (pure)."""
    refusal = authenticate(cmd, site=site, key=key)
    if refusal is not None:
        return refusal
    if now > cmd.not_after:
        return Refusal(ReplyStatus.EXPIRED, f"expired {now - cmd.not_after:.1f} s ago")
    if cmd.issued_at > now + policy.max_clock_skew_s:
        return Refusal(ReplyStatus.REJECTED, f"issued {cmd.issued_at - now:.0f} s in the future (clock skew?)")
    profile = devices.get(cmd.device)
    if profile is None:
        return Refusal(ReplyStatus.REJECTED, f"unknown device {cmd.device!r}")
    if cmd.action not in vocabulary.offers(profile.kind):
        return Refusal(ReplyStatus.REJECTED, f"{cmd.action.value} is not an action of {cmd.device} ({profile.model}, "
                       f"a {profile.kind.value})")
    problem = vocabulary.check_params(cmd.action, cmd.params)
    if problem is not None:
        return Refusal(ReplyStatus.REJECTED, problem)
    if vocabulary.action_spec(cmd.action).advisory:  # rule 10
        minutes, prob = cmd.params["expected_minutes"], cmd.params["probability"]
        assert isinstance(minutes, int)  # check_params said so
        assert isinstance(prob, int | float)
        return Prealert(cmd.device, minutes, float(prob), cmd.not_after, cmd.exercise)
    write = vocabulary.write_of(cmd.action, cmd.params)
    if write is None:
        return SelfTest(cmd.device, tuple(SelfTestPoint(p.name, p.valid_min, p.valid_max)
                                          for p in profile.polled[:MAX_REPORT]))
    point_name, raw = write
    if not isinstance(raw, bool | int | float | str):
        return Refusal(ReplyStatus.REJECTED, f"{cmd.action.value}: no value to write to {point_name}")
    value: Scalar = raw
    point = profile.points.get(point_name)
    if point is None or not point.writable:
        return Refusal(ReplyStatus.REJECTED, f"{cmd.action.value} is not an action of {cmd.device} ({profile.model}: "
                       f"no writable {point_name})")
    if point.allowed and value not in point.allowed:
        return Refusal(ReplyStatus.REJECTED, f"{point_name}={value!r} is not allowed by the profile")
    if point.readback is None:
        return Refusal(ReplyStatus.REJECTED, f"{point_name} has no read-back point in the profile")
    expect: Scalar = point.expect.get(str(value), value) if isinstance(value, str) else value
    if vocabulary.is_opening(cmd.action):
        refusal = _opening_interlock(cmd, profile, depth_of.get(cmd.device), latest, policy, now)
        if refusal is not None:
            return refusal
    mode = latest.get((cmd.device, "mode"))
    if mode is not None and mode.value == "local":
        return Refusal(ReplyStatus.REJECTED, f"{cmd.device} is in local mode")
    wp = WritePlan(cmd.device, point_name, value, point.readback, expect, policy.verify_timeout_s)
    return DryRun(wp) if cmd.exercise else wp


def judge_selftest(
    test: SelfTest, got: Mapping[str, tuple[Scalar, Quality]]
) -> tuple[ReplyStatus, str, list[PointCheck]]:
    """Rule 9: the verdict, its reason and the per-point report of a self-test (pure).

    ``got`` holds what each point read; a point missing from it was not read (``comm_fail``).
    """
    report: list[PointCheck] = []
    for p in test.points:
        value, quality = got.get(p.name, (None, Quality.COMM_FAIL))
        outside = isinstance(value, int | float) and not isinstance(value, bool) and (
            (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi))
        why = ""
        if quality is Quality.OUT_OF_RANGE or (quality is Quality.GOOD and outside):
            quality = Quality.OUT_OF_RANGE
            why = f"out of range {p.lo:g}..{p.hi:g}" if p.lo is not None and p.hi is not None else "out of range"
        elif quality is not Quality.GOOD:
            why = quality.value
        if isinstance(value, str):
            value = value[:MAX_TEXT]
        report.append(PointCheck(point=p.name, value=value, quality=quality, ok=not why, why=why))
    bad = [c for c in report if not c.ok]
    if not report:
        return ReplyStatus.FAILED, "self-test: the profile has no point to read", report
    if not bad:
        return ReplyStatus.VERIFIED, f"self-test passed: {len(report)} point(s) read good and in range", report
    if all(c.quality is Quality.COMM_FAIL for c in report):
        return ReplyStatus.FAILED, f"self-test failed: {test.device} cannot be reached (every point comm_fail)", report
    listed = ", ".join(f"{c.point} ({c.why})" for c in bad[:8]) + (", ..." if len(bad) > 8 else "")
    return ReplyStatus.FAILED, f"self-test failed: {len(bad)} of {len(report)} point(s) wrong: {listed}", report


def _opening_interlock(
    cmd: Command, profile: Profile, depth_key: tuple[str, str] | None, latest: Latest, policy: PolicySection, now: float
) -> Refusal | None:
    others = {a for a in cmd.approved_by if a != cmd.issued_by}
    if not others:
        return Refusal(ReplyStatus.REJECTED, "opening needs a second approver distinct from the issuer")
    if depth_key is None:
        return Refusal(ReplyStatus.REJECTED, f"{cmd.device} has no depth reading to check before opening")
    r = latest.get(depth_key)
    if r is None:
        return Refusal(ReplyStatus.REJECTED, "interlock: no depth reading yet")
    age = now - r.ts
    if r.quality is not Quality.GOOD or age > policy.data_age_limit_s:
        return Refusal(ReplyStatus.REJECTED, f"interlock: depth data is {r.quality.value}, {age:.0f} s old "
                       f"(limit {policy.data_age_limit_s:g} s)")
    if not isinstance(r.value, int | float) or r.value >= policy.reopening_depth_cm:
        return Refusal(ReplyStatus.REJECTED, f"interlock: water {r.value} cm is not below the reopening depth "
                       f"{policy.reopening_depth_cm:g} cm")
    return None


# --- the shell ----------------------------------------------------------------------------------

class Reply(Protocol):
    """Send one reply (``report`` only for a self-test's terminal reply)."""

    def __call__(self, cmd_id: str, status: ReplyStatus, reason: str,
                 report: Sequence[PointCheck] = ()) -> Awaitable[None]: ...


class CommandStore(Protocol):
    """Where command results are kept (the outbox's database implements it)."""

    def command_result(self, cmd_id: str) -> tuple[str, str] | None: ...
    def command_report(self, cmd_id: str) -> list[PointCheck]: ...
    def store_command_result(self, cmd_id: str, status: str, reason: str,
                             report: Sequence[PointCheck] = ()) -> None: ...


@dataclass(frozen=True)
class Bus:
    """What the executor needs from the acquisition side (the bus schedulers)."""

    write: Callable[[str, str, Scalar], Awaitable[None]]
    read: Callable[[str, str], Awaitable[tuple[Scalar, Quality]]]
    read_fresh: Callable[[str, Sequence[str]], Awaitable[Mapping[str, tuple[Scalar, Quality]]]]
    """Read these points of a device from the device now (not the cache), by point name."""


_plan_json = msgspec.json.Encoder()


class CommandExecutor:
    """Runs commands one at a time: reply received, plan, write, read back, reply terminal."""

    def __init__(
        self,
        *,
        store: CommandStore,
        reply: Reply,
        bus: Bus,
        planner: Callable[[Command], Refusal | WritePlan | SelfTest | DryRun | Prealert],
        authenticate: Callable[[Command], Refusal | None],
        clock: Callable[[], float],
        poll_s: float = 0.25,
        on_prealert: Callable[[Prealert], str] | None = None,
    ) -> None:
        self._store = store
        self._reply = reply
        self._bus = bus
        self._plan = planner
        self._authenticate = authenticate
        self._clock = clock
        self._poll_s = poll_s
        self._on_prealert = on_prealert
        """Rule 10: hands a prealert to the policy and says what it will do."""
        self.queue: asyncio.Queue[Command] = asyncio.Queue(maxsize=64)
        self._running: set[str] = set()

    async def submit(self, cmd: Command) -> None:
        """Take a command from the uplink. A full queue refuses at once rather than wait."""
        try:
            self.queue.put_nowait(cmd)
        except asyncio.QueueFull:
            await self._reply(cmd.cmd_id, ReplyStatus.REJECTED, "edge busy: command queue full")

    async def run(self) -> None:
        while True:
            cmd = await self.queue.get()
            await self.execute(cmd)

    async def execute(self, cmd: Command) -> ReplyStatus:
        refusal = self._authenticate(cmd)
        if refusal is not None:  # rule 5: nothing stored, nothing looked up
            log.warning("command.unauthenticated", extra={"cmd_id": cmd.cmd_id, "reason": refusal.reason})
            await self._reply(cmd.cmd_id, ReplyStatus.RECEIVED, "")
            await self._reply(cmd.cmd_id, refusal.status, refusal.reason)
            return refusal.status
        try:
            stored = self._store.command_result(cmd.cmd_id)
        except OutboxError as exc:
            return await self._refuse_unstored(cmd, f"storage unavailable, cannot tell whether it ran: {exc}")
        if stored is not None and stored[0] == EXECUTING:
            return await self._resume(cmd, stored[1])
        if stored is not None:
            status = ReplyStatus(stored[0])
            log.info("command.repeat", extra={"cmd_id": cmd.cmd_id, "status": status.value})
            try:
                kept = self._store.command_report(cmd.cmd_id)
            except OutboxError as exc:
                log.error("command.report_unavailable", extra={"cmd_id": cmd.cmd_id, "error": str(exc)})
                kept = []
            await self._reply(cmd.cmd_id, status, stored[1], kept)
            return status
        await self._reply(cmd.cmd_id, ReplyStatus.RECEIVED, "")
        decision = self._plan(cmd)
        report: list[PointCheck] = []
        if isinstance(decision, Refusal):
            status, reason = decision.status, decision.reason
        elif isinstance(decision, SelfTest):
            status, reason, report = await self.selftest(decision)
        elif isinstance(decision, Prealert):  # rule 10
            if decision.exercise:
                status, reason = ReplyStatus.VERIFIED, "exercise: dry run, prealert checked, not taken"
            elif self._on_prealert is None:
                status, reason = ReplyStatus.REJECTED, "this edge takes no prealerts"
            else:
                status, reason = ReplyStatus.VERIFIED, self._on_prealert(decision)
        elif isinstance(decision, DryRun):  # rule 8: every check passed; nothing is written
            p = decision.plan
            status, reason = ReplyStatus.VERIFIED, (f"exercise: dry run, checks and interlocks passed, nothing "
                                                    f"written (would write {p.point}={p.value!r})")
        else:
            try:  # rule 6: durably "executing" before the write, or no write at all
                self._store.store_command_result(cmd.cmd_id, EXECUTING, _plan_json.encode(decision).decode())
            except OutboxError as exc:
                return await self._refuse_unstored(cmd, f"storage unavailable, not written: {exc}")
            status, reason = await self.write_and_verify(decision)
        return await self._finish(cmd, status, reason, report)

    async def selftest(self, test: SelfTest) -> tuple[ReplyStatus, str, list[PointCheck]]:
        """Rule 9: read every point from the device now and judge it."""
        names = [p.name for p in test.points]
        try:
            got = await self._bus.read_fresh(test.device, names)
        except (DeviceError, CodecError) as exc:
            log.warning("command.selftest_read_failed", extra={"device": test.device, "error": str(exc)})
            got = {}
        return judge_selftest(test, got)

    async def _refuse_unstored(self, cmd: Command, reason: str) -> ReplyStatus:
        log.error("command.storage_failed", extra={"cmd_id": cmd.cmd_id, "reason": reason})
        await self._reply(cmd.cmd_id, ReplyStatus.REJECTED, reason)
        return ReplyStatus.REJECTED

    async def _resume(self, cmd: Command, plan_json: str) -> ReplyStatus:
        """Rule 6: the agent died while this command ran; read the device back, never write again."""
        try:
            p = msgspec.json.decode(plan_json, type=WritePlan)
        except msgspec.DecodeError as exc:
            return await self._finish(cmd, ReplyStatus.FAILED, f"interrupted by a restart; plan unreadable: {exc}")
        try:
            value, quality = await self._bus.read(p.device, p.readback)
        except (DeviceError, CodecError) as exc:
            value, quality = f"read failed: {exc}", Quality.COMM_FAIL
        log.warning("command.resumed", extra={"cmd_id": cmd.cmd_id, "readback": p.readback, "value": str(value)})
        if quality is Quality.GOOD and value == p.expect:
            return await self._finish(cmd, ReplyStatus.VERIFIED,
                                      f"{p.readback} = {value!r}, read back after a restart (not written again)")
        return await self._finish(cmd, ReplyStatus.FAILED, f"interrupted by a restart before it was verified; not "
                                  f"written again ({p.readback}: {value!r})")

    async def _finish(self, cmd: Command, status: ReplyStatus, reason: str,
                      report: Sequence[PointCheck] = ()) -> ReplyStatus:
        try:
            self._store.store_command_result(cmd.cmd_id, status.value, reason, report)
        except OutboxError as exc:
            log.error("command.result_not_stored", extra={"cmd_id": cmd.cmd_id, "error": str(exc)})
        log.info("command.done", extra={"cmd_id": cmd.cmd_id, "action": cmd.action.value, "status": status.value,
                                        "reason": reason})
        await self._reply(cmd.cmd_id, status, reason, report)
        return status

    async def write_and_verify(self, p: WritePlan) -> tuple[ReplyStatus, str]:
        try:
            await self._bus.write(p.device, p.point, p.value)
        except CodecError as exc:
            return ReplyStatus.REJECTED, f"{p.point}={p.value!r} cannot be encoded, nothing written: {exc}"
        except DeviceError as exc:
            return ReplyStatus.FAILED, f"write {p.point}={p.value!r} failed: {exc}"
        deadline = self._clock() + p.timeout_s
        last: Scalar = None
        while True:
            try:
                value, quality = await self._bus.read(p.device, p.readback)
                last = value
                if quality is Quality.GOOD and value == p.expect:
                    return ReplyStatus.VERIFIED, f"{p.readback} = {value!r}"
            except (DeviceError, CodecError) as exc:
                last = f"read failed: {exc}"
            if self._clock() >= deadline:
                return ReplyStatus.FAILED, (f"{p.readback} did not reach {p.expect!r} within {p.timeout_s:g} s "
                                            f"(last: {last!r})")
            await asyncio.sleep(self._poll_s)

