"""``jikimi pki …``, ``jikimi broker …`` and the hub admin's ``jikimi provision register|approve|serve``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.cli import Cli
from trust import broker
from trust.pki import DEFAULT_DAYS, Pki, Plan, Role
from trust.places import Place, area_problem, degrees

if TYPE_CHECKING:
    from trust.enrolment import EnrolmentService

PROVISION_HELP = "field provisioning: enrolment, approval, renewal, commissioning, units, doctor"


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
    if args.dry_run:
        return 0
    if args.broker_out:
        broker.refresh_acl(args.dir, args.broker_out, args.broker_pid)
        print(f"broker ACL rewritten in {args.broker_out}"
              + (f"; broker (pid {args.broker_pid}) reloaded: {args.cn} is cut off now" if args.broker_pid else ""))
    else:
        print("now regenerate the broker ACL ('jikimi broker config') and reload the broker (SIGHUP)")
    return 0


def _provision_register(args: argparse.Namespace) -> int:
    from trust import enrolment as enroll

    service = _enrol_service(args)
    token = service.register(args.site, enroll.hub_url_ok(args.url), actor=args.actor,
                             needs_approval=args.needs_approval, ttl_s=args.ttl,
                             place=Place(args.lat, args.lon, args.area))
    text = token.encode()
    print(text)
    if not args.no_qr:
        import segno

        segno.make(text, error="m").terminal(compact=True)
    print(f"valid until {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(token.expires))}, once, "
          f"for site {args.site}" + (" (needs 'jikimi provision approve')" if args.needs_approval else ""),
          file=sys.stderr)
    return 0


def _provision_approve(args: argparse.Namespace) -> int:
    from trust import enrolment as enroll

    enroll.EnrolmentStore(args.db).approve(args.site, args.actor)
    print(f"site {args.site} approved by {args.actor}")
    return 0


def _enrol_service(args: argparse.Namespace) -> EnrolmentService:
    from trust.enrolment import EnrolmentService, EnrolmentStore

    def on_issued(_cn: str) -> None:
        if args.broker_out:
            broker.refresh_acl(args.pki, args.broker_out, args.broker_pid)

    return EnrolmentService(Pki(args.pki), EnrolmentStore(args.db), mqtt_host=args.mqtt_host,
                            mqtt_port=args.mqtt_port, on_issued=on_issued,
                            ready=broker.ManagedBroker(args.pki, args.broker_out).problem)


def _provision_serve(args: argparse.Namespace) -> int:
    import asyncio

    from shared.tls import TlsFiles
    from trust.enrolment import serve_enrolment

    service = _enrol_service(args)

    async def serve() -> None:
        host, _, port = args.listen.rpartition(":")
        async with serve_enrolment(service, TlsFiles.from_pki(args.pki, args.identity), host, int(port)) as url:
            print(f"enrolment endpoint at {url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


def _bridge(args: argparse.Namespace) -> broker.Bridge | None:
    if args.bridge_to is None:
        if args.city is not None or args.bridge_pki is not None:
            raise broker.BrokerError("--city and --bridge-pki go with --bridge-to HOST:PORT")
        return None
    if args.city is None:
        raise broker.BrokerError("--bridge-to needs --city CITY: the city this broker bridges for")
    host, _, port = args.bridge_to.rpartition(":")
    if not host or not port.isdigit():
        raise broker.BrokerError(f"--bridge-to {args.bridge_to!r}: expected HOST:PORT")
    return broker.Bridge(city=args.city, host=host, port=int(port), pki_dir=args.bridge_pki or args.pki)


def _broker_config(args: argparse.Namespace) -> int:
    cfg = broker.write_config(
        args.pki, args.out, port=args.port, bind=args.bind, user=args.user, persistence=not args.no_persistence,
        persistence_dir=args.persistence_dir, scope=broker.Scope.PROVINCE if args.province else broker.Scope.CITY,
        bridge=_bridge(args), dry_run=args.dry_run,
    )
    _show(Plan(writes=[str(cfg.conf), str(cfg.acl)]), args.dry_run)
    return 0


def _broker_acl(args: argparse.Namespace) -> int:
    broker.refresh_acl(args.pki, args.out, args.pid)
    print(f"ACL rewritten in {args.out / 'acl'}" + (f"; broker (pid {args.pid}) reloaded" if args.pid else ""))
    return 0


def _broker_run(args: argparse.Namespace) -> int:
    out: Path = args.out
    cfg = broker.write_config(args.pki, out, port=args.port, bind=args.bind, persistence=not args.no_persistence,
                              log_file=out / "mosquitto.log")
    state = f"persistence in {out / 'data'}" if not args.no_persistence else "no persistence (a restart forgets)"
    print(f"broker state in {out}: config {cfg.conf.name}, log mosquitto.log, pid mosquitto.pid, {state}; "
          f"mTLS on {args.bind}:{cfg.port}", file=sys.stderr)
    broker.exec_broker(cfg, out / "mosquitto.pid")


def _degrees(name: str) -> Callable[[str], float]:
    def read(text: str) -> float:
        try:
            return degrees(text, name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return read


def _area(text: str) -> str:
    problem = area_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _enrol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--db", type=Path, required=True, help="the enrolment database")
    p.add_argument("--mqtt-host", default="localhost", help="broker host written into starter configs")
    p.add_argument("--mqtt-port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--broker-out", type=Path, help="broker config folder whose ACL is refreshed on issue")
    p.add_argument("--broker-pid", type=int, help="broker to reload (SIGHUP) on issue")


def register(cli: Cli) -> None:
    p = cli.subcommand("provision", "register", "pre-register a site; print its one-time enrolment token",
                       _provision_register, group_help=PROVISION_HELP)
    _enrol_args(p)
    p.add_argument("--site", required=True)
    p.add_argument("--url", required=True, help="the hub's enrolment URL, https://HOST:PORT")
    p.add_argument("--lat", type=_degrees("lat"), required=True,
                   help="the site's WGS84 latitude in degrees: alerts and cameras place the site by it")
    p.add_argument("--lon", type=_degrees("lon"), required=True, help="the site's WGS84 longitude in degrees")
    p.add_argument("--area", type=_area, help="the site's area id (as in the hub's [sites.registry]), e.g. gg-suwon")
    p.add_argument("--needs-approval", action="store_true", help="the site waits for 'provision approve'")
    p.add_argument("--ttl", type=float, default=3600.0, help="token lifetime in seconds (default 1 hour)")
    p.add_argument("--actor", default=os.environ.get("USER", "admin"))
    p.add_argument("--no-qr", action="store_true")

    p = cli.subcommand("provision", "approve", "approve a site that was registered --needs-approval",
                       _provision_approve)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--actor", default=os.environ.get("USER", "admin"))

    p = cli.subcommand("provision", "serve", "run the enrolment endpoint (the hub runs it too)", _provision_serve)
    _enrol_args(p)
    p.add_argument("--listen", default="127.0.0.1:8443")
    p.add_argument("--identity", required=True, help="the hub identity (CN) whose certificate serves HTTPS")

    g = "the project's PKI: CAs, certificates, revocation"
    p = cli.subcommand("pki", "init", "create a root CA, an issuing CA and the hub's command key",
                       _pki_init, group_help=g)
    p.add_argument("--dir", type=Path, required=True, help="the PKI folder")
    p.add_argument("--dry-run", action="store_true", help="show what would be written")

    p = cli.subcommand("pki", "issue", "issue a certificate and key for an identity", _pki_issue)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--cn", required=True, help="the identity: a site id, hub-<name>, a person, broker, alert-<hub>")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"lifetime (default {DEFAULT_DAYS})")
    p.add_argument("--san", action="append", help="subject alternative name (DNS or IP); repeatable")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("pki", "revoke", "revoke an identity's certificates and regenerate the CRL",
                       _pki_revoke)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--cn", required=True)
    p.add_argument("--broker-out", type=Path, help="the broker config folder whose ACL to rewrite")
    p.add_argument("--broker-pid", type=int, help="the running broker to reload (SIGHUP)")
    p.add_argument("--dry-run", action="store_true")

    g = "the Mosquitto broker with mutual TLS"
    p = cli.subcommand("broker", "config", "write mosquitto.conf and its ACL for the PKI",
                       _broker_config, group_help=g)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--user", help="account Mosquitto runs as (default: the current user)")
    p.add_argument("--no-persistence", action="store_true",
                   help="keep no sessions, queued or retained messages across a restart")
    p.add_argument("--persistence-dir", type=Path,
                   help="where Mosquitto keeps them (default OUT/data)")
    p.add_argument("--province", action="store_true",
                   help="the provincial broker: admit only the cities' bridges and the provincial hubs")
    p.add_argument("--bridge-to", metavar="HOST:PORT",
                   help="bridge this city broker to the provincial broker there (with --city)")
    p.add_argument("--city", help="the city this broker bridges for, e.g. suwon (identity bridge-CITY)")
    p.add_argument("--bridge-pki", type=Path,
                   help="the province's PKI: its ca.pem and bridge-CITY's cert and key (default --pki)")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("broker", "acl", "rewrite the ACL of a broker config from the PKI index", _broker_acl)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the broker config folder")
    p.add_argument("--pid", type=int, help="the running broker to reload (SIGHUP)")

    p = cli.subcommand("broker", "run", "write the config, then become Mosquitto (exec) in the foreground",
                       _broker_run)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("var/broker"),
                   help="the broker's state: config, ACL, persistence, log, pid file (default var/broker)")
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--no-persistence", action="store_true",
                   help="keep no sessions, queued or retained messages across a restart")

