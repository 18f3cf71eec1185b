"""The edge's own int8 runner: LiteRT's output bit for bit, refusals that name what they refuse,
the fallback to LiteRT, and an agent process that with its model loaded has no numpy or LiteRT."""

from __future__ import annotations

import json
import logging
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import InferenceError
from edge.inference import evaluate as ev
from edge.inference import int8
from edge.inference.events import FloodEvent
from edge.inference.features import N_FEATURES, flood_features
from edge.inference.flood import FloodForecaster, Policy, default_card_path
from edge.inference.runtime import (
    Engine,
    Health,
    ModelRunner,
    ModelSpec,
    _interpreter_class,
    _reference_kernels,
    model_spec,
    select_engine,
    sha256_file,
)
from tests.conftest import PkiFixture
from tests.edge.harness import UNDERPASS, write_config
from trust.broker import RunningBroker


def _litert(data: bytes) -> Any:
    """LiteRT as the edge ran the model before the int8 runner: reference kernels, one thread."""
    cls = _interpreter_class()
    interp = cls(model_content=data, num_threads=1, **_reference_kernels(cls))
    interp.allocate_tensors()
    return interp


def _litert_out(interp: Any, x: np.ndarray[Any, np.dtype[np.float32]]) -> float:
    interp.set_tensor(interp.get_input_details()[0]["index"], x.reshape(1, -1))
    interp.invoke()
    return float(interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1)[0])


@pytest.fixture(scope="module")
def int8_bytes() -> bytes:
    return model_spec(default_card_path(), "int8").path.read_bytes()


def test_int8_runner_equals_litert_on_every_test_year_sample(int8_bytes: bytes, test_events: list[FloodEvent]) -> None:
    """On every sample the evaluation scores (each test-year event up to its crossing), the
    runner's probability is LiteRT's, bit for bit."""
    model, interp = int8.load(int8_bytes), _litert(int8_bytes)
    compared = 0
    for e in test_events:
        n, _ = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        for i in range(n):
            x = flood_features(e.t_secs[: i + 1], e.depth_cm[: i + 1])
            expected = _litert_out(interp, np.asarray(x, dtype=np.float32))
            assert model.run(x) == [expected], f"event {e.sensor_id} sample {i}"
            compared += 1
    assert compared > 10_000


def test_int8_runner_equals_litert_on_random_and_hostile_inputs(int8_bytes: bytes) -> None:
    """Random inputs at every scale, and NaN, ±inf, huge and negative values anywhere in the row,
    give LiteRT's output bit for bit (even where LiteRT's quantizer wraps: -inf quantizes high)."""
    model, interp = int8.load(int8_bytes), _litert(int8_bytes)
    rng = np.random.default_rng(17)
    hostile = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e30, -1e30, 2.0**31, -(2.0**31), -0.0, 1e-45]
    for k in range(6000):
        x = (rng.standard_normal(N_FEATURES) * [1e-3, 0.1, 1.0, 10.0, 1e4, 1e12][k % 6]).astype(np.float32)
        if k % 3 == 0:
            x[rng.integers(N_FEATURES, size=3)] = rng.choice(hostile, size=3)
        if k % 97 == 0:
            x[:] = hostile[k % len(hostile)]
        got = model.run(x.tolist())[0]
        want = _litert_out(interp, x)
        assert struct.pack("<f", got) == struct.pack("<f", want), f"input {x.tolist()}"


def test_wrong_input_length_is_an_error(int8_bytes: bytes) -> None:
    model = int8.load(int8_bytes)
    with pytest.raises(InferenceError, match="21"):
        model.run([0.0] * (N_FEATURES - 1))


