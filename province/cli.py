"""The province's commands: ``jikimi province run --config FILE``."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.cli import Cli


def _run(args: argparse.Namespace) -> int:
    from province.config import load
    from province.service import main
    from shared import logs

    cfg = load(args.config)
    logs.setup(args.log_level)
    return main(cfg)


def register(cli: Cli) -> None:
    p = cli.subcommand("province", "run", "run the provincial hub: every city's stream into one store", _run,
                       group_help="the provincial tier: federation of city hubs")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--log-level", default="INFO")
