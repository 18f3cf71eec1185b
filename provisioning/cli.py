"""``jikimi pki ...`` and ``jikimi broker ...`` (the technician's tools grow here)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from provisioning import broker

if TYPE_CHECKING:
    from provisioning.enroll import EnrolmentService
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
    from provisioning import enroll

    service = _enrol_service(args)
    token = service.register(args.site, enroll.hub_url_ok(args.url), actor=args.actor,
                             needs_approval=args.needs_approval, ttl_s=args.ttl)
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
    from provisioning import enroll

    enroll.EnrolmentStore(args.db).approve(args.site, args.actor)
    print(f"site {args.site} approved by {args.actor}")
    return 0


def _enrol_service(args: argparse.Namespace) -> EnrolmentService:
    from provisioning.enroll import EnrolmentService, EnrolmentStore

    def on_issued(_cn: str) -> None:
        if args.broker_out:
            broker.refresh_acl(args.pki, args.broker_out, args.broker_pid)

    return EnrolmentService(Pki(args.pki), EnrolmentStore(args.db), mqtt_host=args.mqtt_host,
                            mqtt_port=args.mqtt_port, on_issued=on_issued)


def _provision_serve(args: argparse.Namespace) -> int:
    import asyncio

    from provisioning.enroll import serve_enrolment
    from shared.tls import TlsFiles

    service = _enrol_service(args)

    async def serve() -> None:
        host, _, port = args.listen.rpartition(":")
        async with serve_enrolment(service, TlsFiles.from_pki(args.pki, args.identity), host, int(port)) as url:
            print(f"enrolment endpoint at {url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


def _provision_enroll(args: argparse.Namespace) -> int:
    import asyncio

    from provisioning.enroll import enroll_device

    plan = asyncio.run(enroll_device(args.token, args.out, wait_s=args.wait, dry_run=args.dry_run))
    for line in plan.writes:
        print(("would write " if args.dry_run else "wrote ") + line)
    if not args.dry_run:
        print(f"enrolled. Add the devices to {args.out / 'site.toml'}, then 'jikimi edge check --config ...'")
    return 0


def _provision_renew(args: argparse.Namespace) -> int:
    import asyncio

    from provisioning.enroll import renew_device

    renewed = asyncio.run(renew_device(args.dir, args.url, force=args.force, dry_run=args.dry_run))
    if not renewed:
        print("not due yet (renewal happens after two thirds of the certificate's life; --force to renew now)")
    else:
        print(("would renew " if args.dry_run else "renewed ") + str(args.dir / "cert.pem"))
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

    if args.headless and args.duration is None:
        from shared.errors import JikimiError

        raise JikimiError("--headless needs --duration SECONDS")
    return demo.run(Path("var/demo"), args.duration, headless=args.headless, json_out=args.json,
                    forward_to=args.forward_to, speed=args.speed)


def _provision_units(args: argparse.Namespace) -> int:
    from provisioning.units import all_units, write_units

    for path in write_units(args.out, all_units(args.exec), dry_run=args.dry_run):
        print(("would write " if args.dry_run else "wrote ") + str(path))
    if not args.dry_run:
        print(f"install: cp {args.out}/*.service {args.out}/*.timer /etc/systemd/system/ && systemctl daemon-reload;"
              " then systemctl enable --now jikimi-edge@SITE jikimi-renew@SITE.timer")
    return 0


def _provision_commission(args: argparse.Namespace) -> int:
    import asyncio
    import json
    from dataclasses import asdict

    from provisioning import commission as c
    from shared.profiles import load_profile

    profile = load_profile(args.profile)
    actuate = None
    if args.actuate:
        name, sep, value = args.actuate.partition("=")
        if not sep:
            raise c.CommissionError("--actuate takes POINT=VALUE, e.g. --actuate warning_lamp=true")
        actuate = (name, value)

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            print("actuation needs a person at the keyboard to confirm; skipped", file=sys.stderr)
            return False
        return input(question).strip().lower() == "yes"

    def progress(i: int, n: int, r: c.PointResult) -> None:
        print(f"[{i:>3}/{n}] {r.verdict.upper():4} {r.name:<24} {r.value:>14} {r.note}", file=sys.stderr, flush=True)

    rec = asyncio.run(c.commission(profile, args.profile, args.port, technician=args.technician,
                                   unit_id=args.unit_id, actuate=actuate, confirm=confirm, progress=progress))
    if args.key:
        c.sign(rec, args.key)
    text = c.summary(rec)
    print(text)
    if args.out and not args.dry_run:
        args.out.write_text(json.dumps(asdict(rec), ensure_ascii=False, indent=2) + "\n")
        args.out.with_suffix(".txt").write_text(text + "\n")
        signed = "signed" if rec.signature else "unsigned"
        print(f"record: {args.out} ({signed}), summary: {args.out.with_suffix('.txt')}")
    return 0 if rec.passed else 1


def _provision_doctor(args: argparse.Namespace) -> int:
    from provisioning.doctor import run_checks

    checks = run_checks(args.config)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.status.upper():4}  {c.name:<{width}}  {c.detail}")
    return 1 if any(c.status == "fail" for c in checks) else 0


def _enrol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--db", type=Path, required=True, help="the enrolment database")
    p.add_argument("--mqtt-host", default="localhost", help="broker host written into starter configs")
    p.add_argument("--mqtt-port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--broker-out", type=Path, help="broker config folder whose ACL is refreshed on issue")
    p.add_argument("--broker-pid", type=int, help="broker to reload (SIGHUP) on issue")


def register(cli: Cli) -> None:
    g = "field provisioning: enrolment, approval, renewal, commissioning, units, doctor"
    p = cli.subcommand("provision", "register", "pre-register a site; print its one-time enrolment token",
                       _provision_register, group_help=g)
    _enrol_args(p)
    p.add_argument("--site", required=True)
    p.add_argument("--url", required=True, help="the hub's enrolment URL, https://HOST:PORT")
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

    p = cli.subcommand("provision", "enroll", "enrol this device with a token: key here, certificate from the hub",
                       _provision_enroll)
    p.add_argument("--token", required=True)
    p.add_argument("--out", type=Path, default=Path("/etc/jikimi"), help="where to write key, certificate, config")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for an admin's approval")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("provision", "commission", "read and check every point of a device; sign the record",
                       _provision_commission)
    p.add_argument("--profile", type=Path, required=True)
    p.add_argument("--port", required=True, help="/dev/ttyUSB0 (RTU or serial line) or tcp://HOST:PORT")
    p.add_argument("--unit-id", type=int)
    p.add_argument("--actuate", help="POINT=VALUE: a write to test, asked for confirmation first")
    p.add_argument("--technician", default=os.environ.get("USER", "technician"))
    p.add_argument("--key", type=Path, help="the device key that signs the record (e.g. /etc/jikimi/SITE/key.pem)")
    p.add_argument("--out", type=Path, help="where to write the record (JSON; a .txt summary beside it)")
    p.add_argument("--dry-run", action="store_true", help="read and judge, write no record")

    p = cli.subcommand("provision", "doctor", "check a site: clock, certificate, broker, devices, disk",
                       _provision_doctor)
    p.add_argument("--config", type=Path, required=True, help="the site config")

    p = cli.subcommand("provision", "units", "write the systemd units (edge, renewal, hub, broker)",
                       _provision_units)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--exec", help="path of the jikimi script in the units (default: this installation's)")
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("provision", "renew", "renew this device's certificate (after 2/3 of its life)",
                       _provision_renew)
    p.add_argument("--dir", type=Path, default=Path("/etc/jikimi"))
    p.add_argument("--url", required=True, help="the hub's enrolment URL")
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true")

    p = cli.command("demo", "run the whole system on one machine (state under ./var/demo)", _demo)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--headless", action="store_true", help="no console banner; run for --duration and stop")
    p.add_argument("--json", type=Path, help="write the timeline and its figures here")
    p.add_argument("--forward-to", help="also send every alert as CAP 1.2 over HTTP POST to this URL")
    p.add_argument("--speed", type=float, help="storm replay speed (default: the storm fits the duration)")

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
    p.add_argument("--dry-run", action="store_true")

    p = cli.subcommand("broker", "run", "run Mosquitto with that config in the foreground", _broker_run)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--out", type=Path, help="where to write the config (default: a new temp folder)")
    p.add_argument("--port", type=int, default=broker.DEFAULT_PORT)
    p.add_argument("--bind", default="127.0.0.1")
