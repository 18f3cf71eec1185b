"""The edge's forecaster: early close on a real test event; broken models leave the rules in charge."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge.inference import evaluate as ev
from edge.inference import rule
from edge.inference.decision import should_close
from edge.inference.events import FloodEvent
from edge.inference.features import N_FEATURES
from edge.inference.flood import FloodForecaster, Policy
from edge.inference.runtime import Health, sha256_file


def _replay_close(fc: FloodForecaster, e: FloodEvent) -> tuple[float | None, list[Policy]]:
    """Feed the event sample by sample; the first close time and who decided each sample."""
    fc.reset()
    deciders: list[Policy] = []
    for t, d in zip(e.t_secs.tolist(), e.depth_cm.tolist(), strict=True):
        f = fc.update(t, d)
        deciders.append(f.decided_by)
        if should_close(d, f.warns):
            return t, deciders
    return None, deciders


def _model_warned_event(fc: FloodForecaster, events: list[FloodEvent]) -> FloodEvent:
    """The first test-year positive where the model warns at least 5 minutes early."""
    for e in events:
        n, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        if crossing is None:
            continue
        fc.reset()
        for i in range(n):
            if fc.update(float(e.t_secs[i]), float(e.depth_cm[i])).warns:
                if crossing - float(e.t_secs[i]) >= 300.0:
                    return e
                break
    raise AssertionError("the model warns early on no test-year event")


def test_edge_closes_before_15cm_on_a_test_event_where_the_model_warns(
    test_events: list[FloodEvent],
) -> None:
    """Replaying a real 2025–26 event, the close decision comes ≥ 5 min before the crossing."""
    fc = FloodForecaster(policy=Policy.MODEL)
    try:
        assert fc.health is Health.OK
        e = _model_warned_event(fc, test_events)
        closed_at, deciders = _replay_close(fc, e)
        _, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        assert closed_at is not None
        assert crossing is not None
        assert crossing - closed_at >= 300.0
        assert set(deciders) == {Policy.MODEL}
        assert fc.model_sha256 == fc.spec.sha256
    finally:
        fc.close()


def test_corrupted_model_is_detected_and_the_rule_takes_over(
    card_copy: Path, test_events: list[FloodEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte fails the SHA-256 check; health says so once; the rule closes early."""
    card = json.loads(card_copy.read_text())
    model = card_copy.parent / card["models"]["int8"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="edge.inference.runtime"):
        fc = FloodForecaster(card_copy, variant="int8", policy=Policy.MODEL)
    try:
        assert fc.health is Health.MODEL_CORRUPT
        assert [r.getMessage() for r in caplog.records] == ["inference.model_hash_mismatch"]
        # The rule's first early warning on a positive it warns, replayed through the edge path.
        for e in test_events:
            n, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
            first = next(
                (float(e.t_secs[i]) for i in range(n) if rule.rule_warns(e.t_secs[: i + 1], e.depth_cm[: i + 1])),
                None,
            )
            if crossing is not None and first is not None:
                closed_at, deciders = _replay_close(fc, e)
                assert closed_at == first < crossing
                assert set(deciders) == {Policy.RULE}
                break
        else:
            raise AssertionError("the rule warns early on no test-year event")
        assert len(caplog.records) == 1  # logged once, not per sample
    finally:
        fc.close()


def test_garbage_model_with_matching_hash_fails_to_load(card_copy: Path) -> None:
    """A file that is not a flatbuffer (even if the card's hash matches it) is model_corrupt."""
    card = json.loads(card_copy.read_text())
    model = card_copy.parent / card["models"]["float"]["file"]
    model.write_bytes(b"not a tflite model at all" * 10)
    card["models"]["float"]["sha256"] = sha256_file(model)
    card_copy.write_text(json.dumps(card))
    fc = FloodForecaster(card_copy, variant="float", policy=Policy.MODEL)
    try:
        assert fc.health is Health.MODEL_CORRUPT
        f = fc.update(0.0, 12.0)
        assert f.decided_by is Policy.RULE
        assert f.probability is None
    finally:
        fc.close()


