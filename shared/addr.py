"""Pure: ``HOST:PORT`` as configs and the command line write it (the one parser of it)."""

from __future__ import annotations


def host_port(text: str, *, lowest_port: int = 1) -> tuple[str, int] | None:
    """``HOST:PORT`` → (HOST as written, PORT); None unless both are there and PORT is ASCII
    digits in ``lowest_port``..65535 (``lowest_port=0`` admits 0, "any free port")."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        return None
    n = int(port)
    return (host, n) if lowest_port <= n <= 65535 else None
