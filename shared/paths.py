"""Where jikimi's shipped files are: device profiles, models, and the read-only reference data.

Profiles and models live in ``firmware-configs/`` beside the packages; it is installed as the
data package ``firmware_configs`` (see pyproject.toml), so a wheel install finds them as well as
a checkout does. A bare profile name (``underpass-jk-up300.toml``) resolves to the shipped
profile of that name (:func:`resolve_profile`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_DATA_PACKAGE = "firmware_configs"


def firmware_configs() -> Path:
    """``firmware-configs/``: device profiles and TFLite models with their cards."""
    spec = importlib.util.find_spec(_DATA_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return REPO_ROOT / "firmware-configs"  # a bare checkout on PYTHONPATH, not installed


def profiles_dir() -> Path:
    return firmware_configs() / "profiles"


def models_dir() -> Path:
    return firmware_configs() / "models"


def resolve_profile(path: Path) -> Path:
    """A profile path as given; a bare file name that is not there resolves to the shipped one."""
    # os.path.exists: a name too long for the file system is "not there", not an error
    if os.path.exists(path) or path.parent != Path():
        return path
    shipped = profiles_dir() / path.name
    return shipped if shipped.is_file() else path


def shared_data_dir() -> Path:
    """The read-only reference data (``../shared/data`` beside the repo).

    ``JIKIMI_SHARED_DATA`` overrides it. Nothing is ever written there.
    """
    env = os.environ.get("JIKIMI_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"
