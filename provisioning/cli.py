"""``jikimi provision enroll|renew|commission|doctor|units``: the field technician's tools."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.cli import Cli


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
    from trust.enrolment import EnrolmentError

    if args.check:  # the renew unit's ExecCondition: 0 when due, 1 (skip, not a failure) when not
        return 0 if asyncio.run(renew_device(args.dir, args.url or "", force=args.force, dry_run=True)) else 1
    if not args.url:
        raise EnrolmentError("--url: the hub's enrolment URL is needed to renew")
    renewed = asyncio.run(renew_device(args.dir, args.url, force=args.force, dry_run=args.dry_run))
    if not renewed:
        print("not due yet (renewal happens after two thirds of the certificate's life; --force to renew now)")
    else:
        print(("would renew " if args.dry_run else "renewed ") + str(args.dir / "cert.pem"))
    return 0


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


def register(cli: Cli) -> None:
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
    p.add_argument("--url", help="the hub's enrolment URL (not needed with --check)")
    p.add_argument("--check", action="store_true", help="only say whether renewal is due: exit 0 if so, 1 if not")
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true")
