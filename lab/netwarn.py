"""The network early warning offline: replay FloodNet across sensors, fit, score, write the card.

The hub's forecaster (:mod:`hub.forecast`) is fed here exactly as the hub will feed it: every
sample of every event, all sensors together, in real time order (events of different sensors
overlap). At each sample that could warn early, the site's features are read from the network
state at that instant and scored. Scoring and its definitions (lead time, false alarm, the
curve) are the edge's own (:mod:`edge.inference.evaluate`), so the figures compare directly with
``flood_rise.md``.

Recipe (deterministic; numpy only, no training extra needed):

1. The binding split: fit on events starting 2020–2023, choose on 2024, report 2025–2026 once.
   The network state for any event is built from all events in the file up to that instant
   (the hub sees every sensor, whatever year the event is filed under).
2. Samples: every sample before the event's 15 cm crossing (all samples of events that stay
   below). Label: the crossing comes within the label horizon.
3. Logistic regression on standardised features (Newton's method, L2 penalty ``L2``).
4. On 2024: the label horizon (``HORIZON_CHOICES_SECS``), the warning depth and the threshold with
   the most positives warned ≥ 10 min at ≤ ``MAX_FALSE_ALARM_RATE`` false alarms (the issue's 8 %).
   Also tried there: a second, below-gate path (its own logistic model fitted on the samples
   under the arming depth, label horizon ``BELOW_GATE_HORIZONS_SECS``, its own threshold on the
   logit), so the network could warn a site before its own water rises. It is chosen only when
   it warns at least ``BELOW_GATE_MARGIN`` of 2024's floods more than the best single path: it
   adds a second threshold chosen on the same year, and a gain of one or two floods is noise.
5. The test years are scored once with the chosen parameters, next to the edge rule's and the
   edge model's curves from ``flood_rise.json``, compared at equal false-alarm caps.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InferenceError
from edge.inference import evaluate as ev
from edge.inference import rule
from edge.inference.decision import should_close
from edge.inference.events import TEST_YEARS, FloodEvent, Split
from edge.inference.features import CLOSING_DEPTH_CM
from hub import forecast as fc
from shared.paths import shared_data_dir

FIT_YEARS = frozenset(range(2020, 2024))
VALIDATION_YEARS = frozenset({2024})
HORIZON_CHOICES_SECS = (600.0, 1200.0, 1800.0, 2700.0, 3600.0)
BELOW_GATE_HORIZONS_SECS = (1800.0, 3600.0)
BELOW_GATE_LOGITS = [round(3.0 + 0.25 * i, 2) for i in range(49)]
"""The below-gate path's thresholds, on its logit (3 to 15: probabilities 0.95 to 1 - 3e-7)."""
BELOW_GATE_MARGIN = 0.02
# Depths (inches) below which the network model may not warn (0: it may warn a dry site).
WARN_DEPTH_CHOICES_IN = (0.0, 2.0, 3.0, 4.0, 5.0)
EVENT_WEIGHT = 30.0
L2 = 1e-5
NEWTON_STEPS = 30
MAX_FALSE_ALARM_RATE = 0.08
THRESHOLDS = [round(0.01 * i, 2) for i in range(1, 100)]
FA_CAPS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
BENCH_WET_SHARES = (0.05, 0.2, 0.5)
PARAMS_FILE = "network_warning.json"
CARD_FILE = "network_warning_card.json"
MD_FILE = "network_warning.md"

FloatArray = npt.NDArray[np.float64]


def sensor_metadata_csv() -> Path:
    """The reference sensor locations (read-only, never copied)."""
    return shared_data_dir() / "floodnet-nyc" / "sensor-metadata.csv"


