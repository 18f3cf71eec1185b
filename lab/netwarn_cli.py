"""``jikimi model train network`` and ``jikimi model warnings network``: the hub's network forecaster, offline.

The verbs are the edge's (``edge.inference.cli``); the ``network`` kind is added here because
it needs both the edge's evaluation and the hub's forecaster, and only the lab may import both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import InferenceError
from shared.cli import Cli


def register(cli: Cli) -> None:
    t = cli.add_kind("model", "train", "network", _train)
    t.add_argument("--sensors", type=Path, default=None,
                   help="network only: FloodNet sensor-metadata CSV (default: the reference data)")
    w = cli.add_kind("model", "warnings", "network", _warnings)
    w.add_argument("--params", type=Path, default=None,
                   help="network only: parameter file (default: the shipped network_warning.json)")
    w.add_argument("--sensors", type=Path, default=None,
                   help="network only: FloodNet sensor-metadata CSV (default: the reference data)")


    b = cli.subcommand("bench", "network",
                       "the hub's network forecaster: seconds per minute of data for N sites (synthetic storm)",
                       _bench)
    b.add_argument("--sites", type=int, default=6500)
    b.add_argument("--minutes", type=int, default=30)
    b.add_argument("--wet-share", type=float, default=0.2, help="share of sites flooding (default 0.2)")
    b.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures here")
    b.add_argument("--params", type=Path, default=None, help="parameter file (default: the shipped one)")


def _bench(args: argparse.Namespace) -> int:
    from hub import forecast
    from lab import netwarn
    from shared.paths import models_dir

    if not 1 <= args.sites <= 100_000 or not 1 <= args.minutes <= 1440 or not 0.0 <= args.wet_share <= 1.0:
        raise InferenceError("--sites 1..100000, --minutes 1..1440, --wet-share 0..1")
    params = forecast.load_params(args.params or models_dir() / netwarn.PARAMS_FILE)
    result = netwarn.bench(args.sites, args.minutes, args.wet_share, params)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        try:
            args.json.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise InferenceError(f"{args.json}: cannot write: {exc.strerror or exc}") from exc
    return 0


def _flood_only(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(args, name, None) is not None:
            raise InferenceError(f"--{name}: applies to the flood model only, not to network")


def _train(args: argparse.Namespace) -> int:
    from edge.inference.events import floodnet_csv, load_events
    from lab import netwarn
    from shared.paths import models_dir

    _flood_only(args, ("seed",))
    events_path = args.events or floodnet_csv()
    events = load_events(events_path)
    positions = netwarn.load_positions(args.sensors or netwarn.sensor_metadata_csv())
    out = args.out or models_dir()
    edge_card_path = models_dir() / "flood_rise.json"
    try:
        edge_card = json.loads(edge_card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{edge_card_path}: cannot read the edge model's card: {exc}") from exc
    card = netwarn.run(events_path, events, positions, out, edge_card)
    t = card["test"]
    print(f"test years: {t['warned_ge10']}/{t['positives']} warned >= 10 min at "
          f"{t['false_alarm_rate']:.4f} false alarms; written to {out}")
    return 0


def _warnings(args: argparse.Namespace) -> int:
    from edge.inference.cli import write_warnings
    from edge.inference.events import load_events
    from hub import forecast
    from lab import netwarn
    from shared.paths import models_dir

    _flood_only(args, ("card", "variant", "policy"))
    events = load_events(args.events)
    positions = netwarn.load_positions(args.sensors or netwarn.sensor_metadata_csv())
    params = forecast.load_params(args.params or models_dir() / netwarn.PARAMS_FILE)
    rows = netwarn.warning_times(args.events, events, params, positions)
    write_warnings(args.out, rows)
    print(f"{len(rows)} events; network model, threshold {params.threshold}")
    return 0

