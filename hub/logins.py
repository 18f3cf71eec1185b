"""Pure: the login limiter and the client's address behind a trusted proxy.

Rules and invariants of :class:`LoginLimiter`:

1. An attempt is counted *before* its password is checked, in one synchronous step
   (:meth:`LoginLimiter.begin`: look, then count, no ``await`` between), so N parallel guesses
   against a limit L reach the password check (scrypt) at most L times; the rest are refused
   at once, without running scrypt.
2. Attempts are counted per (user name, client address) and per client address, never per
   user name alone: an attacker guessing sam's password from one place cannot lock the real
   sam out from another.
3. The first ``max_failures`` attempts of a key are free. Each attempt from then on is allowed
   only after a back-off that doubles per attempt (``backoff_s``, ``2 * backoff_s``, ...,
   at most ``backoff_max_s``), counted from the last attempt; earlier ones are refused (429)
   with the time left. So the real user, after the back-off, can still log in, while an
   attacker gets one guess per (growing) back-off.
4. A success forgets the (user, address) key and gives the address back the attempt it took
   (a room of operators logging in is not a failure); failures stay counted. A key is
   forgotten ``window_s`` after its back-off ended with no attempt since.
5. The limiter's memory is bounded: keys past rule 4's window are swept when it reaches
   ``max_keys``; if it is still full the oldest tenth goes (amortised: no sweep per request).

:func:`client_address` is rule 6: the address a login is counted under is the TCP peer's,
unless the peer is one of the configured trusted proxies and the configured header
(``X-Forwarded-For`` or a single-address header such as ``X-Real-IP``) names the client. For
``X-Forwarded-For`` the client is the right-most address that is not itself a trusted proxy
(the left part of the header is whatever the client chose to send). A header that does not
parse leaves the peer's address: a shared key is the safe side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from hub.errors import RateLimited

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR: Final = "x-forwarded-for"


@dataclass
class _Key:
    attempts: int = 0
    last: float = 0.0
    next_at: float = 0.0
    """No attempt of this key is allowed before this time."""


@dataclass(frozen=True)
class Attempt:
    """One login attempt that was let through to the password check."""

    pair: str
    address: str


@dataclass
class LoginLimiter:
    """Rules 1-5: back-off per (user name, address) and per address."""

    max_failures: int
    window_s: float
    backoff_s: float = 10.0
    backoff_max_s: float = 900.0
    max_keys: int = 100_000
    _keys: dict[str, _Key] = field(default_factory=dict)

    def delay(self, attempts: int) -> float:
        """The wait after a key's ``attempts``-th attempt (0 while attempts are still free)."""
        over = attempts - self.max_failures
        if over < 0:
            return 0.0
        return min(self.backoff_s * 2.0 ** min(over, 64), self.backoff_max_s)

    def _live(self, key: str, now: float) -> _Key | None:
        st = self._keys.get(key)
        if st is not None and now >= max(st.next_at, st.last) + self.window_s:
            del self._keys[key]
            return None
        return st

    def begin(self, username: str, address: str, now: float) -> Attempt:
        """Rule 1: count an attempt now, or raise :class:`RateLimited` without counting it."""
        att = Attempt(pair=f"user:{username}\x00addr:{address}", address=f"addr:{address}")
        keys = (att.pair, att.address)
        for key in keys:
            st = self._live(key, now)
            if st is not None and now < st.next_at:
                raise RateLimited("too many failed logins; try again later", retry_after_s=st.next_at - now)
        self._make_room(now)
        for key in keys:
            st = self._keys.setdefault(key, _Key())
            st.attempts += 1
            st.last = now
            st.next_at = now + self.delay(st.attempts)
        return att

    def succeeded(self, att: Attempt) -> None:
        """Rule 4: the right password was given."""
        self._keys.pop(att.pair, None)
        st = self._keys.get(att.address)
        if st is not None:
            st.attempts -= 1
            if st.attempts <= 0:
                del self._keys[att.address]
            else:
                st.next_at = st.last + self.delay(st.attempts)

    def __len__(self) -> int:
        return len(self._keys)

    def _make_room(self, now: float) -> None:
        if len(self._keys) + 2 <= self.max_keys:
            return
        for key in list(self._keys):
            self._live(key, now)
        if len(self._keys) + 2 > self.max_keys:  # still full: the oldest tenth goes, in one sweep
            by_age = sorted(self._keys, key=lambda k: self._keys[k].last)
            for key in by_age[: max(2, self.max_keys // 10)]:
                del self._keys[key]


def parse_proxies(entries: Sequence[str]) -> tuple[IpNetwork, ...]:
    """Addresses or networks (``10.0.0.0/8``) of trusted proxies; raises ValueError naming the bad one."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network") from exc
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IpNetwork]) -> bool:
    return any(addr in net for net in proxies)


def client_address(peer: str | None, header: str | None, value: str | None,
                   proxies: Sequence[IpNetwork]) -> str:
    """Rule 6: the address to count a request under."""
    peer_s = peer or "unknown"
    peer_ip = _ip(peer_s) if peer else None
    if header is None or value is None or peer_ip is None or not _trusted(peer_ip, proxies):
        return peer_s
    if header.lower() != FORWARDED_FOR:
        ip = _ip(value)
        return str(ip) if ip is not None else peer_s
    hops = [_ip(h) for h in value.split(",")]
    for ip in reversed(hops):
        if ip is None:
            return peer_s
        if not _trusted(ip, proxies):
            return str(ip)
    return peer_s
