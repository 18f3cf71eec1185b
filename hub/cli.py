"""``jikimi hub init|run|user``, ``jikimi audit verify`` and ``jikimi bench ingest``."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hub.errors import HubError, Refused
from hub.roles import Role
from shared.cli import Cli

if TYPE_CHECKING:
    from hub.config import HubConfig


def _config(path: Path) -> HubConfig:
    from hub.config import load

    return load(path)


def _db(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    if args.config is not None:
        return Path(_config(args.config).db_path)
    raise Refused("say which database: --config FILE or --db FILE")


def _run(args: argparse.Namespace) -> int:
    from hub.service import main
    from shared import instance, logs

    cfg = _config(args.config)
    logs.setup(args.log_level)
    with instance.hold(instance.beside(cfg.db_path), "hub"):  # one hub per database
        return main(cfg)


def _init(args: argparse.Namespace) -> int:
    from hub import auth, initconfig

    out: Path = args.out
    db = str(args.db.resolve()) if args.db is not None else initconfig.DEFAULT_DB
    p = initconfig.plan(city=args.city, pki_dir=args.pki, registry=args.sites, broker=args.broker,
                        api_listen=args.api_listen, db=db)
    if args.admin is not None:
        auth.check_username(args.admin)
    text = initconfig.render(p, args.city)
    initconfig.check(text, out)  # what 'hub run --config' will do with it: refuse here, not there
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    if os.path.lexists(out) and not args.force:
        raise Refused(f"{out} exists; give --force to overwrite it")
    db_path = Path(db) if Path(db).is_absolute() else out.parent / db
    password = None
    if args.admin is not None:
        password = secrets.token_urlsafe(15)
        auth.add_user(db_path, args.admin, Role.ADMIN, password)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    except OSError as exc:
        raise Refused(f"{out}: cannot write the hub config: {exc}") from exc
    print(f"{out}: hub config for {p.hub_id} with {len(p.sites)} site(s); start it with "
          f"'jikimi hub run --config {out}'")
    if password is not None:
        print(f"admin account {args.admin}, password (shown once): {password}")
    else:
        print(f"no operator accounts: add one with 'jikimi hub user add --config {out} --username NAME --role admin'")
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise Refused("the passwords differ")
    return first


def _user_add(args: argparse.Namespace) -> int:
    from hub import auth

    auth.add_user(_db(args), args.username, Role(args.role), _password(args))
    print(f"user {args.username} added ({args.role})")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    from hub import auth

    auth.set_password(_db(args), args.username, _password(args))
    print(f"password of {args.username} changed; their sessions ended")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    from hub import auth

    auth.disable_user(_db(args), args.username)
    print(f"user {args.username} disabled; their sessions ended")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from hub import anchor, audit
    from shared.signing import load_public_key

    db = Path(args.db)
    checkpoints = args.checkpoints
    if checkpoints is not None and args.key is None:
        raise Refused("--checkpoints needs --key: the public key that signs them")
    if args.key is not None and checkpoints is None:
        checkpoints = anchor.default_checkpoints(db)
    key = load_public_key(args.key) if args.key is not None else None
    try:
        if key is None:
            n = audit.verify(db)
        else:
            n, cps = anchor.verify(db, checkpoints, key)
    except HubError as exc:
        print(f"BROKEN: {exc}")
        return 1
    if key is None:
        print(f"ok: {n} rows, chain intact")
        if anchor.default_checkpoints(db).is_file():
            print(f"note: {anchor.default_checkpoints(db)} not checked; give --key to check for cut rows")
    else:
        print(f"ok: {n} rows, chain intact; {cps} checkpoints hold")
    return 0


def _db_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", type=Path, help="the hub's config file (its database)")
    g.add_argument("--db", type=Path, help="the hub's database file")


def register(cli: Cli) -> None:
    g = "the hub: ingest, alarms, commands, operators"
    p = cli.subcommand("hub", "init", "write a commented hub config for a city from the PKI and the site registry",
                       _init, group_help=g)
    p.add_argument("--city", required=True, help="the city's name: the hub is hub-CITY (a-z, 0-9, '-')")
    p.add_argument("--pki", type=Path, required=True, help="the PKI folder, holding a certificate for hub-CITY")
    p.add_argument("--sites", type=Path, required=True, metavar="REGISTRY",
                   help="the enrolment registry ('jikimi provision register --db'): the sites that may report")
    p.add_argument("--out", type=Path, required=True, help="the config file to write")
    p.add_argument("--broker", default="localhost:8883", metavar="HOST:PORT", help="the city's broker")
    p.add_argument("--api-listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                   help="the console and API (default loopback)")
    p.add_argument("--db", type=Path, help="the hub's database (default var/hub.db beside the config)")
    p.add_argument("--admin", metavar="USERNAME", help="create this admin account; its generated password is "
                   "printed once (default: no account)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--dry-run", action="store_true", help="print the config; write nothing, create no account")

    p = cli.subcommand("hub", "run", "run the hub service", _run)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--log-level", default="INFO")

    p = cli.subcommand("hub", "user", "manage operator accounts (add, passwd, disable)", _user_usage)
    users = p.add_subparsers(dest="user_command", metavar="ACTION")
    a = users.add_parser("add", help="add an operator account", description="add an operator account")
    a.set_defaults(handler=_user_add)
    _db_args(a)
    a.add_argument("--username", required=True)
    a.add_argument("--role", required=True, choices=[r.value for r in Role])
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw = users.add_parser("passwd", help="set a password (ends the user's sessions)",
                          description="set a password (ends the user's sessions)")
    pw.set_defaults(handler=_user_passwd)
    _db_args(pw)
    pw.add_argument("--username", required=True)
    pw.add_argument("--password-stdin", action="store_true")
    d = users.add_parser("disable", help="disable an account (ends its sessions)",
                         description="disable an account (ends its sessions)")
    d.set_defaults(handler=_user_disable)
    _db_args(d)
    d.add_argument("--username", required=True)

    p = cli.subcommand("audit", "verify", "check the hub's hash-chained audit log", _audit_verify,
                       group_help="the hub's audit log")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path,
                   help="the hub's signed checkpoints of the chain's head (default: DB.checkpoints, with --key)")
    p.add_argument("--key", type=Path, help="the public key that signs the checkpoints (PEM)")



def _user_usage(args: argparse.Namespace) -> int:
    print("usage: jikimi hub user add|passwd|disable ...", file=sys.stderr)
    return 2
