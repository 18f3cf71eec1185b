"""``jikimi model train|warnings``: train the flood forecaster; replay events through the edge path."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import InferenceError
from shared.cli import Cli

if TYPE_CHECKING:  # numpy and LiteRT load only when a model command runs (not in `edge run`)
    from edge.inference.events import FloodEvent
    from edge.inference.flood import FloodForecaster

_GROUP_HELP = "Local-inference models: train them, replay events through them."


def register(cli: Cli) -> None:
    p = cli.subcommand(
        "model",
        "train",
        "Train a model (needs the 'train' extra: TensorFlow).",
        _train,
        group_help=_GROUP_HELP,
    )
    cli.kind_argument("model", "train", ["flood"], "which model")
    p.add_argument("--events", type=Path, default=None, help="FloodNet events CSV (default: the reference data)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the .tflite files and card (default: firmware-configs/models)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the card's)")

    w = cli.subcommand(
        "model",
        "warnings",
        "Replay every event of a FloodNet-format CSV through the edge's forecaster and write "
        "event_row_index,warning_time_secs (first close decision, seconds from the event start).",
        _warnings,
        group_help=_GROUP_HELP,
    )
    cli.kind_argument("model", "warnings", ["flood"], "which model")
    w.add_argument("--events", type=Path, required=True, help="FloodNet-format events CSV")
    w.add_argument("--out", type=Path, required=True, help="CSV to write")
    w.add_argument("--card", type=Path, default=None, help="model card JSON (default: shipped)")
    w.add_argument(
        "--variant", choices=["float", "int8"], default=None, help="model file (default: the card's shipped variant)"
    )
    w.add_argument(
        "--policy", choices=["model", "rule"], default=None, help="who decides (default: the card's in_charge)"
    )

    sl = cli.subcommand(
        "model",
        "slope",
        "Score the slope-acceleration detector: Lamosano test years (real) and Voight-law "
        "synthetic failures; prints JSON.",
        _slope,
        group_help=_GROUP_HELP,
    )
    sl.add_argument("--series", type=int, default=20, help="synthetic series (default 20)")


def _train(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("tensorflow") is None:
        raise InferenceError("training needs TensorFlow: pip install -e '.[train]' in a separate venv")
    from edge.inference import train
    from edge.inference.events import floodnet_csv, load_events
    from shared.paths import models_dir

    events = load_events(args.events or floodnet_csv())
    out = args.out or models_dir()
    seed = train.SEED if args.seed is None else args.seed
    card = train.run(events, out, seed)
    print(f"in charge: {card['in_charge']}; card and models written to {out}")
    return 0


def first_close_secs(forecaster: FloodForecaster, event: FloodEvent) -> float | None:
    from edge.inference.decision import should_close

    """Replay one event sample by sample; the time of the edge's first close decision."""
    forecaster.reset()
    for t, d in zip(event.t_secs.tolist(), event.depth_cm.tolist(), strict=True):
        if should_close(d, forecaster.update(t, d).warns):
            return float(t)
    return None


def _warnings(args: argparse.Namespace) -> int:
    from edge.inference.events import load_events
    from edge.inference.flood import FloodForecaster, Policy, default_card_path

    events = load_events(args.events)
    forecaster = FloodForecaster(
        args.card or default_card_path(),
        variant=args.variant,
        policy=Policy(args.policy) if args.policy else None,
    )
    try:
        rows = [(e.row_index, first_close_secs(forecaster, e)) for e in events]
    finally:
        forecaster.close()
    write_warnings(args.out, rows)
    print(f"{len(rows)} events; model {forecaster.health.value}; decided by {forecaster.policy.value}")
    return 0


def write_warnings(path: Path, rows: list[tuple[int, float | None]]) -> None:
    """The per-event warning CSV: ``event_row_index,warning_time_secs`` (empty: never warned)."""
    try:
        with path.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["event_row_index", "warning_time_secs"])
            for idx, secs in rows:
                out.writerow([idx, _format_secs(secs)])
    except OSError as exc:
        raise InferenceError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _format_secs(secs: float | None) -> str:
    if secs is None:
        return ""
    return str(int(secs)) if secs.is_integer() else repr(secs)


def _slope(args: argparse.Namespace) -> int:
    from edge.inference import slope_eval

    if args.series < 1:
        raise InferenceError("--series must be at least 1")
    result = {
        "lamosano": slope_eval.lamosano_report(),
        "synthetic": slope_eval.synthetic_report(n_series=args.series),
    }
    print(json.dumps(result, indent=1, default=str))
    return 0
