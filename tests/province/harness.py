"""What the province's tests share: the provincial hub's config file."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ProvincePki
from trust.broker import RunningBroker


def province_config(tmp_path: Path, province_pki: ProvincePki, upstream: RunningBroker) -> Path:
    """``province.toml`` in ``tmp_path`` for the provincial hub on ``upstream`` (the provincial broker)."""
    files = province_pki.files(province_pki.province)
    path = tmp_path / "province.toml"
    path.write_text(f"""
[province]
id = "{province_pki.province}"

[broker]
host = "{upstream.host}"
port = {upstream.port}
ca = "{files.ca}"
cert = "{files.cert}"
key = "{files.key}"

[database]
path = "province.db"

[ingest]
gap_grace_s = 0.5
resend_interval_s = 1.0
""")
    return path
