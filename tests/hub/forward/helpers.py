"""Helpers for forwarding and CCTV tests: a recording audit, a settable clock, configs, notices."""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hub import cctv_geo
from hub.cctv_geo import GeoPoint
from hub.forward.cap import Text
from hub.forward.capsign import CapSigner
from hub.forward.config import Format, ForwardConfig, Recipient, RecipientKind
from hub.forward.plan import Change, Hazard, Notice, Source
from hub.forward.tx import Detail
from hub.rules import AlarmPriority
from trust.pki import Pki, Role

T0 = 1_723_098_600.0  # 2024-08-08 15:30:00 KST


@dataclass
class FakeAudit:
    """Records audit rows as (actor, action, target, detail)."""

    rows: list[tuple[str, str, str, Detail]] = field(default_factory=list)

    def __call__(self, actor: str, action: str, target: str, detail: Detail | None = None) -> None:
        self.rows.append((actor, action, target, dict(detail or {})))

    def actions(self, prefix: str = "") -> list[str]:
        return [a for _, a, _, _ in self.rows if a.startswith(prefix)]


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


SITE = GeoPoint(37.2636, 127.0286)  # Suwon, near the Gwonseon underpass


def recipient(name: str, url: str, **kw: Any) -> Recipient:
    base = Recipient(name=name, kind=RecipientKind.CITY_CENTRE, format=Format.CAP, url=url, max_attempts=50,
                     initial_backoff_s=0.0, max_backoff_s=0.0)
    return replace(base, **kw)


ALERT_CN = "alert-hub-test"


@functools.cache
def signing_pki() -> Pki:
    """A PKI of its own holding the alert-signing identity ``ALERT_CN`` (made once per process;
    its ``ca.pem`` is what receivers verify CAP signatures with)."""
    d = Path(tempfile.mkdtemp(prefix="jikimi-alert-pki-"))
    atexit.register(shutil.rmtree, d, True)
    pki = Pki(d)
    pki.init()
    pki.issue(ALERT_CN, Role.ALERT)
    return pki


@functools.cache
def signer() -> CapSigner:
    pki = signing_pki()
    return CapSigner.load(pki.key(ALERT_CN), pki.cert(ALERT_CN))


def config(*recipients: Recipient, **kw: Any) -> ForwardConfig:
    return ForwardConfig(sender="hub-test@jikimi.example", recipients=recipients,
                         sender_name=Text("지킴이 시험 허브", "jikimi test hub"),
                         evidence_base_url="https://hub-test.example/api/evidence", **{"signer": signer(), **kw})


def notice(change: Change = Change.RAISE, *, key: str | None = None, thread: str = "alarm:1", at: float = T0,
           priority: AlarmPriority = AlarmPriority.CRITICAL, area: str = "suwon-gwonseon", **kw: Any) -> Notice:
    base = Notice(
        key=key or f"{thread}:{change.value}:{at}",
        thread=thread,
        change=change,
        at=at,
        source=Source.ALARM,
        area=area,
        priority=priority,
        hazard=Hazard.UNDERPASS,
        headline=Text("권선 지하차도 침수 15cm", "Gwonseon underpass flooded 15 cm"),
        description=Text("수위 15cm, 차단기 닫힘", "Water 15 cm deep, barrier closed"),
        place=Text("수원시 권선구 권선 지하차도", "Gwonseon underpass, Suwon"),
        position=SITE,
        site="gg-suwon-up-0031",
    )
    return replace(base, **kw)


def offset(p: GeoPoint, distance_m: float, bearing_deg: float) -> GeoPoint:
    """The point ``distance_m`` from ``p`` along ``bearing_deg`` (great circle)."""
    r = cctv_geo.EARTH_RADIUS_M
    d = distance_m / r
    b = math.radians(bearing_deg)
    lat1, lon1 = math.radians(p.lat), math.radians(p.lon)
    lat2 = math.asin(math.sin(lat1) * math.cos(d) + math.cos(lat1) * math.sin(d) * math.cos(b))
    lon2 = lon1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(lat1), math.cos(d) - math.sin(lat1) * math.sin(lat2))
    return GeoPoint(math.degrees(lat2), math.degrees(lon2))


NoticeFactory = Callable[..., Notice]
