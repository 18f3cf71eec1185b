"""The one retry helper: named exceptions only, capped attempts, jittered backoff, zero waits in tests."""

from __future__ import annotations

import random

import pytest

from shared import retry
from shared.errors import RetryExhausted


async def test_retries_named_exception_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("down")
        return "up"

    assert await retry.retry_async(flaky, retry.RetryPolicy(on=(ConnectionError,), attempts=5)) == "up"
    assert calls == 3


async def test_gives_up_after_the_attempts_with_a_domain_error() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises(RetryExhausted, match="3 attempt") as info:
        await retry.retry_async(down, retry.RetryPolicy(on=(ConnectionError,), attempts=3))
    assert calls == 3
    assert isinstance(info.value.__cause__, ConnectionError)


def test_other_exceptions_are_not_retried() -> None:
    calls = 0

    def bug() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        retry.retry_sync(bug, retry.RetryPolicy(on=(ConnectionError,), attempts=5))
    assert calls == 1


def test_backoff_is_jittered_exponential_and_capped() -> None:
    """Delays stay within [0, min(max, initial * 2**n)] and are not all equal."""
    with retry.zero_waits(False):
        gen = retry.backoff_delays(0.5, 8.0, random.Random(1))
        delays = [next(gen) for _ in range(12)]
    for n, d in enumerate(delays):
        assert 0.0 <= d <= min(8.0, 0.5 * 2**n)
    assert len(set(delays)) == len(delays)


def test_zero_waits_switch() -> None:
    """Under the test switch every delay is zero (this suite runs with it on)."""
    assert retry.waits_are_zero()
    gen = retry.backoff_delays(1.0, 60.0)
    assert [next(gen) for _ in range(5)] == [0.0] * 5


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried() -> None:
    """retry_async(lambda: coro()) runs the coroutine (and retries it), not returns it."""
    calls = 0

    async def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionError("down")
        return x * 2

    assert await retry.retry_async(lambda: flaky(21), retry.RetryPolicy(on=(ConnectionError,))) == 42
    assert calls == 2