def test_missing_model_is_reported_and_the_rule_decides(card_copy: Path) -> None:
    """With the model file gone, health is model_missing and forecasts still come, by rule."""
    card = json.loads(card_copy.read_text())
    (card_copy.parent / card["models"]["int8"]["file"]).unlink()
    fc = FloodForecaster(card_copy, variant="int8", policy=Policy.MODEL)
    try:
        assert fc.health is Health.MODEL_MISSING
        assert fc.model_sha256 is None
        t = np.arange(0.0, 660.0, 60.0)
        forecasts = [fc.update(float(x), 11.0 + 0.3 * i) for i, x in enumerate(t)]
        assert forecasts[-1].warns  # rising 0.3 cm/min from 11 cm: 15 cm within 7 min
        assert {f.decided_by for f in forecasts} == {Policy.RULE}
    finally:
        fc.close()


def test_trimmed_history_gives_the_same_probabilities(test_events: list[FloodEvent]) -> None:
    """The forecaster keeps only recent samples, yet its output equals a full-history run."""
    from edge.inference.features import flood_features

    fc = FloodForecaster(policy=Policy.MODEL)
    try:
        e = max(test_events[:50], key=lambda x: x.t_secs.size)
        fc.reset()
        for i in range(e.t_secs.size):
            got = fc.update(float(e.t_secs[i]), float(e.depth_cm[i])).probability
            want = fc.runner.predict(flood_features(e.t_secs[: i + 1], e.depth_cm[: i + 1]))
            assert got == want
    finally:
        fc.close()


async def test_predict_async_matches_predict() -> None:
    """The asyncio entry point returns what the synchronous one does."""
    fc = FloodForecaster(policy=Policy.MODEL)
    try:
        x = np.linspace(0.0, 1.0, N_FEATURES).astype(np.float32)
        assert await fc.runner.predict_async(x) == fc.runner.predict(x)
    finally:
        fc.close()


def test_model_never_warns_below_its_arming_depth(test_events: list[FloodEvent]) -> None:
    """Below the card's arming depth the model's score is 0, so it cannot close the barrier."""
    fc = FloodForecaster(policy=Policy.MODEL)
    try:
        arm = fc.spec.arm_depth_cm
        seen_below = 0
        for e in test_events[:40]:
            fc.reset()
            for t, d in zip(e.t_secs.tolist(), e.depth_cm.tolist(), strict=True):
                f = fc.update(t, d)
                if d < arm:
                    seen_below += 1
                    assert f.score == 0.0
                    assert not f.warns
                else:
                    assert f.score == f.probability
        assert seen_below > 0
    finally:
        fc.close()


@pytest.mark.parametrize("variant", ["int8", "float"])
def test_reference_kernels_give_the_default_kernels_outputs_on_test_year_samples(
    variant: str, test_events: list[FloodEvent],
) -> None:
    """The runner (the int8 runner for the shipped int8 model, LiteRT's reference kernels without
    XNNPACK for the float one) gives, on every sample of the test-year events, the default LiteRT
    interpreter's output (bit for bit for the int8 model; the float model's sums may round
    differently in the last bit), so the card holds."""
    from edge.inference.features import flood_features
    from edge.inference.flood import default_card_path
    from edge.inference.runtime import ModelRunner, _interpreter_class, _reference_kernels, model_spec

    spec = model_spec(default_card_path(), variant)
    assert _reference_kernels(_interpreter_class())  # this runtime has the option, so it is in use
    runner = ModelRunner(spec)
    default = _interpreter_class()(model_content=spec.path.read_bytes(), num_threads=1)
    default.allocate_tensors()
    i, o = default.get_input_details()[0]["index"], default.get_output_details()[0]["index"]
    compared = 0
    try:
        for e in test_events:
            for n in range(1, e.t_secs.size + 1):
                x = flood_features(e.t_secs[:n], e.depth_cm[:n])
                default.set_tensor(i, np.asarray(x, dtype=np.float32).reshape(1, -1))
                default.invoke()
                expected = float(default.get_tensor(o).reshape(-1)[0])
                assert runner.predict(x) == (expected if variant == "int8" else pytest.approx(expected, abs=1e-6))
                compared += 1
    finally:
        runner.close()
    assert compared > 1000
