"""``bench edge``'s loaded-site run on a real agent process: what runs the model, what is loaded,
and the RSS as the median of samples over the run (no figure asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from lab.bench_agent import _load_run, _model_engine, _world


async def test_loaded_site_run_reports_the_int8_engine_and_no_numpy_or_litert_in_the_agent(tmp_path: Path) -> None:
    """Ten underpass devices with the flood model, as in the field: the real ``jikimi edge run``
    process runs the model on the int8 runner, has neither numpy nor LiteRT mapped, and its
    ``rss_mb`` is the median of several samples."""
    async with _world(tmp_path) as (pki, broker):
        run = await _load_run(tmp_path, pki, broker, poll_s=1.0, seconds=4.0)
    assert run["model_loaded"] is True
    assert run["model_engine"] == "int8"
    assert run["numpy_loaded"] is False
    assert run["litert_loaded"] is False
    assert run["rss_samples"] >= 3
    assert run["rss_min_mb"] <= run["rss_mb"] <= run["rss_max_mb"]
    assert run["missing_seqs"] == 0


def test_model_engine_comes_from_the_agents_load_log_line(tmp_path: Path) -> None:
    """The engine is read from ``inference.model_loaded``; a log without it (no model, or garbage
    lines) gives None."""
    log = tmp_path / "agent.log"
    log.write_text("not json\n" + json.dumps({"event": "inference.model_loaded", "engine": "litert"}) + "\n")
    assert _model_engine(log) == "litert"
    log.write_text('{"event": "agent.started"}\n{"event": "inference.model_loaded", broken\n')
    assert _model_engine(log) is None
    assert _model_engine(tmp_path / "absent.log") is None
