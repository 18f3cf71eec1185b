"""``jikimi edge run`` loads the agent and what its runtime path uses, nothing more (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.agent_cli import AGENT_ENV

PROBE = """\
import json, os, sys
from shared.cli import main
rc = main(["edge", "run", "--config", sys.argv[1]])
top = {n.split(".")[0] for n, mod in sys.modules.items() if mod is not None}
print(json.dumps({"rc": rc, "modules": sorted(top), "agent": "edge.agent" in sys.modules,
                  "env": {k: os.environ.get(k) for k in sys.argv[2:]}}))
"""


def test_edge_run_imports_the_agent_without_other_commands_cryptography_or_dnspython(tmp_path: Path) -> None:
    """Up to the config check, ``edge run`` has imported the agent but no hub, lab or
    provisioning code, no second OpenSSL (cryptography) and no dnspython."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "missing.toml"), *AGENT_ENV],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin",
                                                                           "PYTHONPATH": ":".join(sys.path)})
    got = json.loads(out.stdout)
    assert got["rc"] == 2  # the missing config, reported as one line
    assert "missing.toml" in out.stderr
    assert got["agent"] is True
    for absent in ("hub", "lab", "provisioning", "province", "cryptography", "dns"):
        assert absent not in got["modules"], absent
    assert got["env"] == AGENT_ENV  # set before numpy could load, for an agent started by hand


def test_edge_run_keeps_an_environment_the_operator_set(tmp_path: Path) -> None:
    """A variable already in the environment (a unit override) is not replaced."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "missing.toml"), "OPENBLAS_NUM_THREADS"],
                         capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout)["env"] == {"OPENBLAS_NUM_THREADS": "2"}
