"""The one retry helper: named exceptions, capped attempts and total time, jittered backoff.

Built on tenacity. Every retry in jikimi goes through :func:`retry_async` / :func:`retry_sync`
(or :func:`backoff_delays` for loops that manage their own connection, like reconnects), so
one switch, :func:`zero_waits`, makes all waits zero in tests.

Backoff is "full jitter" exponential: the n-th wait is uniform in
``[0, min(max_s, initial_s * 2**n)]`` (AWS architecture blog, "Exponential Backoff And
Jitter"), which spreads a fleet of 6,500 edges reconnecting after a broker restart.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from shared.errors import RetryExhausted

T = TypeVar("T")

_zero_waits = False


@dataclass(frozen=True)
class RetryPolicy:
    """What to retry and for how long."""

    on: tuple[type[BaseException], ...]
    attempts: int = 5
    total_s: float = 30.0
    initial_s: float = 0.2
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if not self.on:
            raise ValueError("name the exceptions to retry on")


@contextlib.contextmanager
def zero_waits(enabled: bool = True) -> Iterator[None]:
    """Make every wait of the retry helper zero while the block runs (tests)."""
    global _zero_waits
    before = _zero_waits
    _zero_waits = enabled
    try:
        yield
    finally:
        _zero_waits = before


def waits_are_zero() -> bool:
    return _zero_waits


def backoff_delays(
    initial_s: float, max_s: float, rng: random.Random | None = None
) -> Iterator[float]:
    """Endless full-jitter exponential delays; all zero under :func:`zero_waits`."""
    r = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    n = 0
    while True:
        if _zero_waits:
            yield 0.0
        else:
            cap = min(max_s, initial_s * (2**n))
            yield r.uniform(0.0, cap)
        n = min(n + 1, 62)


def _wait(policy: RetryPolicy) -> tenacity.wait.wait_base:
    if _zero_waits:
        return tenacity.wait_none()
    return tenacity.wait_random_exponential(multiplier=policy.initial_s, max=policy.max_s)


def _stop(policy: RetryPolicy) -> tenacity.stop.stop_base:
    return tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(
        policy.total_s
    )


def _exhausted(policy: RetryPolicy, err: tenacity.RetryError) -> RetryExhausted:
    last = err.last_attempt.exception()
    return RetryExhausted(
        f"gave up after {err.last_attempt.attempt_number} attempt(s)"
        f" (limit {policy.attempts}, {policy.total_s:g} s): {last!r}"
    )


async def retry_async(fn: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Await ``fn()`` until it succeeds; raise :class:`RetryExhausted` from the last error."""
    retrying = tenacity.AsyncRetrying(
        stop=_stop(policy),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception_type(policy.on),
    )

    async def call() -> T:
        # tenacity awaits only what it recognises as a coroutine function; a lambda or partial
        # returning a coroutine would otherwise come back un-awaited.
        return await fn()

    try:
        return await retrying(call)
    except tenacity.RetryError as err:
        raise _exhausted(policy, err) from err.last_attempt.exception()


def retry_sync(fn: Callable[[], T], policy: RetryPolicy) -> T:
    """Call ``fn()`` until it succeeds; raise :class:`RetryExhausted` from the last error."""
    retrying = tenacity.Retrying(
        stop=_stop(policy),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception_type(policy.on),
    )
    try:
        return retrying(fn)
    except tenacity.RetryError as err:
        raise _exhausted(policy, err) from err.last_attempt.exception()
