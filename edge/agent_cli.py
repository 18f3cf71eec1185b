"""``jikimi edge run --config FILE``: the edge agent's entry point."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from edge.agent import run_agent
from edge.config import load_site_config
from shared import logs
from shared.cli import Cli


def _run(args: argparse.Namespace) -> int:
    cfg = load_site_config(args.config)  # every config error stops here, naming file and key
    logs.setup(args.log_level)
    asyncio.run(run_agent(cfg))
    return 0


def _check(args: argparse.Namespace) -> int:
    cfg = load_site_config(args.config)
    print(f"{args.config}: ok — site {cfg.site.id}, {len(cfg.devices)} device(s), hub {cfg.hub.host}:{cfg.hub.port}")
    return 0


def register(cli: Cli) -> None:
    g = "the edge agent (one per site, a systemd service)"
    p = cli.subcommand("edge", "run", "run the edge agent of one site", _run, group_help=g)
    p.add_argument("--config", type=Path, required=True, help="the site config (TOML)")
    p.add_argument("--log-level", default="INFO")
    p = cli.subcommand("edge", "check", "validate a site config and its profiles, then exit", _check)
    p.add_argument("--config", type=Path, required=True)
