"""The login limiter (pure): attempts counted before the password check, a back-off per (user,
address) and per address instead of a lockout of a named user, and the client's address behind
a trusted proxy."""

from __future__ import annotations

import pytest

from hub.errors import RateLimited
from hub.logins import LoginLimiter, client_address, parse_proxies

T0 = 1_000_000.0


def limiter(**kw: float) -> LoginLimiter:
    return LoginLimiter(max_failures=5, window_s=300.0, **kw)  # type: ignore[arg-type]


def test_parallel_attempts_get_at_most_the_limit_through() -> None:
    """40 attempts at the same instant (none has finished its password check yet): five are let
    through, 35 are refused without being counted."""
    lim = limiter()
    refusals: list[RateLimited] = []
    for _ in range(40):
        try:
            lim.begin("sam", "10.0.0.9", T0)
        except RateLimited as exc:
            refusals.append(exc)
    assert len(refusals) == 35
    assert all(r.retry_after_s > 0 for r in refusals)


def test_the_back_off_doubles_and_is_capped() -> None:
    lim = limiter(backoff_s=10.0, backoff_max_s=60.0)
    assert [lim.delay(n) for n in range(1, 10)] == [0, 0, 0, 0, 10, 20, 40, 60, 60]


def test_after_the_back_off_the_right_user_gets_in_and_an_attacker_waits_longer() -> None:
    lim = limiter(backoff_s=10.0)
    for _ in range(5):
        lim.begin("sam", "10.0.0.9", T0)  # five wrong guesses
    with pytest.raises(RateLimited) as err:
        lim.begin("sam", "10.0.0.9", T0 + 9)
    assert err.value.retry_after_s == pytest.approx(1.0)
    att = lim.begin("sam", "10.0.0.9", T0 + 10)  # after the back-off: through
    lim.succeeded(att)
    # an attacker that kept guessing instead now waits 20 s, then 40 s
    lim2 = limiter(backoff_s=10.0)
    for _ in range(5):
        lim2.begin("sam", "10.0.0.9", T0)
    lim2.begin("sam", "10.0.0.9", T0 + 10)
    with pytest.raises(RateLimited) as err:
        lim2.begin("sam", "10.0.0.9", T0 + 29)
    assert err.value.retry_after_s == pytest.approx(1.0)
    lim2.begin("sam", "10.0.0.9", T0 + 30)


def test_guessing_a_users_password_never_locks_them_out_elsewhere() -> None:
    """Rule 2: there is no key for a user name alone."""
    lim = limiter()
    for _ in range(5):
        lim.begin("sam", "203.0.113.9", T0)
    with pytest.raises(RateLimited):
        lim.begin("sam", "203.0.113.9", T0)
    with pytest.raises(RateLimited):
        lim.begin("olive", "203.0.113.9", T0)  # the guessing address is slowed for every name
    lim.succeeded(lim.begin("sam", "198.51.100.20", T0))  # the real sam, from the situation room


def test_a_success_forgets_the_pair_and_gives_the_address_its_attempt_back() -> None:
    """A room of operators behind one address logging in all day never trips the limit."""
    lim = limiter()
    for i in range(50):
        lim.succeeded(lim.begin(f"op{i}", "10.1.1.1", T0 + i))
    assert len(lim) == 0
    lim.begin("olive", "10.1.1.1", T0 + 60)  # one typo ...
    lim.succeeded(lim.begin("olive", "10.1.1.1", T0 + 61))  # ... then the right password
    assert len(lim) == 1  # the address keeps the failure, the pair is forgotten


def test_quiet_keys_are_forgotten_and_memory_is_bounded() -> None:
    lim = LoginLimiter(max_failures=5, window_s=300.0, backoff_s=10.0, max_keys=100)
    for _ in range(5):
        lim.begin("sam", "10.0.0.9", T0)
    for _ in range(5):  # the back-off ended 300 s ago: a fresh start, five free attempts
        lim.begin("sam", "10.0.0.9", T0 + 10 + 300)
    for i in range(500):
        lim.begin(f"user{i}", f"10.9.{i // 250}.{i % 250}", T0 + 400 + i)
    assert len(lim) <= 100


PROXIES = parse_proxies(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "header", "value", "expected"),
    [
        ("127.0.0.1", None, None, "127.0.0.1"),  # no header configured: the peer
        ("127.0.0.1", "X-Forwarded-For", None, "127.0.0.1"),  # header absent
        ("127.0.0.1", "X-Forwarded-For", "198.51.100.7", "198.51.100.7"),
        ("192.0.2.1", "X-Forwarded-For", "198.51.100.7", "192.0.2.1"),  # not from a trusted proxy
        # the client may prepend anything; the right-most untrusted hop is the client
        ("127.0.0.1", "X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.2.3.4", "198.51.100.7"),
        ("127.0.0.1", "X-Forwarded-For", "10.2.3.4, 10.9.9.9", "127.0.0.1"),  # only proxies: the peer
        ("127.0.0.1", "X-Forwarded-For", "garbage", "127.0.0.1"),
        ("127.0.0.1", "X-Forwarded-For", "198.51.100.7:5123", "198.51.100.7"),
        ("127.0.0.1", "X-Forwarded-For", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "X-Real-IP", "198.51.100.8", "198.51.100.8"),
        (None, "X-Forwarded-For", "198.51.100.7", "unknown"),
    ],
)
def test_the_client_address_behind_a_trusted_proxy(peer: str | None, header: str | None, value: str | None,
                                                   expected: str) -> None:
    assert client_address(peer, header, value, PROXIES) == expected


def test_a_bad_proxy_entry_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_proxies(["10.0.0.300"])
