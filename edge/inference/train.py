"""Training the flood-rise forecaster (TensorFlow; only ``jikimi model train`` imports this).

Never imported at run time or in CI: the edge and the tests use the committed ``.tflite``
through LiteRT. TensorFlow comes from the optional ``train`` extra.

Recipe (deterministic given the seed; ``tf.keras.utils.set_random_seed`` + op determinism):

1. Training years only (2020–2024). Fit on events starting 2020–2023; events starting 2024
   are the validation set for early stopping and for choosing the operating point.
2. Samples: every sample of every event before its 15 cm crossing (all samples of events that
   stay below). Input: :func:`edge.inference.features.flood_features` of the history up to
   that sample. Label: 1 when the crossing comes within ``LABEL_HORIZON_SECS`` (10 minutes).
3. A small MLP (``HIDDEN`` units, ReLU, sigmoid out), Adam, binary cross-entropy.
4. Operating point, on the validation year: the arming depth (the model may warn only at
   or above it, as the rule is armed at 4 in) and the threshold with the most positives
   warned ≥ 10 min at ≤ 10% false alarms. The model is put in charge only if that beats the
   rule's best point at the same or a lower false-alarm rate on the same year.
5. Converted to ``.tflite``: float32, and int8 (weights and activations; float32 input and
   output) with a representative set drawn from the fitting samples.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.inference import rule
from edge.inference.evaluate import Outcome, metrics, samples_before_crossing
from edge.inference.events import TEST_YEARS, FloodEvent, Split
from edge.inference.features import (
    CLOSING_DEPTH_CM,
    N_FEATURES,
    STEP_SECS,
    WINDOW_STEPS,
    flood_features,
)

log = logging.getLogger(__name__)

LABEL_HORIZON_SECS = 600.0
FIT_YEARS = frozenset(range(2020, 2024))
VALIDATION_YEARS = frozenset({2024})
HIDDEN = (32, 16)
EPOCHS = 60
BATCH = 256
LEARNING_RATE = 2e-3
SEED = 20240815
# Arming depths (inches) tried for the model, as the rule is armed at 4 in.
ARM_CHOICES_IN = (0.0, 2.0, 3.0, 4.0, 5.0)


@dataclass(frozen=True)
class Dataset:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]


def build_dataset(events: Sequence[FloodEvent]) -> Dataset:
    """Features and labels for every sample that could warn early."""
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[float] = []
    for ev in events:
        n, crossing = samples_before_crossing(ev.t_secs, ev.depth_cm)
        for i in range(n):
            xs.append(np.asarray(flood_features(ev.t_secs[: i + 1], ev.depth_cm[: i + 1]), dtype=np.float32))
            hit = crossing is not None and crossing - float(ev.t_secs[i]) <= LABEL_HORIZON_SECS
            ys.append(1.0 if hit else 0.0)
    x = np.stack(xs) if xs else np.zeros((0, N_FEATURES), np.float32)
    return Dataset(x=x.astype(np.float32), y=np.asarray(ys, dtype=np.float32))


@dataclass(frozen=True)
class TrainedModels:
    float_tflite: bytes
    int8_tflite: bytes
    epochs_run: int
    tf_version: str


def fit_and_convert(fit: Dataset, validation: Dataset, seed: int = SEED) -> TrainedModels:
    """Fit the MLP and convert it to float and int8 ``.tflite`` flatbuffers."""
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = _build_model(tf)
    stop = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True)
    history = model.fit(
        fit.x,
        fit.y,
        validation_data=(validation.x, validation.y),
        epochs=EPOCHS,
        batch_size=BATCH,
        shuffle=True,
        verbose=0,
        callbacks=[stop],
    )
    epochs_run = len(history.history["loss"])
    log.info("train.fitted", extra={"epochs": epochs_run})

    float_bytes = _convert(tf, model, None)
    rng = np.random.default_rng(seed)
    pick = rng.choice(fit.x.shape[0], size=min(2000, fit.x.shape[0]), replace=False)
    rep = fit.x[np.sort(pick)]
    int8_bytes = _convert(tf, model, rep)
    return TrainedModels(float_bytes, int8_bytes, epochs_run, str(tf.__version__))


def _build_model(tf: Any) -> Any:
    inputs = tf.keras.Input(shape=(N_FEATURES,), name="features")
    h = inputs
    for units in HIDDEN:
        h = tf.keras.layers.Dense(units, activation="relu")(h)
    out = tf.keras.layers.Dense(1, activation="sigmoid", name="p_close_10min")(h)
    model = tf.keras.Model(inputs, out)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(LEARNING_RATE),
        loss="binary_crossentropy",
    )
    return model


def _convert(tf: Any, model: Any, representative: npt.NDArray[np.float32] | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        rows = representative

        def gen() -> Any:
            for row in rows:
                yield [row.reshape(1, -1)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data: bytes = converter.convert()
    return data


def run(events: Sequence[FloodEvent], out_dir: Path, seed: int = SEED) -> dict[str, Any]:
    """Train, convert, calibrate on the training years, score the test years, write the card.

    Writes ``flood_rise_float.tflite``, ``flood_rise_int8.tflite``, ``flood_rise.json`` and
    ``flood_rise.md`` into ``out_dir`` and returns the card.
    """
    from edge.inference import report
    from edge.inference.evaluate import choose_threshold, metrics_at
    from edge.inference.runtime import sha256_file

    train_ev = [e for e in events if e.split is Split.TRAIN]
    fit_ev = [e for e in train_ev if e.year in FIT_YEARS]
    val_ev = [e for e in train_ev if e.year in VALIDATION_YEARS]
    test_ev = [e for e in events if e.split is Split.TEST]
    models = fit_and_convert(build_dataset(fit_ev), build_dataset(val_ev), seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"float": "flood_rise_float.tflite", "int8": "flood_rise_int8.tflite"}
    (out_dir / files["float"]).write_bytes(models.float_tflite)
    (out_dir / files["int8"]).write_bytes(models.int8_tflite)

    # The rule: its horizon chosen on all training years at <= 10% false alarms.
    rs_train = report.rule_scored(train_ev)
    rs_val = report.rule_scored(val_ev)
    rth, rule_train = choose_threshold(rs_train, report.rule_thresholds(), report.MAX_FALSE_ALARM_RATE)
    horizon_secs = round(1.0 / rth)
    card: dict[str, Any] = {
        "name": "flood-rise",
        "card_version": 1,
        "task": "P(depth reaches 15 cm within 10 min) at each sample; warn = close now",
        "in_charge": "rule",
        "shipped_variant": "int8",
        "split": {
            "fit_years": sorted(FIT_YEARS),
            "validation_years": sorted(VALIDATION_YEARS),
            "test_years": sorted(TEST_YEARS),
            "source": "floodnet-nyc/flood-events.csv",
        },
        "training": {
            "seed": seed,
            "hidden": list(HIDDEN),
            "epochs_max": EPOCHS,
            "epochs_run": models.epochs_run,
            "batch": BATCH,
            "learning_rate": LEARNING_RATE,
            "label_horizon_secs": LABEL_HORIZON_SECS,
            "tensorflow": models.tf_version,
        },
        "features": {
            "step_secs": STEP_SECS,
            "window_steps": WINDOW_STEPS,
            "n_features": N_FEATURES,
            "closing_depth_cm": CLOSING_DEPTH_CM,
        },
        "rule": {
            "horizon_secs": horizon_secs,
            "arm_depth_cm": rule.ARM_DEPTH_CM,
            "train": rule_train.as_dict(),
            "validation": metrics_at(rs_val, rth).as_dict(),
            "curve_train": report.rule_curve(rs_train),
        },
        "models": {},
    }
    for variant, name in files.items():
        card["models"][variant] = {
            "file": name,
            "sha256": sha256_file(out_dir / name),
            "threshold": 0.5,
            "bytes": (out_dir / name).stat().st_size,
        }
    card_path = out_dir / "flood_rise.json"
    _write_json(card_path, card)

    # Each model's operating point (arming depth and threshold): chosen on 2024 alone.
    for variant in files:
        raw_val = report.model_scored(card_path, variant, val_ev, raw=True)
        candidates = []
        for arm_in in ARM_CHOICES_IN:
            arm = arm_in * rule.CM_PER_INCH
            th_a, m_a = choose_threshold(
                report.armed(raw_val, val_ev, arm),
                report.MODEL_THRESHOLDS,
                report.MAX_FALSE_ALARM_RATE,
            )
            candidates.append(((m_a.warned_ge10, m_a.warned_ge5, -arm), arm, th_a, m_a))
        _, arm_cm, th, m_val = max(candidates, key=lambda c: c[0])
        entry = card["models"][variant]
        entry["threshold"] = th
        entry["arm_depth_cm"] = arm_cm
        entry["validation"] = m_val.as_dict()
        raw_fit = report.model_scored(card_path, variant, fit_ev, raw=True)
        entry["fit"] = metrics_at(report.armed(raw_fit, fit_ev, arm_cm), th).as_dict()
        # The rule at its best on the validation year with no more false alarms than the model.
        rule_pts = [
            m
            for m in (metrics_at(rs_val, x) for x in report.rule_thresholds())
            if m.false_alarm_rate <= m_val.false_alarm_rate
        ]
        best_rule_ge10 = max((m.warned_ge10 for m in rule_pts), default=0)
        entry["validation_rule_best_ge10_at_same_fa"] = best_rule_ge10
        entry["beats_rule_on_validation"] = m_val.warned_ge10 > best_rule_ge10
    shipped = card["models"][card["shipped_variant"]]
    card["in_charge"] = "model" if shipped["beats_rule_on_validation"] else "rule"
    _write_json(card_path, card)  # the thresholds must be on disk before scoring the test years

    # Test years: reported, never used for a choice.
    figures = report.test_figures(card_path, test_ev)
    card["rule"]["test"] = figures["rule"]["test"]
    card["rule"]["curve_test"] = figures["rule"]["curve_test"]
    for variant in files:
        card["models"][variant]["test"] = figures[variant]["test"]
        card["models"][variant]["curve_test"] = figures[variant]["curve_test"]
    oracle = [Outcome(e.crossing_secs, 0.0) for e in report.rule_scored(test_ev)]
    card["oracle_event_start_test"] = metrics(oracle).as_dict()
    _write_json(card_path, card)
    (out_dir / "flood_rise.md").write_text(report.render_markdown(card), encoding="utf-8")
    return card


def _write_json(path: Path, card: dict[str, Any]) -> None:
    path.write_text(json.dumps(card, indent=1, sort_keys=False) + "\n", encoding="utf-8")
