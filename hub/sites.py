"""The hub's sites and their rules, as configured: ``[sites]`` and ``[rules]`` of the hub's config.

Where a site is (its area, name and WGS84 position), whether an unregistered site may report,
and which rule parameters apply to a site of a kind. Parsed once at start-up (hub/config.py).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from hub.rules import PARAM_NAMES, RuleParams, default_params
from shared.tomlread import Table

SITE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_AREA_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KINDS: Final = ("flood_alarm", "displacement", "underpass", "river_gate", "rain_gauge")


@dataclass(frozen=True)
class SiteEntry:
    area: str
    name: str = ""
    lat: float | None = None
    lon: float | None = None
    """WGS84 position: alerts carry it as their area, and CCTV picks cameras by it."""


@dataclass(frozen=True)
class SitesConfig:
    accept_any: bool = True
    registry: Mapping[str, SiteEntry] = field(default_factory=dict)

    def accepts(self, site: str) -> bool:
        return self.accept_any or site in self.registry

    def area_of(self, site: str) -> str:
        """The site's area: from the registry, else its id's first two parts (``gg-suwon``)."""
        entry = self.registry.get(site)
        if entry is not None:
            return entry.area
        return "-".join(site.split("-")[:2])


@dataclass(frozen=True)
class RulesConfig:
    kinds: Mapping[str, RuleParams]
    sites: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def params(self, site: str, kind: str) -> RuleParams:
        base = self.kinds.get(kind) or default_params(kind)
        override = self.sites.get(site)
        if not override:
            return base
        return dataclasses.replace(base, **override)


def parse_sites(s: Table) -> SitesConfig:
    """``[sites]``: which sites may report, and the registry of their areas, names and positions."""
    registry: dict[str, SiteEntry] = {}
    reg = s.table("registry")
    for site in reg.data:
        if not SITE_RE.match(site):
            raise reg.error(site, "not a site id: 2-63 of a-z, 0-9 and '-'")
        e = reg.table(site)
        area = e.text("area")
        if not _AREA_RE.match(area):
            raise e.error("area", f"{area!r}: use a-z, 0-9 and '-'")
        lat, lon = e.optional_number("lat"), e.optional_number("lon")
        if (lat is None) != (lon is None) or (lat is not None and lon is not None
                                               and not (-90 <= lat <= 90 and -180 <= lon <= 180)):
            raise e.error("lat", "give both lat and lon, in WGS84 degrees")
        registry[site] = SiteEntry(area=area, name=e.text("name", ""), lat=lat, lon=lon)
        e.done()
    reg.done()
    sites = SitesConfig(accept_any=s.flag("accept_any", True), registry=registry)
    if not sites.accept_any and not registry:
        raise s.error("accept_any", "is false but sites.registry lists no site: no site could report")
    s.done()
    return sites


def parse_rules(r: Table) -> RulesConfig:
    """``[rules]``: rule parameters per kind, overridden per site."""
    kinds: dict[str, RuleParams] = {}
    kt = r.table("kinds")
    for kind in kt.data:
        if kind not in KINDS:
            raise kt.error(kind, f"unknown kind; one of {', '.join(KINDS)}")
        kinds[kind] = dataclasses.replace(default_params(kind), **_params(kt.table(kind)))
    kt.done()
    site_overrides: dict[str, Mapping[str, float]] = {}
    st = r.table("sites")
    for site in st.data:
        if not SITE_RE.match(site):
            raise st.error(site, "not a site id")
        site_overrides[site] = _params(st.table(site))
    st.done()
    r.done()
    rules = RulesConfig(kinds=kinds, sites=site_overrides)
    return rules


def _params(section: Table) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in section.data:
        if name not in PARAM_NAMES:
            raise section.error(name, f"unknown rule parameter; one of {', '.join(sorted(PARAM_NAMES))}")
        out[name] = section.number(name)
    section.done()
    return out
