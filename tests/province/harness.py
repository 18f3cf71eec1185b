"""What the province's tests share: the provincial hub's config file, and a city's records
published through a real city outbox as that city's bridge identity."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hub.upstream import next_batch, open_upstream
from shared import messages
from shared.messages import CityRecord, CityStatus, SiteState
from shared.topics import CityChannel, city_topic
from tests.conftest import ProvincePki, mqtt_client
from trust.broker import RunningBroker


async def publish_city(broker: RunningBroker, pki: ProvincePki, outbox_path: Path, city: str,
                       records: Sequence[CityRecord], *, status: SiteState = SiteState.ONLINE) -> int:
    """The city's status, then ``records`` appended to the city outbox at ``outbox_path`` and sent
    in the protocol's batches, as ``bridge-<city>`` straight to the provincial ``broker``; returns
    the outbox's epoch."""
    outbox, _ = open_upstream(outbox_path, clock=time.time)
    outbox.append(list(records))
    bridge = pki.bridge_for(city)
    async with mqtt_client(broker, pki.files(bridge), bridge) as c:
        st = CityStatus(city=city, hub=f"hub-{city}", state=status, ts=time.time())
        await c.publish(city_topic(city, CityChannel.STATUS), messages.encode(st), qos=1, retain=True)
        seq = outbox.floor_seq()
        while (got := next_batch(outbox, city, "boot-1", seq)) is not None:
            payload, seq = got
            await c.publish(city_topic(city, CityChannel.DATA), payload, qos=1)
    epoch = outbox.epoch
    outbox.close()
    return epoch


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