def load_positions(path: Path) -> dict[str, tuple[float, float]]:
    """sensor_id → (latitude, longitude); a row without a usable position is an error naming it."""
    out: dict[str, tuple[float, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("sensor_id", "latitude", "longitude") if c not in (reader.fieldnames or [])]
            if missing:
                raise InferenceError(f"{path}: missing columns {', '.join(missing)}")
            for i, row in enumerate(reader):
                try:
                    lat, lon = float(row["latitude"]), float(row["longitude"])
                except (TypeError, ValueError) as exc:
                    raise InferenceError(f"{path}: data row {i}: unreadable position") from exc
                if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
                    raise InferenceError(f"{path}: data row {i}: position out of range")
                out[row["sensor_id"]] = (lat, lon)
    except OSError as exc:
        raise InferenceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return out


def start_epoch(path: Path, event: FloodEvent) -> float:
    """The event's start as seconds since the epoch (FloodNet times are UTC, without a zone)."""
    try:
        start = datetime.fromisoformat(event.start_time)
    except ValueError as exc:
        where = f"{path}: data row {event.row_index}"
        raise InferenceError(f"{where}: flood_start_time {event.start_time!r}: {exc}") from exc
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start.timestamp()


@dataclass(frozen=True)
class EventFeatures:
    """One event's features at each sample that could warn early (before its crossing)."""

    crossing_secs: float | None
    t_secs: FloatArray
    depth_cm: FloatArray
    x: FloatArray


@dataclass(frozen=True)
class Sample:
    """One sample in the replay's global order."""

    t_abs: float
    event: int
    index: int


def replay_order(path: Path, events: Sequence[FloodEvent]) -> list[Sample]:
    """Every sample of every event in real time order; ties by file row, then sample."""
    out: list[Sample] = []
    for k, e in enumerate(events):
        t0 = start_epoch(path, e)
        out.extend(Sample(t0 + float(t), k, i) for i, t in enumerate(e.t_secs.tolist()))
    out.sort(key=lambda s: (s.t_abs, s.event, s.index))
    return out


def replay_features(
    path: Path,
    events: Sequence[FloodEvent],
    positions: dict[str, tuple[float, float]],
    arm_depth_cm: float = rule.ARM_DEPTH_CM,
) -> list[EventFeatures]:
    """Feed every sample to a :class:`hub.forecast.NetworkForecaster` in time order.

    All samples at one instant are observed first, then the features of those that could
    warn are read at that instant: the state holds nothing later than it.
    """
    sites = sorted({e.sensor_id for e in events})
    net = fc.NetworkForecaster(sites, {s: positions.get(s) for s in sites}, CLOSING_DEPTH_CM, arm_depth_cm)
    n_warn = [ev.samples_before_crossing(e.t_secs, e.depth_cm) for e in events]
    rows: list[list[FloatArray | None]] = [[None] * n for n, _ in n_warn]
    order = replay_order(path, events)
    i = 0
    while i < len(order):
        j = i
        t_now = order[i].t_abs
        while j < len(order) and order[j].t_abs == t_now:
            s = order[j]
            e = events[s.event]
            net.observe(e.sensor_id, t_now, float(e.depth_cm[s.index]))
            j += 1
        wanted = [s for s in order[i:j] if s.index < n_warn[s.event][0]]
        if wanted:
            x = net.features(t_now, [events[s.event].sensor_id for s in wanted])
            for s, row in zip(wanted, x, strict=True):
                rows[s.event][s.index] = row
        i = j
    out = []
    for e, (n, crossing), r in zip(events, n_warn, rows, strict=True):
        x = np.stack([v for v in r if v is not None]) if n else np.zeros((0, fc.N_FEATURES))
        out.append(EventFeatures(crossing, e.t_secs[:n].copy(), e.depth_cm[:n].copy(), x))
    return out


def scored(params: fc.NetworkParams, feats: Sequence[EventFeatures]) -> list[ev.EventScores]:
    """Per-sample probabilities of each event (the number compared with the threshold)."""
    return [ev.EventScores(f.crossing_secs, f.t_secs, fc.score(params, f.x)) for f in feats]


def first_close_secs(params: fc.NetworkParams, event: FloodEvent, feats: EventFeatures) -> float | None:
    """The first sample where the hub's forecast warns or the depth is at the closing depth."""
    warns = fc.warns(params, feats.x)
    for t, d, w in zip(feats.t_secs.tolist(), feats.depth_cm.tolist(), warns.tolist(), strict=True):
        if should_close(d, bool(w)):
            return float(t)
    for t, d in zip(event.t_secs.tolist(), event.depth_cm.tolist(), strict=True):
        if should_close(d, False):
            return float(t)
    return None


def warning_times(path: Path, events: Sequence[FloodEvent], params: fc.NetworkParams,
                  positions: dict[str, tuple[float, float]]) -> list[tuple[int, float | None]]:
    """(event_row_index, first close decision in seconds from the event start) for every event."""
    feats = replay_features(path, events, positions, params.arm_depth_cm)
    return [(e.row_index, first_close_secs(params, e, f)) for e, f in zip(events, feats, strict=True)]


# --- fitting -------------------------------------------------------------------------------


def labels(feats: Sequence[EventFeatures], horizon_secs: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Rows, labels and weights: each event's samples weigh ``EVENT_WEIGHT`` in all.

    A false alarm is counted per event, not per sample: without the weights a long dry event
    would outweigh a short flood many times over.
    """
    kept = [f for f in feats if f.x.shape[0]]
    x = np.concatenate([f.x for f in kept])
    y = np.concatenate([
        np.zeros(f.t_secs.size) if f.crossing_secs is None else (f.crossing_secs - f.t_secs <= horizon_secs) * 1.0
        for f in kept
    ])
    w = np.concatenate([np.full(f.t_secs.size, EVENT_WEIGHT / f.t_secs.size) for f in kept])
    return x, y, w


def fit_logistic(x: FloatArray, y: FloatArray, sw: FloatArray, columns: Sequence[int],
                 l2: float = L2) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """(mean, scale, weights, bias) by Newton's method on the weighted, L2-penalised log-loss.

    Only ``columns`` are fitted; the others get weight 0 (mean 0, scale 1), so a model on a
    subset of the features runs through the same code.
    """
    cols = list(columns)
    mean = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    xs = x[:, cols]
    mean[cols] = np.average(xs, axis=0, weights=sw)
    sd = np.sqrt(np.average((xs - mean[cols]) ** 2, axis=0, weights=sw))
    scale[cols] = np.where(sd > 1e-9, sd, 1.0)
    z = np.column_stack([(xs - mean[cols]) / scale[cols], np.ones(x.shape[0])])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2 * float(sw.sum()))
    penalty[-1] = 0.0
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50.0, 50.0)))
        grad = z.T @ (sw * (p - y)) + penalty * w
        hess = (z * (sw * p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    weights = np.zeros(x.shape[1])
    weights[cols] = w[:-1]
    return mean, scale, weights, float(w[-1])


def params_dict(mean: FloatArray, scale: FloatArray, weights: FloatArray, bias: float, threshold: float,
                horizon_secs: float, warn_depth_cm: float,
                below_gate: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "network-warning",
        "features": list(fc.FEATURE_NAMES),
        "closing_depth_cm": CLOSING_DEPTH_CM,
        "arm_depth_cm": rule.ARM_DEPTH_CM,
        "warn_depth_cm": warn_depth_cm,
        "label_horizon_secs": horizon_secs,
        "mean": [round(float(v), 8) for v in mean],
        "scale": [round(float(v), 8) for v in scale],
        "weights": [round(float(v), 8) for v in weights],
        "bias": round(bias, 8),
        "threshold": threshold,
        "below_gate": below_gate,
    }


@dataclass(frozen=True)
class Choice:
    """One candidate tried on the validation year."""

    params: dict[str, Any]
    validation: ev.Metrics


Fit = tuple[FloatArray, FloatArray, FloatArray, float]


def fit_main(fit: Sequence[EventFeatures], horizon: float, columns: Sequence[int]) -> Fit:
    """The main path: every sample that could warn early, labelled at ``horizon``."""
    x, y, sw = labels(fit, horizon)
    return fit_logistic(x, y, sw, columns)


def choose(fit: Sequence[EventFeatures], val: Sequence[EventFeatures], columns: Sequence[int]) -> list[Choice]:
    """For each label horizon and warning depth: fit, then the best threshold on the validation year."""
    out = []
    for horizon in HORIZON_CHOICES_SECS:
        mean, scale, w, b = fit_main(fit, horizon, columns)
        for warn_in in WARN_DEPTH_CHOICES_IN:
            p = params_dict(mean, scale, w, b, 0.5, horizon, warn_in * rule.CM_PER_INCH)
            sv = scored(fc.params_from_dict(p), val)
            try:
                th, m = ev.choose_threshold(sv, THRESHOLDS, MAX_FALSE_ALARM_RATE)
            except ValueError:
                continue
            out.append(Choice({**p, "threshold": th}, m))
    return out


def fit_below_gate(fit: Sequence[EventFeatures], horizon: float, gate_cm: float) -> dict[str, Any]:
    """The below-gate model, fitted on the samples under ``gate_cm`` only, as raw-feature weights."""
    x, y, sw = labels(fit, horizon)
    depth = np.concatenate([f.depth_cm for f in fit if f.x.shape[0]])
    under = depth < gate_cm
    mean, scale, w, b = fit_logistic(x[under], y[under], sw[under], range(fc.N_FEATURES))
    raw = w / scale
    return {"weights": [round(float(v), 10) for v in raw], "bias": round(b - float(raw @ mean), 10)}


def first_times(t: FloatArray, s: FloatArray, thresholds: FloatArray) -> FloatArray:
    """The first time ``s`` reaches each threshold (inf where it never does)."""
    if t.size == 0:
        return np.full(thresholds.size, np.inf)
    reach = np.maximum.accumulate(s)
    k = np.searchsorted(reach, thresholds, side="left")
    out: FloatArray = np.append(t, np.inf)[np.minimum(k, t.size)]
    return out


def grid_two_paths(params: fc.NetworkParams, val: Sequence[EventFeatures]) -> tuple[int, int]:
    """Indices (main threshold, below-gate logit) of the best pair on ``val`` at the false-alarm cap.

    Every pair of ``THRESHOLDS`` × ``BELOW_GATE_LOGITS`` at once: each event's first warning per
    path and threshold, their earlier one per pair. Raises ValueError when no pair meets the cap.
    """
    th_main, th_bg = np.asarray(THRESHOLDS), np.asarray(BELOW_GATE_LOGITS)
    ge10 = np.zeros((th_main.size, th_bg.size))
    ge5 = np.zeros_like(ge10)
    alarms = np.zeros_like(ge10)
    negatives = 0
    for f in val:
        gated = f.depth_cm >= params.warn_depth_cm
        p = fc.probability(params, f.x)
        main = first_times(f.t_secs, np.where(gated, p, -1.0), th_main)
        below = first_times(f.t_secs, np.where(gated, -np.inf, fc.below_gate_logit(params, f.x)), th_bg)
        first = np.minimum(main[:, None], below[None, :])
        if f.crossing_secs is None:
            negatives += 1
            alarms += np.isfinite(first)
        else:
            ge10 += f.crossing_secs - first >= 600.0
            ge5 += f.crossing_secs - first >= 300.0
    ok = alarms <= MAX_FALSE_ALARM_RATE * negatives
    if not ok.any():
        raise ValueError("no pair of thresholds meets the false-alarm cap")
    # most warned ≥ 10 min, then ≥ 5 min, then the stricter thresholds
    key = np.where(ok, ge10 * 1e6 + ge5 * 1e3, -1.0)
    best = np.argwhere(key == key.max())[-1]
    return int(best[0]), int(best[1])


def choose_below_gate(fit: Sequence[EventFeatures], val: Sequence[EventFeatures]) -> list[Choice]:
    """Main path (every horizon, gated at the arming depth) plus a below-gate path; best pair on 2024."""
    out = []
    gate = rule.ARM_DEPTH_CM
    for horizon in HORIZON_CHOICES_SECS:
        mean, scale, w, b = fit_main(fit, horizon, range(fc.N_FEATURES))
        for bg_horizon in BELOW_GATE_HORIZONS_SECS:
            bg = {**fit_below_gate(fit, bg_horizon, gate), "label_horizon_secs": bg_horizon, "threshold_logit": 0.0}
            p = params_dict(mean, scale, w, b, 0.5, horizon, gate, bg)
            try:
                i, j = grid_two_paths(fc.params_from_dict(p), val)
            except ValueError:
                continue
            p = {**p, "threshold": THRESHOLDS[i], "below_gate": {**bg, "threshold_logit": BELOW_GATE_LOGITS[j]}}
            # the figures recorded come through the hub's own scoring, not the grid above
            m = ev.metrics_at(scored(fc.params_from_dict(p), val), THRESHOLDS[i])
            out.append(Choice(p, m))
    return out


def armed_ahead(feats: Sequence[EventFeatures], gate_cm: float, lead_secs: float) -> int:
    """Positives whose depth reached ``gate_cm`` at least ``lead_secs`` before their crossing."""
    return sum(1 for f in feats if f.crossing_secs is not None
               and bool(np.any(f.depth_cm[f.t_secs <= f.crossing_secs - lead_secs] >= gate_cm)))


def pick(single: Choice, below_gate: Sequence[Choice]) -> Choice:
    """The single path, unless a below-gate candidate warns ``BELOW_GATE_MARGIN`` of the floods more."""
    if not below_gate:
        return single
    bg = best_choice(below_gate)
    need = int(np.ceil(BELOW_GATE_MARGIN * single.validation.positives))
    return bg if bg.validation.warned_ge10 - single.validation.warned_ge10 >= need else single


def best_choice(choices: Sequence[Choice]) -> Choice:
    """Most positives warned ≥ 10 min, then ≥ 5 min, then the shorter horizon and higher warning depth."""
    return max(
        choices,
        key=lambda c: (c.validation.warned_ge10, c.validation.warned_ge5, -c.params["label_horizon_secs"],
                       c.params["warn_depth_cm"]),
    )


def curve_points(scores: Sequence[ev.EventScores]) -> list[dict[str, Any]]:
    return [{"threshold": th, **m.as_dict()} for th, m in zip(THRESHOLDS, ev.curve(scores, THRESHOLDS), strict=True)]


def best_at(curve: Sequence[dict[str, Any]], fa_cap: float) -> dict[str, Any] | None:
    """The curve's point with the most positives warned ≥ 10 min at ≤ ``fa_cap`` false alarms."""
    pts = [p for p in curve if p["false_alarm_rate"] <= fa_cap]
    return max(pts, key=lambda p: (p["warned_ge10"], p["warned_ge5"]), default=None)


def run(path: Path, events: Sequence[FloodEvent], positions: dict[str, tuple[float, float]], out_dir: Path,
        edge_card: dict[str, Any]) -> dict[str, Any]:
    """Fit on 2020–23, choose on 2024, score 2025–26 once; write the parameters, card and model card."""
    feats = replay_features(path, events, positions)
    fit = [f for f, e in zip(feats, events, strict=True) if e.year in FIT_YEARS]
    val = [f for f, e in zip(feats, events, strict=True) if e.year in VALIDATION_YEARS]
    test = [f for f, e in zip(feats, events, strict=True) if e.split is Split.TEST]
    val_events = [e for e in events if e.year in VALIDATION_YEARS]

    all_cols = range(fc.N_FEATURES)
    own_cols = [fc.FEATURE_NAMES.index(n) for n in fc.OWN_FEATURES]
    choices = choose(fit, val, all_cols)
    bg_choices = choose_below_gate(fit, val)
    chosen = pick(best_choice(choices), bg_choices)
    own_only = best_choice(choose(fit, val, own_cols))
    m_val = chosen.validation
    horizon = chosen.params["label_horizon_secs"]
    out_dir.mkdir(parents=True, exist_ok=True)
    params_path = out_dir / PARAMS_FILE
    params_path.write_text(json.dumps(chosen.params, indent=1) + "\n", encoding="utf-8")
    params = fc.load_params(params_path)
    fit_m = ev.metrics_at(scored(params, fit), params.threshold)

    # Test years: reported, never used for a choice.
    st = scored(params, test)
    card: dict[str, Any] = {
        "name": "network-warning",
        "params_file": PARAMS_FILE,
        "params_sha256": hashlib.sha256(params_path.read_bytes()).hexdigest(),
        "params_bytes": params_path.stat().st_size,
        "split": {"fit_years": sorted(FIT_YEARS), "validation_years": sorted(VALIDATION_YEARS),
                  "test_years": sorted(TEST_YEARS)},
        "validation_choices": [
            {"label_horizon_secs": c.params["label_horizon_secs"], "warn_depth_cm": c.params["warn_depth_cm"],
             "threshold": c.params["threshold"], **c.validation.as_dict()}
            for c in choices
        ],
        "validation_below_gate": [
            {"label_horizon_secs": c.params["label_horizon_secs"], "warn_depth_cm": c.params["warn_depth_cm"],
             "threshold": c.params["threshold"],
             "below_gate_horizon_secs": c.params["below_gate"]["label_horizon_secs"],
             "below_gate_threshold_logit": c.params["below_gate"]["threshold_logit"], **c.validation.as_dict()}
            for c in bg_choices
        ],
        "below_gate_margin": BELOW_GATE_MARGIN,
        "validation_armed_10min_ahead": armed_ahead(val, rule.ARM_DEPTH_CM, 600.0),
        "below_gate_chosen": chosen.params["below_gate"] is not None,
        "validation_own_features_only": {
            "label_horizon_secs": own_only.params["label_horizon_secs"],
            "warn_depth_cm": own_only.params["warn_depth_cm"],
            "threshold": own_only.params["threshold"],
            **own_only.validation.as_dict(),
        },
        "validation_rule_curve": rule_validation_curve(val_events),
        "label_horizon_secs": horizon,
        "warn_depth_cm": params.warn_depth_cm,
        "threshold": params.threshold,
        "fit": fit_m.as_dict(),
        "validation": m_val.as_dict(),
        "test": ev.metrics_at(st, params.threshold).as_dict(),
        "curve_test": curve_points(st),
    }
    card["equal_fa_test"] = equal_fa_table(card["curve_test"], edge_card)
    card["hub_cost"] = [bench(6500, 30, share, params) for share in BENCH_WET_SHARES]
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (out_dir / MD_FILE).write_text(render_markdown(card, chosen.params, edge_card), encoding="utf-8")
    return card


def rule_validation_curve(events: Sequence[FloodEvent]) -> list[dict[str, Any]]:
    """The edge rule's curve on the validation year (by horizon), to compare choices made there."""
    from edge.inference import report

    rs = report.rule_scored(events)
    return report.rule_curve(rs)


def equal_fa_table(net_curve: Sequence[dict[str, Any]], edge_card: dict[str, Any]) -> list[dict[str, Any]]:
    """At each false-alarm cap: the best ≥ 10 min point of the network, the rule and the edge model."""
    rule_curve = edge_card["rule"]["curve_test"]
    shipped = edge_card["shipped_variant"]
    model_curve = edge_card["models"][shipped]["curve_test"]
    rows = []
    for cap in FA_CAPS:
        row: dict[str, Any] = {"fa_cap": cap}
        for name, curve in (("network", net_curve), ("rule", rule_curve), ("edge_model", model_curve)):
            p = best_at(curve, cap)
            row[name] = None if p is None else {k: p[k] for k in ("warned_ge10", "positives", "false_alarm_rate")}
        rows.append(row)
    return rows


# --- the human card ------------------------------------------------------------------------

_HEAD = (
    "| policy | false alarms | warned ≥ 5 min | warned ≥ 10 min | median lead (min) | p25 | p10 |\n"
    "|---|---|---|---|---|---|---|"
)


def _row(label: str, m: dict[str, Any]) -> str:
    return (
        f"| {label} | {m['false_alarm_rate']:.4f} ({m['false_alarms']}/{m['negatives']}) "
        f"| {m['share_ge5']:.4f} ({m['warned_ge5']}/{m['positives']}) "
        f"| {m['share_ge10']:.4f} ({m['warned_ge10']}/{m['positives']}) "
        f"| {m['median_lead_min']:.2f} | {m['p25_lead_min']:.2f} | {m['p10_lead_min']:.2f} |"
    )


def _cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return "—"
    share = p["warned_ge10"] / p["positives"]
    return f"{share:.3f} ({p['warned_ge10']}/{p['positives']}, FA {p['false_alarm_rate']:.3f})"


def _beats(row: dict[str, Any]) -> bool:
    net = row["network"]
    if net is None:
        return False
    others = [row[k]["warned_ge10"] for k in ("rule", "edge_model") if row[k] is not None]
    return all(net["warned_ge10"] > o for o in others)


def _bg_gain(card: dict[str, Any]) -> int:
    """How many more 2024 floods the best below-gate candidate warned ≥ 10 min than the best single path."""
    single = max((c["warned_ge10"] for c in card["validation_choices"]), default=0)
    bg = max((c["warned_ge10"] for c in card["validation_below_gate"]), default=single)
    return int(bg - single)


def render_markdown(card: dict[str, Any], params: dict[str, Any], edge_card: dict[str, Any]) -> str:
    t = card["test"]
    target_met = t["false_alarm_rate"] <= MAX_FALSE_ALARM_RATE and t["share_ge10"] >= 0.5
    at8 = next(r for r in card["equal_fa_test"] if r["fa_cap"] == 0.08)
    verdict = (
        f"**Target met on the test years**: {t['share_ge10']:.1%} of floods warned ≥ 10 min ahead at "
        f"{t['false_alarm_rate']:.1%} false alarms (target ≥ 50 % at ≤ 8 %)."
        if target_met
        else f"**Target not met on the test years**: at its operating point (chosen on 2024) the network "
        f"model warns {t['share_ge10']:.1%} of floods ({t['warned_ge10']}/{t['positives']}) ≥ 10 min ahead "
        f"at {t['false_alarm_rate']:.1%} false alarms ({t['false_alarms']}/{t['negatives']}); the target is "
        "≥ 50 % at ≤ 8 %. Across its curve, the best point at ≤ 8 % false alarms warns "
        f"{_cell(at8['network'])}."
    )
    above = [r["fa_cap"] for r in card["equal_fa_test"] if _beats(r)]
    below = [r["fa_cap"] for r in card["equal_fa_test"] if r["network"] is not None and not _beats(r)]
    verdict += (
        " At equal false-alarm caps on the test years (table below) the network curve warns more floods "
        f"≥ 10 min than both the edge rule and the edge model at caps {', '.join(f'{c:.0%}' for c in above) or 'none'}"
        f", and not more at {', '.join(f'{c:.0%}' for c in below) or 'none'}."
    )
    lines = [
        "# Network early warning (hub) — model card",
        "",
        "Generated by `jikimi model train network` from `network_warning_card.json`; the parameters the "
        "hub loads are `network_warning.json` (numpy only, `hub/forecast.py`).",
        "",
        "## Verdict",
        "",
        verdict,
        "",
        "## Task and data",
        "",
        "- Data: NYC FloodNet street-flood events and sensor locations (`../shared/data/floodnet-nyc/`, "
        "NYC Open Data terms; read at run time, never copied).",
        "- Same task and definitions as `flood_rise.md` (lead time to the first ≥ 15 cm sample, false alarm "
        "= any warning in an event that stays below; `edge/inference/evaluate.py`).",
        "- Replay: every sample of all 2,256 events, all sensors together, in real time order; at each "
        "sample the site's features are read from the network state at that instant (the hub's own "
        "`NetworkForecaster`). A sensor's state outside FloodNet events is unknown (the data holds events "
        "only), so the network is what the events show.",
        f"- Features ({len(params['features'])}): {', '.join(params['features'])} — see `hub/forecast.py`.",
        f"- Model: logistic regression, L2 {L2}, Newton's method, numpy only. Split (binding): fit on "
        f"{card['split']['fit_years']} (each event's samples weigh the same in all), label horizon "
        f"({', '.join(f'{h / 60:.0f}' for h in HORIZON_CHOICES_SECS)} min), warning depth (the model may "
        f"warn only at or above it: {', '.join(f'{d:g}' for d in WARN_DEPTH_CHOICES_IN)} in) and threshold chosen on "
        f"{card['split']['validation_years']} at ≤ {MAX_FALSE_ALARM_RATE:.0%} false alarms; test "
        f"{card['split']['test_years']} reported.",
        "- Also tried on 2024: a second, below-gate path so the network could warn a site before its own "
        "depth reaches the warning depth — its own logistic model fitted on the samples under 4 in "
        f"(label horizon {', '.join(f'{h / 60:.0f}' for h in BELOW_GATE_HORIZONS_SECS)} min) and its own "
        f"threshold on its logit ({BELOW_GATE_LOGITS[0]:g}–{BELOW_GATE_LOGITS[-1]:g}), the pair of thresholds "
        "chosen together. Rule fixed before scoring: it ships only if it warns at least "
        f"{card['below_gate_margin']:.0%} of 2024's floods more than the best single path (it adds a second "
        "threshold chosen on the same year; one or two floods is noise).",
        f"- Chosen: {'main path plus the below-gate path' if card['below_gate_chosen'] else 'the main path only'}"
        f", label horizon {card['label_horizon_secs'] / 60:.0f} min, warning depth "
        f"{card['warn_depth_cm']:.2f} cm, threshold {card['threshold']}"
        + (f", below-gate logit threshold {params['below_gate']['threshold_logit']}" if params.get("below_gate")
           else "") + ".",
        "",
        "## Test years (2025–2026): operating point",
        "",
        _HEAD,
        _row(f"network model (threshold {card['threshold']})", t),
        _row(f"edge rule ({edge_card['rule']['horizon_secs'] / 60:.0f} min, from flood_rise.json)",
             edge_card["rule"]["test"]),
        _row(f"edge model {edge_card['shipped_variant']} (from flood_rise.json)",
             edge_card["models"][edge_card["shipped_variant"]]["test"]),
        "",
        "## Test years: at equal false-alarm rates, across the curve",
        "",
        "For each cap: the point of each method's test-year curve with the most floods warned ≥ 10 min "
        "at no more false alarms (network: thresholds 0.01–0.99; rule: horizons 1–20 min; edge model: "
        "thresholds 0.05–0.95, as `flood_rise.md` records them). This shows the curves, not operating "
        "points anyone could have chosen on these years.",
        "",
        "| false alarms ≤ | network | edge rule | edge model |",
        "|---|---|---|---|",
        *(
            f"| {r['fa_cap']:.2f} | {_cell(r['network'])} | {_cell(r['rule'])} | {_cell(r['edge_model'])} |"
            for r in card["equal_fa_test"]
        ),
        "",
        "## Where the choices were made",
        "",
        _HEAD,
        _row("network, fit 2020–2023", card["fit"]),
        _row("network, validation 2024", card["validation"]),
        "",
        "Everything tried on 2024 (each with its best threshold at ≤ 8 % false alarms); the same "
        "model on the site's own features only; and the edge rule's curve on 2024:",
        "",
        _HEAD,
        *(_row(f"horizon {c['label_horizon_secs'] / 60:.0f} min, warn ≥ {c['warn_depth_cm']:.2f} cm "
               f"(threshold {c['threshold']})", c)
          for c in card["validation_choices"]),
        *(_row(f"horizon {c['label_horizon_secs'] / 60:.0f} min, warn ≥ {c['warn_depth_cm']:.2f} cm "
               f"(threshold {c['threshold']}) + below-gate path, horizon "
               f"{c['below_gate_horizon_secs'] / 60:.0f} min (logit ≥ {c['below_gate_threshold_logit']:g})", c)
          for c in card["validation_below_gate"]),
        _row(f"own features only: horizon {card['validation_own_features_only']['label_horizon_secs'] / 60:.0f} "
             f"min, warn ≥ {card['validation_own_features_only']['warn_depth_cm']:.2f} cm",
             card["validation_own_features_only"]),
        *(_row(f"edge rule, 2024, horizon {p['horizon_min']} min", p) for p in card["validation_rule_curve"]),
        "",
        "## Network model curve, test years",
        "",
        _HEAD,
        *(_row(f"{p['threshold']:.2f}", p) for p in card["curve_test"][::5]),
        "",
        "## Files",
        "",
        "| file | bytes | SHA-256 |",
        "|---|---|---|",
        f"| `{card['params_file']}` | {card['params_bytes']} | `{card['params_sha256']}` |",
        "",
        "## Disclosure and limits",
        "",
        "- Looked at on the test years before this model: the issue's own statistic (110 of 201 test "
        "floods, 229 of 829 non-floods, had another sensor cross 15 cm 10–120 min before), which "
        "motivated the crossing features and their 2-hour window. The feature set, distance and age "
        "scales were fixed before any test-year scoring.",
        "- **The test years have now been scored three times for this model.** Twice before, with its "
        "first policy (label horizon 30 min, warning depth 4 in, threshold 0.58: 77/201 floods warned "
        "≥ 10 min at 56/829 false alarms, the figures this card showed then); the third time by the "
        "command that wrote this card, after the policy above was chosen on 2024 alone (the longer "
        "label horizons, the below-gate path and the exploratory models below were judged on 2024 only; "
        "nothing was computed on 2025–2026 until that choice was fixed and committed).",
        "- Development was iterated on the 2024 validation year (a slope-scaling bug found and fixed, "
        "per-event sample weights, the interaction terms, the candidate grids, the below-gate path and "
        "the exploratory models below), which is also where the operating point was chosen: the 2024 "
        "figures are optimistic.",
        "- Exploratory, on 2024 only, not reproduced by this command (scripts outside the repository, "
        "fit 2020–2023, best point at ≤ 8 % false alarms, 247 floods): a one-hidden-layer tanh net "
        "(8, 16, 32 units, two seeds each, fitted on all samples or on armed ones, 30 min horizon) "
        "warned 64–98 ≥ 10 min, never more than the logistic model; extra network-state features (wet "
        "sites within 1 km and 3 km, the share of the city's sensors wet now, the age of the nearest "
        "crossing within 3 km) lowered the main path to 74 and, in a below-gate path, warned 100 "
        "against 99 without a second path; the site's own history (share of its past events that "
        "crossed 15 cm, its number of past events, days since its last crossing) with FloodNet-only "
        "terms (sensors in an event nearby and city-wide, time since the event began), in a below-gate "
        "path: 100 (the history alone separates weakly: 25 % of 2024's floods and 13 % of its "
        "non-floods had a past share ≥ 0.5). None was kept.",
        "- FloodNet holds events only: between events a sensor's depth is unknown, and a storm that wets "
        "no sensor is invisible. A hub with continuous readings sees more (dry sensors are known dry).",
        "- Positions are NYC's; distance scales (1.5 km, 8 km) and the age scale (40 min) are NYC street "
        "scales. Re-fit on a city's own records before trusting the lead times there.",
        "- The warning depth chosen on 2024 is the edge rule's arming depth (4 in): the network terms "
        "move the threshold for a site that is already wet; on 2024 no choice that lets the network warn "
        "a dry site (warning depth 0–3 in) came close, and the best below-gate path added "
        f"{_bg_gain(card)} flood(s) ≥ 10 min over the best single path. "
        + ("The hub can warn a site before its own depth reaches 4 in through the below-gate path."
           if card["below_gate_chosen"] else
           "The hub does not warn a site before its own depth rises with this policy.")
        + " What limits it is the data: FloodNet holds events only, so every sample is already an event "
        "(a sensor reading water), and below 4 in a flood's early samples and a non-flood's look alike "
        "to these features, neighbours included. Of 2024's "
        f"{card['validation']['positives']} floods, {card['validation_armed_10min_ahead']} had reached 4 in "
        "at least 10 min before crossing 15 cm: the ceiling of any policy gated at 4 in.",
        "- On 2024 the same fitting on the site's own features alone (the edge's view, same model "
        f"class) warned {card['validation_own_features_only']['warned_ge10']}/"
        f"{card['validation_own_features_only']['positives']} ≥ 10 min against "
        f"{card['validation']['warned_ge10']}/{card['validation']['positives']} with the network terms.",
        "",
        "## Reproduce",
        "",
        "```",
        "jikimi model train network --out firmware-configs/models     # writes these three files (~1 min)",
        "jikimi model warnings network --events ../shared/data/floodnet-nyc/flood-events.csv --out w.csv",
        "jikimi bench network --sites 6500 --minutes 30 --wet-share 0.2",
        "```",
        "",
        "Hub cost, measured when this card was written (`lab.netwarn.bench`, the same as `jikimi bench "
        "network`): 6,500 sites over a 40 × 40 km square, one sample per site per minute, then every "
        "site scored; cost grows with sites × (crossed ∪ wet sites). Distances come from one matrix "
        "product of unit vectors per minute (hub/forecast.py); a radius index would not shrink the work "
        "here, as the 8 km city kernel reaches across a 40 km city.",
        "",
        "| share of sites flooding | minutes | median s / minute | worst s / minute |",
        "|---|---|---|---|",
        *(f"| {b['wet_share']:.2f} | {b['minutes']} | {b['median_secs_per_minute']:.3f} | "
          f"{b['max_secs_per_minute']:.3f} |" for b in card.get("hub_cost", [])),
        "",
    ]
    return "\n".join(lines)


# --- the hub's cost ------------------------------------------------------------------------


def bench(n_sites: int, minutes: int, wet_share: float, params: fc.NetworkParams, seed: int = 1) -> dict[str, Any]:
    """Seconds per minute of data for ``n_sites``: one sample per site, then every site scored.

    Sites are spread over a 40 × 40 km square; ``wet_share`` of them carry a rising flood (so the
    network terms see many wet and crossed sites, the expensive case). Reports the median and
    the worst minute; the clock is read here, in the lab, never in :mod:`hub.forecast`.
    """
    import time

    rng = np.random.default_rng(seed)
    sites = [f"s{i}" for i in range(n_sites)]
    lat = 37.3 + rng.uniform(0.0, 0.36, n_sites)
    lon = 127.0 + rng.uniform(0.0, 0.45, n_sites)
    net = fc.NetworkForecaster(sites, {s: (float(a), float(b)) for s, a, b in zip(sites, lat, lon, strict=True)},
                               params.closing_depth_cm, params.arm_depth_cm)
    wet = rng.random(n_sites) < wet_share
    rate = rng.uniform(0.2, 1.5, n_sites)
    per_minute = []
    for m in range(minutes):
        t = 60.0 * m
        depth = np.where(wet, rate * m, rng.uniform(0.0, 0.5, n_sites))
        t0 = time.perf_counter()
        for s, d in zip(sites, depth.tolist(), strict=True):
            net.observe(s, t, d)
        fc.warns(params, net.features(t))
        per_minute.append(time.perf_counter() - t0)
    arr = np.asarray(per_minute)
    return {
        "sites": n_sites,
        "minutes": minutes,
        "wet_share": wet_share,
        "median_secs_per_minute": round(float(np.median(arr)), 4),
        "max_secs_per_minute": round(float(arr.max()), 4),
    }
