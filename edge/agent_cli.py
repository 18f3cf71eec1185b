"""``jikimi edge run --config FILE``: the edge agent's entry point.

The agent is a long-lived process on a small box, so its entry point keeps what it loads to
what the runtime path uses (issue 17, measured with ``jikimi bench edge``):

- :data:`AGENT_ENV` is the process environment the agent runs with; the systemd unit
  (provisioning/units.py) and ``bench edge`` both read it, so the benchmark measures the agent
  as the unit runs it. The thread counts are also set here, before numpy loads, for an agent
  started by hand; ``MALLOC_ARENA_MAX`` only takes effect from the environment at exec.
- The agent's modules are imported only once ``edge run`` is chosen, after the environment is
  set, and ``jikimi edge run`` imports no other package's commands (shared/cli.py).
- dnspython is kept out: paho-mqtt imports it when present, only for ``connect_srv`` (DNS SRV
  discovery), which the agent never uses; it costs ~6 MB of RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Final

from shared.cli import Cli

AGENT_ENV: Final[dict[str, str]] = {
    # numpy's OpenBLAS and any OpenMP runtime start one thread per core, each with its own buffers;
    # the flood model is a 2-layer network run by LiteRT on one thread.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    # glibc gives each thread that allocates its own 64 MB arena (the LiteRT worker, the asyncio
    # default executor); two arenas keep freed memory reusable across them.
    "MALLOC_ARENA_MAX": "2",
}
"""The agent's process environment: the systemd unit's ``Environment=`` lines and ``bench edge``."""

UNUSED_MODULES: Final = ("dns", "dns.resolver")
"""Optional imports of the agent's libraries that its runtime path never uses."""


def prepare_process() -> None:
    """Set :data:`AGENT_ENV` (where not already set) and keep :data:`UNUSED_MODULES` out.

    Call before the agent's modules are imported. A ``None`` entry in ``sys.modules`` makes
    ``import dns.resolver`` raise ImportError, which paho-mqtt takes as "no DNS SRV support".
    """
    for key, value in AGENT_ENV.items():
        os.environ.setdefault(key, value)
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    prepare_process()
    from edge.agent import run_agent
    from edge.config import load_site_config
    from edge.outbox import LOCK_FILE
    from shared import instance, logs

    cfg = load_site_config(args.config)  # every config error stops here, naming file and key
    logs.setup(args.log_level)
    with instance.hold(cfg.state_dir / LOCK_FILE, "edge agent"):  # one agent per outbox
        asyncio.run(run_agent(cfg))
    return 0


def _check(args: argparse.Namespace) -> int:
    from edge.config import load_site_config

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