def test_shipped_model_runs_on_the_int8_runner_and_the_float_model_falls_back_to_litert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """select_engine takes the shipped int8 model; the float model is refused by name and LiteRT
    runs it, which the load log says."""
    assert select_engine(model_spec(default_card_path(), "int8").path.read_bytes()).engine is Engine.INT8
    with caplog.at_level(logging.INFO, logger="edge.inference.runtime"):
        runner = ModelRunner(model_spec(default_card_path(), "float"))
    try:
        assert runner.health is Health.OK
        assert runner.engine is Engine.LITERT
        loaded = [r for r in caplog.records if r.getMessage() == "inference.model_loaded"]
        assert [r.__dict__["engine"] for r in loaded] == ["litert"]
        assert "FLOAT32" in loaded[0].__dict__["int8_refused"]
        assert 0.0 <= runner.predict([0.3] * N_FEATURES) <= 1.0
    finally:
        runner.close()


def _options_field(data: bytes, op_number: int, slot: int) -> int:
    """Absolute offset of a field of operator ``op_number``'s builtin options (it must be present)."""
    model = int8._Table(data, struct.unpack_from("<I", data, 0)[0])
    op = model.tables(2)[0].tables(3)[op_number]
    options = op.table(4)
    assert options is not None
    entry = options.vtable + 4 + 2 * slot
    off = struct.unpack_from("<H", data, entry)[0]
    assert off, "the field is stored (not defaulted)"
    return options.pos + int(off)


def _spec_for(tmp_path: Path, data: bytes) -> ModelSpec:
    path = tmp_path / "crafted.tflite"
    path.write_bytes(data)
    return ModelSpec(name="crafted", path=path, sha256=sha256_file(path), threshold=0.5)


def test_a_crafted_model_with_an_unsupported_activation_is_refused_by_name_and_litert_runs_it(
    int8_bytes: bytes, tmp_path: Path,
) -> None:
    """The first dense layer's fused RELU turned into RELU6: the runner names it, LiteRT runs it."""
    data = bytearray(int8_bytes)
    pos = _options_field(bytes(data), 1, 0)
    assert data[pos] == 1  # RELU
    data[pos] = 3  # RELU6
    with pytest.raises(int8.UnsupportedModel, match="RELU6"):
        int8.load(bytes(data))
    runner = ModelRunner(_spec_for(tmp_path, bytes(data)))
    try:
        assert runner.health is Health.OK
        assert runner.engine is Engine.LITERT
        x = [0.2] * N_FEATURES
        assert runner.predict(x) == _litert_out(_litert(bytes(data)), np.asarray(x, dtype=np.float32))
    finally:
        runner.close()


