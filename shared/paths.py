"""Where jikimi's files are: the profiles and models that ship with it, and the reference data.

The project runs from its checkout (``pip install -e``), so the data folders beside the
packages are found from this file, whatever the current directory is.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def firmware_configs() -> Path:
    """``firmware-configs/``: device profiles and TFLite models with their cards."""
    return REPO_ROOT / "firmware-configs"


def profiles_dir() -> Path:
    return firmware_configs() / "profiles"


def models_dir() -> Path:
    return firmware_configs() / "models"


def shared_data_dir() -> Path:
    """The read-only reference data (``../shared/data`` beside the repo).

    ``JIKIMI_SHARED_DATA`` overrides it. Nothing is ever written there.
    """
    env = os.environ.get("JIKIMI_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"
