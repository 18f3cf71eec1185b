"""``jikimi pki ...`` and ``jikimi broker ...`` (the technician's tools grow here)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from provisioning import broker
from provisioning.pki import DEFAULT_DAYS, Pki, Plan, Role
from shared.cli import Cli


def _show(plan: Plan, dry_run: bool) -> None:
    for line in plan.lines(dry_run):
        print(line)


def _pki_init(args: argparse.Namespace) -> int:
    plan = Pki(args.dir).init(dry_run=args.dry_run)
    _show(plan, args.dry_run)
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    plan = Pki(args.dir).issue(
        args.cn, Role(args.role), days=args.days, sans=args.san or (), dry_run=args.dry_run
    )
    _show(plan, args.dry_run)
    return 0


def _pki_revoke(args: argparse.Namespace) -> int:
    plan = Pki(args.dir).revoke(args.cn, dry_run=args.dry_run)
    _show(plan, args.dry_run)
    if not args.dry_run:
        print("now regenerate the broker ACL ('jikimi broker config') and reload the broker (SIGHUP)")
    return 0


def _broker_config(args: argparse.Namespace) -> int:
    cfg = broker.write_config(
        args.pki, args.out, port=args.port, bind=args.bind, user=args.user, dry_run=args.dry_run
    )
    _show(Plan(writes=[str(cfg.conf), str(cfg.acl)]), args.dry_run)
    return 0


def _broker_run(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="jikimi-broker-"))
    cfg = broker.write_config(args.pki, out, port=args.port, bind=args.bind)
    print(f"config in {cfg.conf}", file=sys.stderr)
    return broker.run(cfg)


def _demo(args: argparse.Namespace) -> int:
    from provisioning import demo

    return demo.run(Path("var/demo"), args.duration)


def register(cli: Cli) -> None:
    p = cli.command("demo", "run the whole system on one machine (state under ./var/demo)", _demo)
    p.add_argument("--duration", type=float, help="stop after this many seconds")

    g = "the project's PKI: CAs, certificates, revocation"
    p = cli.subcommand("pki", "init", "create a root CA, an issuing CA and the hub's command key",
                       _pki_init, group_help=g)
    p.add_argument("--dir", type=Path, required=True, help="the PKI folder")
    p.add_argument("--dry-run", action="store_true", help="show what would be written")

    p = cli.subcommand("pki", "issue", "issue a certificate and key for an identity", _pki_issue)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--cn", required=True, help="the identity: a site id, hub-<name>, a person, broker")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"lifetime (default {DEFAULT_DAYS})")
    p.add_argument("--san", action="append", help="subject alternative name (DNS or IP); repeatable")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("pki", "revoke", "revoke an identity's certificates and regenerate the CRL",
                       _pki_revoke)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--cn", required=True)
    p.add_argument("--dry-run", action="store_true")

    g = "the Mosquitto broker with mutual TLS"
    p = cli.subcommand("broker", "config", "write mosquitto.conf and its ACL for the PKI",
                       _broker_config, group_help=g)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--user", help="account Mosquitto runs as (default: the current user)")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("broker", "run", "run Mosquitto with that config in the foreground", _broker_run)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, help="where to write the config (default: a new temp folder)")
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--bind", default="127.0.0.1")
