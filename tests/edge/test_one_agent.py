"""One agent per state directory (shared/instance.py): a second ``jikimi edge run`` on a site
the service already runs refuses to start and changes nothing; after the first dies, even by
SIGKILL, the next one starts at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared import instance
from tests.conftest import PkiFixture
from tests.edge.harness import edge_process, underpass_sim, until, write_config
from tests.edge.real_hub import running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def edge_run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={**os.environ}, check=False)


async def test_a_second_agent_on_a_running_sites_state_refuses_and_the_first_delivers_on(
        test_pki: PkiFixture, tmp_path: Path) -> None:
    site = test_pki.take_site()
    outbox = tmp_path / "state" / "outbox.db"
    with RunningBroker.start(test_pki.dir, tmp_path / "broker") as broker:
        async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
            cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
            async with edge_process(cfg, tmp_path / "edge.log") as first:
                await until(lambda: len(hub.seqs(site)) >= 10, 30, "the first agent delivers")
                epochs = hub.epochs(site)
                second = await edge_run_once(cfg)
                assert second.returncode == 2, second.stderr
                lock = tmp_path / "state" / "agent.lock"
                assert second.stderr.strip() == (
                    f"jikimi: {lock}: another edge agent is running on this state (pid {first.pid}); "
                    "stop it first (systemctl stop, or end that process)")
                assert first.returncode is None
                delivered = len(hub.seqs(site))
                await until(lambda: len(hub.seqs(site)) >= delivered + 10, 30, "the first agent delivers on")
                assert hub.epochs(site).keys() == epochs.keys()  # nobody touched its outbox
            # SIGKILLed (a power cut): the kernel released the lock; the next agent starts at once
            async with edge_process(cfg, tmp_path / "edge.log") as third:
                delivered = len(hub.seqs(site))
                await until(lambda: len(hub.seqs(site)) >= delivered + 10, 30, "the next agent delivers")
                third.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(third.wait(), 15) == 0
    assert outbox.exists()


def test_a_lock_is_held_by_one_process_and_released_when_it_dies(tmp_path: Path) -> None:
    lock = tmp_path / "deep" / "state" / "agent.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from shared import instance\n"
         "with instance.hold(Path(sys.argv[1]), 'edge agent'):\n print('held', flush=True); time.sleep(60)",
         str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(instance.AlreadyRunning, match=rf"pid {holder.pid}\)"), \
                instance.hold(lock, "edge agent"):
            pytest.fail("the lock was held twice")
    finally:
        holder.kill()
        holder.wait()
    with instance.hold(lock, "edge agent"):  # the dead holder's lock is gone with it
        assert lock.read_text() == f"{os.getpid()}\n"
    with instance.hold(lock, "edge agent"):  # and taken again after a clean release
        assert lock.read_text() == f"{os.getpid()}\n"


def test_a_lock_file_that_cannot_be_opened_is_a_clear_refusal(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    with pytest.raises(instance.InstanceError, match="cannot open the edge agent's lock file"), \
            instance.hold(tmp_path / "state" / "agent.lock", "edge agent"):
        pytest.fail("a lock file under a plain file was opened")
