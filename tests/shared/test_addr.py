"""The one HOST:PORT parser: ports are ASCII digits in range, host and port both there."""

from __future__ import annotations

import pytest

from shared.addr import host_port


@pytest.mark.parametrize(("text", "lowest", "expected"), [
    ("127.0.0.1:8443", 1, ("127.0.0.1", 8443)),
    ("[::1]:502", 1, ("[::1]", 502)),
    ("localhost:0", 0, ("localhost", 0)),
    ("localhost:0", 1, None),
    ("localhost:65536", 0, None),
    ("localhost:²", 0, None),
    (":8443", 0, None),
    ("localhost", 0, None),
    ("localhost:", 0, None),
])
def test_host_port(text: str, lowest: int, expected: tuple[str, int] | None) -> None:
    assert host_port(text, lowest_port=lowest) == expected
