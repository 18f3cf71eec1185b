"""The release of every part (an edge's birth, a city hub's birth to the province). Kept equal to
``pyproject.toml``'s version by tests/shared/test_version.py; a constant rather than package
metadata because importing ``importlib.metadata`` costs an edge about a megabyte it does not have."""

from typing import Final

VERSION: Final = "0.1.0"
