"""``jikimi demo``: the whole system on one machine, state under ``./var/demo``.

What runs so far: a fresh development PKI and Mosquitto with mutual TLS. The hub, edge
agents, simulators and receivers join as they land (see the README).
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from provisioning.broker import RunningBroker
from provisioning.pki import Pki, Role

HUB = "hub-demo"


def fresh_pki(root: Path, edges: list[str]) -> Pki:
    """A new PKI under ``root/pki`` with the broker, the demo hub and ``edges``."""
    pki_dir = root / "pki"
    if pki_dir.exists():
        shutil.rmtree(pki_dir)
    pki = Pki(pki_dir)
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(HUB, Role.HUB)
    for cn in edges:
        pki.issue(cn, Role.EDGE)
    return pki


def run(root: Path, duration_s: float | None) -> int:
    root.mkdir(parents=True, exist_ok=True)
    pki = fresh_pki(root, [])
    (root / "broker").mkdir(exist_ok=True)
    stop = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with RunningBroker.start(pki.dir, root / "broker", persistence=True) as broker:
        print(f"jikimi demo: state in {root.resolve()}")
        print(f"  PKI          {pki.dir.resolve()} (fresh; CA chain {pki.ca_chain.resolve()})")
        print(f"  broker       mqtts://localhost:{broker.port} (Mosquitto, TLS 1.3, client certificates)")
        print(f"  broker log   {broker.log.resolve()}")
        print("  still to come: hub, edge agents, simulators, receivers (see README)")
        print("Ctrl-C stops everything.", flush=True)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop and (deadline is None or time.monotonic() < deadline):
            if broker.proc.poll() is not None:
                print(f"broker exited: {broker.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    print("jikimi demo: stopped cleanly")
    return 0
