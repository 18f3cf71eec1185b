"""The province's commands: ``jikimi province run --config FILE`` and
``jikimi province request --config FILE --city C --action block|evacuate --area A --reason R --by NAME``."""

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


def _request(args: argparse.Namespace) -> int:
    """Store a request for the running provincial hub to send (province/store.py rule 6)."""
    import time

    from province.config import load
    from province.errors import ProvinceRequestError
    from province.store import ProvinceStore

    cfg = load(args.config)
    store = ProvinceStore(cfg.db_path, ingest_cfg=cfg.ingest)
    try:
        req = store.add_request(args.city, args.action, args.area, args.reason, args.by, time.time(), args.ttl_s)
    except ProvinceRequestError as exc:
        print(f"refused: {exc}")
        return 1
    finally:
        store.close()
    print(f"request {req.request_id}: {req.action} {req.area} in {req.city}, until {time.ctime(req.not_after)}")
    return 0


def register(cli: Cli) -> None:
    p = cli.subcommand("province", "run", "run the provincial hub: every city's stream into one store", _run,
                       group_help="the provincial tier: federation of city hubs")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--log-level", default="INFO")
    q = cli.subcommand("province", "request", "ask a city hub to block or evacuate an area (its operators decide)",
                       _request)
    q.add_argument("--config", type=Path, required=True)
    q.add_argument("--city", required=True)
    q.add_argument("--action", choices=["block", "evacuate"], required=True)
    q.add_argument("--area", required=True)
    q.add_argument("--reason", required=True)
    q.add_argument("--by", required=True, help="the provincial operator asking")
    q.add_argument("--ttl-s", type=float, default=1800.0, help="the city refuses it undecided after this long")
