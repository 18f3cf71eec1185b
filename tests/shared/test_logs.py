"""``shared.logs.tail``: what a process printed last, as chaos and the benches report it."""

from __future__ import annotations

from pathlib import Path

from shared import logs


def test_tail_gives_the_last_lines_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert logs.tail(log, 3) == ["line 97", "line 98", "line 99"]
    assert logs.tail(log, 500)[0] == "line 0"  # fewer lines than asked: all of them


def test_tail_reads_only_the_end_of_a_huge_log_and_survives_bad_bytes(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_bytes(b"x" * 5_000_000 + b"\n\xff\xfe broken\nlast\n")
    assert logs.tail(log, 2) == ["\ufffd\ufffd broken", "last"]


def test_tail_of_a_log_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    (line,) = logs.tail(tmp_path / "missing.log", 5)
    assert line.startswith(f"(cannot read {tmp_path / 'missing.log'}")
