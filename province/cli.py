"""The province's commands: ``jikimi province run --config FILE``, ``jikimi province user
add|passwd|disable`` (the provincial operators' accounts: hub/auth.py's code on the province's
file, audited in its hash chain) and ``jikimi province request --config FILE --city C --action
block|evacuate --area A --reason R --by NAME`` (a request the running service sends to the city)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli import Cli


def _run(args: argparse.Namespace) -> int:
    from province.config import load
    from province.service import main
    from shared import instance, logs

    cfg = load(args.config)
    logs.setup(args.log_level)
    with instance.hold(instance.beside(cfg.db_path), "provincial hub"):  # one per database
        return main(cfg)


def _request(args: argparse.Namespace) -> int:
    """Store a request for the running provincial hub to send (province/store.py rule 6)."""
    import time

    from province.config import load
    from province.errors import ProvinceRequestError
    from province.store import ProvinceStore
    from shared.messages import Operation

    cfg = load(args.config)
    store = ProvinceStore(cfg.db_path, ingest_cfg=cfg.ingest)
    try:
        req = store.add_request(args.city, Operation(args.action), args.area, args.reason, args.by, time.time(),
                                args.ttl_s)
    except ProvinceRequestError as exc:
        print(f"refused: {exc}")
        return 1
    finally:
        store.close()
    print(f"request {req.request_id}: {req.action} {req.area} in {req.city}, until {time.ctime(req.not_after)}")
    return 0


def _db(args: argparse.Namespace) -> Path:
    from province.config import load

    return load(args.config).db_path


def _user_add(args: argparse.Namespace) -> int:
    from hub import auth
    from hub.cli import _password
    from hub.roles import Role
    from province.store import connect

    auth.add_user(_db(args), args.username, Role(args.role), _password(args), opener=connect)
    print(f"user {args.username} added ({args.role})")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    from hub import auth
    from hub.cli import _password
    from province.store import connect

    auth.set_password(_db(args), args.username, _password(args), opener=connect)
    print(f"password of {args.username} changed; their sessions ended")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    from hub import auth
    from province.store import connect

    auth.disable_user(_db(args), args.username, opener=connect)
    print(f"user {args.username} disabled; their sessions ended")
    return 0


def _user_usage(args: argparse.Namespace) -> int:
    print("usage: jikimi province user add|passwd|disable ...", file=sys.stderr)
    return 2


def register(cli: Cli) -> None:
    from hub.roles import Role
    from shared.messages import Operation

    p = cli.subcommand("province", "run", "run the provincial hub: every city's stream into one store", _run,
                       group_help="the provincial tier: federation of city hubs")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--log-level", default="INFO")
    q = cli.subcommand("province", "request", "ask a city hub to block or evacuate an area (its operators decide)",
                       _request)
    q.add_argument("--config", type=Path, required=True)
    q.add_argument("--city", required=True)
    q.add_argument("--action", choices=[o.value for o in Operation], required=True)
    q.add_argument("--area", required=True)
    q.add_argument("--reason", required=True)
    q.add_argument("--by", required=True, help="the provincial operator asking")
    q.add_argument("--ttl-s", type=float, default=1800.0, help="the city refuses it undecided after this long")

    p = cli.subcommand("province", "user", "manage provincial operator accounts (add, passwd, disable)",
                       _user_usage)
    users = p.add_subparsers(dest="user_command", metavar="ACTION")
    a = users.add_parser("add", help="add an operator account", description="add an operator account")
    a.set_defaults(handler=_user_add)
    a.add_argument("--config", type=Path, required=True, help="the province's config file (its database)")
    a.add_argument("--username", required=True)
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw = users.add_parser("passwd", help="set a password (ends the user's sessions)",
                          description="set a password (ends the user's sessions)")
    pw.set_defaults(handler=_user_passwd)
    pw.add_argument("--config", type=Path, required=True, help="the province's config file (its database)")
    pw.add_argument("--username", required=True)
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    d = users.add_parser("disable", help="disable an account (ends its sessions)",
                         description="disable an account (ends its sessions)")
    d.set_defaults(handler=_user_disable)
    d.add_argument("--config", type=Path, required=True, help="the province's config file (its database)")
    d.add_argument("--username", required=True)
