"""``jikimi demo``, ``jikimi chaos`` and ``jikimi bench …``: the commands that wire whole systems together."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from lab.fuzz import add_arguments
from shared.cli import Cli
from shared.errors import JikimiError


def _demo(args: argparse.Namespace) -> int:
    from lab import demo

    if args.headless and args.duration is None:
        raise JikimiError("--headless needs --duration SECONDS")
    if args.province:
        from lab import demo_province

        if args.forward_to:
            raise JikimiError("--forward-to is the one-city demo's; the province demo forwards no alerts")
        return demo_province.run(Path("var/demo-province"), args.duration, headless=args.headless,
                                 json_out=args.json, speed=args.speed)
    return demo.run(Path("var/demo"), args.duration, headless=args.headless, json_out=args.json,
                    forward_to=args.forward_to, speed=args.speed)


def _bench_edge(args: argparse.Namespace) -> int:
    from lab.bench_edge import run_edge_bench, write_report

    report = asyncio.run(run_edge_bench(seconds=args.seconds, outage_s=args.outage_s))
    write_report(args.json, report)
    print(json.dumps(report, indent=2))
    return 0


def _bench_ingest(args: argparse.Namespace) -> int:
    from lab import bench_ingest

    return bench_ingest.main(args)


def _bench_latency(args: argparse.Namespace) -> int:
    from lab.bench_edge import machine, write_report
    from lab.bench_latency import measure_latency

    report = {"machine": machine(), **asyncio.run(measure_latency(trials=args.trials, seed=args.seed))}
    write_report(args.json, report)
    print(json.dumps(report, indent=2))
    return 0


def _bench_province(args: argparse.Namespace) -> int:
    from lab import bench_province

    return bench_province.main(args)


def _bench_fuzz(args: argparse.Namespace) -> int:
    from lab import fuzz

    return fuzz.main(args)


def _chaos(args: argparse.Namespace) -> int:
    from lab import chaos

    try:
        kinds = chaos.parse_kinds(args.faults)
    except ValueError as exc:
        raise JikimiError(str(exc)) from None
    if not 30 <= args.seconds <= 86400:
        raise JikimiError("--seconds: between 30 and 86400")
    if not 1 <= args.edges <= 32:
        raise JikimiError("--edges: between 1 and 32")
    return asyncio.run(chaos.run_chaos(args.dir, seconds=args.seconds, seed=args.seed, edges=args.edges,
                                       kinds=kinds, json_out=args.json, quiet=args.quiet))


def register(cli: Cli) -> None:
    p = cli.command("demo", "run the whole system on one machine (state under ./var/demo)", _demo)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--headless", action="store_true", help="no console banner; run for --duration and stop")
    p.add_argument("--json", type=Path, help="write the timeline and its figures here")
    p.add_argument("--forward-to", help="also send every alert as CAP 1.2 over HTTP POST to this URL")
    p.add_argument("--speed", type=float, help="storm replay speed (default: the storm fits the duration)")
    p.add_argument("--province", action="store_true",
                   help="three city hubs (Suwon, Bucheon, Goyang) bridged to a provincial hub (state under"
                        " ./var/demo-province)")

    p = cli.command("chaos", "a real multi-process deployment under a seeded schedule of faults; counts what was lost",
                    _chaos)
    p.add_argument("--seconds", type=float, default=600.0, help="how long faults are injected (default 600)")
    p.add_argument("--seed", type=int, default=1, help="the schedule's random seed (default 1)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    p.add_argument("--edges", type=int, default=4, help="sites, each an edge beside its simulator (default 4)")
    p.add_argument("--faults", metavar="KIND,KIND", help="only these fault kinds (default: all; see lab/chaos.py)")
    p.add_argument("--dir", type=Path, default=Path("var/chaos"), help="state of the run (deleted first)")
    p.add_argument("--quiet", action="store_true", help="no timeline on stdout")

    g = "benchmarks, each with the machine and a reference measured in the same run"
    p = cli.subcommand("bench", "edge", "measure the edge's device I/O", _bench_edge, group_help=g)
    p.add_argument("--json", type=Path, required=True, metavar="FILE")
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--outage-s", type=float, default=240.0,
                   help="broker outage for the agent's RSS-after-outage run (0: leave the run out)")

    p = cli.subcommand("bench", "ingest", "the hub's ingest limit at many mTLS sites, next to the broker's",
                       _bench_ingest)
    p.add_argument("--sites", type=int, default=6500, help="connected sites, one mutual-TLS connection each")
    p.add_argument("--procs", type=int, default=6, help="load-generator processes the sites are spread over")
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")],
                   default=[10000.0, 20000.0, 30000.0, 40000.0, 50000.0, 60000.0, 70000.0, 80000.0],
                   help="offered records/s (all sites together) of the sweep's steps, comma-separated, rising")
    p.add_argument("--step", type=float, default=20.0, help="measured seconds per step (after the warm-up)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds per step before measuring")
    p.add_argument("--drain", type=float, default=20.0, help="seconds a step may take to commit what was sent")
    p.add_argument("--batch", type=int, default=50, help="records per DataBatch")
    p.add_argument("--capacity-msgs", type=int, default=20000, help="batches queued for the C subscriber")
    p.add_argument("--client-process", action=argparse.BooleanOptionalAction, default=True,
                   help="the hub's MQTT client in a child process (broker.client_process)")
    p.add_argument("--pki", type=Path, help="a PKI folder to issue into, or to reuse from an earlier run")
    p.add_argument("--burst-sites", type=int,
                   help="after the sweep, the typhoon burst: this many sites cross their alarm threshold "
                        "(default: 1,000 or --sites if fewer; 0: no burst)")
    p.add_argument("--burst-s", type=float, default=60.0, help="seconds the burst's crossings are spread over")
    p.add_argument("--burst-rate", type=float, default=10000.0,
                   help="background records/s (all sites together) during the burst")
    p.add_argument("--burst-seed", type=int, default=1, help="the order in which the burst's sites cross")
    p.add_argument("--burst-drain", type=float, default=60.0,
                   help="seconds after the burst for its alarms and acknowledged alerts to arrive")
    p.add_argument("--json", type=Path, required=True, help="write the results here")

    p = cli.subcommand("bench", "latency", "water crossing → barrier write, console alarm, CAP acknowledged",
                       _bench_latency)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=7, help="the trials' phases against the polls")
    p.add_argument("--json", type=Path, required=True, metavar="FILE")

    p = cli.subcommand("bench", "province", "the provincial hub's ingest of many cities: its limit, catch-up after an"
                       " outage, the broker's own rate", _bench_province)
    # defaults (None here) are lab/bench_province.py's Settings: this module stays light to import
    p.add_argument("--json", type=Path, required=True, metavar="FILE", help="write the report here")
    p.add_argument("--cities", type=int, help="simulated city hubs (default 31)")
    p.add_argument("--rate", type=float, help="the typhoon rate, records/s over all cities: the sweep's first step")
    p.add_argument("--factor", type=float, help="each sweep step's rate over the last one's")
    p.add_argument("--max-steps", type=int, help="sweep steps at most")
    p.add_argument("--warmup-s", type=float, help="seconds per step before measuring")
    p.add_argument("--step-s", type=float, help="measured seconds per step")
    p.add_argument("--drain-s", type=float, help="seconds a step may take to commit what it sent")
    p.add_argument("--outage-s", type=float, help="the outage whose backlog the catch-up takes (0: no catch-up)")
    p.add_argument("--sites-per-city", type=int, help="sites each city reports the state of")
    p.add_argument("--capacity-msgs", type=int, help="batches queued for the broker reference's C subscriber")
    p.add_argument("--p99-ms", type=float, help="the city → province p99 latency a kept-up step stays within")
    p.add_argument("--catch-up-timeout-s", type=float, help="how long the catch-up may take (then reported unfinished)")
    p.add_argument("--dir", type=Path, help="keep the run's state here (deleted first); default: a temporary folder")

    p = cli.subcommand("bench", "fuzz", "fuzz every parser of outside input (atheris; Hypothesis where it cannot run)",
                       _bench_fuzz)
    add_arguments(p)