def test_truncated_model_with_a_matching_hash_is_model_corrupt(int8_bytes: bytes, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Half the file, even with the card's hash made to match, loads in neither engine: the
    runner cannot read it, and it is never handed to LiteRT (which crashed on it)."""
    with caplog.at_level(logging.ERROR, logger="edge.inference.runtime"):
        runner = ModelRunner(_spec_for(tmp_path, int8_bytes[: len(int8_bytes) // 2]))
    try:
        assert [r.message for r in caplog.records] == ["inference.model_unreadable"]
        assert runner.health is Health.MODEL_CORRUPT
        assert runner.engine is None
        with pytest.raises(InferenceError, match="model_corrupt"):
            runner.predict([0.0] * N_FEATURES)
    finally:
        runner.close()


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x00" * 64, b"\xff" * 64, b"not a tflite model at all" * 10])
def test_garbage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(int8.ModelFormatError):
        int8.load(data)


def test_corrupted_bytes_give_only_the_runners_own_errors(int8_bytes: bytes) -> None:
    """Thousands of files with a few random bytes changed: each loads, or is refused with
    ModelFormatError / UnsupportedModel; the reader raises nothing else (no IndexError, no
    struct.error, no OverflowError, no hang on a huge length)."""
    rng = random.Random(17)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(int8_bytes)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            model = int8.load(bytes(data))
        except (int8.ModelFormatError, int8.UnsupportedModel):
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        if model.input_size == N_FEATURES:
            model.run([0.5] * N_FEATURES)
    assert outcomes["refused"] > 0
    assert outcomes["loaded"] > 0


def test_the_runners_multipliers_follow_tflites_quantize_multiplier() -> None:
    """frexp's significand in 31 bits, rounded half away; a significand that rounds up to 2^31
    is halved with the shift raised (TFLite's own special case)."""
    assert int8.quantize_multiplier(0.5) == (2**30, 0)
    assert int8.quantize_multiplier(0.0) == (0, 0)
    assert int8.quantize_multiplier(1.0 - 2.0**-40) == (2**30, 1)
    m, shift = int8.quantize_multiplier(0.0003)
    assert abs(m * 2.0 ** (shift - 31) - 0.0003) < 1e-12


def test_agent_with_its_model_loaded_imports_neither_numpy_nor_litert(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path,
) -> None:
    """A fresh process set up as ``jikimi edge run`` is (prepare_process, then the agent's
    modules) builds the agent for ten underpass devices with the flood model and forecasts a
    rising flood on each; numpy and ai_edge_litert are not in its sys.modules."""
    devices = {f"d{i:02d}": (UNDERPASS, f"tcp://127.0.0.1:{15020 + i}") for i in range(10)}
    cfg = write_config(tmp_path / "site.toml", test_pki, test_pki.take_site(), broker, devices=devices)
    cfg.write_text(cfg.read_text().replace('transport = "', 'model = "flood"\ntransport = "'))
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from edge.agent_cli import prepare_process
        prepare_process()
        from edge.agent import Agent
        from edge.config import load_site_config
        agent = Agent(load_site_config(Path({str(cfg)!r})))
        probabilities = []
        for name, fc in agent.forecasters.items():
            for i in range(30):
                probabilities.append(fc.update(60.0 * i, 8.0 + 0.25 * i).probability)
        engines = sorted({{fc.runner.engine.value for fc in agent.forecasters.values()}})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "ai_edge_litert", "tflite_runtime"))
        print(json.dumps({{"forecasters": len(agent.forecasters), "engines": engines, "heavy": heavy,
                          "ran": sum(p is not None for p in probabilities)}}))
        agent.close()
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["forecasters"] == 10
    assert report["engines"] == ["int8"]
    assert report["ran"] == 300  # every forecast ran the model
    assert report["heavy"] == []


def test_forecaster_on_the_int8_runner_gives_litert_probabilities(test_events: list[FloodEvent]) -> None:
    """The whole edge path (trimmed history → features → int8 runner) gives, sample by sample,
    what LiteRT gives for the same features."""
    fc = FloodForecaster(policy=Policy.MODEL)
    interp = _litert(fc.spec.path.read_bytes())
    try:
        assert fc.runner.engine is Engine.INT8
        for e in test_events[:60]:
            fc.reset()
            for i in range(e.t_secs.size):
                got = fc.update(float(e.t_secs[i]), float(e.depth_cm[i])).probability
                x = np.asarray(flood_features(e.t_secs[: i + 1], e.depth_cm[: i + 1]), dtype=np.float32)
                assert got == _litert_out(interp, x)
    finally:
        fc.close()


def test_forecaster_survives_broken_depths_and_matches_litert_on_them() -> None:
    """A broken gauge (NaN, ±inf, huge, negative depths) never makes the forecaster raise, and the
    probability is still LiteRT's for the same features."""
    fc = FloodForecaster(policy=Policy.MODEL)
    interp = _litert(fc.spec.path.read_bytes())
    depths = [3.0, float("nan"), 8.0, float("inf"), 9.0, -float("inf"), -5.0, 1e300, -1e300, 12.0, 65535.0, 0.0]
    try:
        fc.reset()
        t: list[float] = []
        d: list[float] = []
        for i, depth in enumerate(depths):
            t.append(60.0 * i)
            d.append(depth)
            got = fc.update(t[-1], depth)
            x = np.asarray(flood_features(t, d), dtype=np.float32)
            assert got.probability is not None
            assert struct.pack("<f", got.probability) == struct.pack("<f", _litert_out(interp, x))
        assert fc.health is Health.OK
    finally:
        fc.close()
