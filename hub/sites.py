"""The hub's sites and their rules, as configured: ``[sites]`` and ``[rules]`` of the hub's config.

Where a site is (its area, name and WGS84 position), whether an unregistered site may report,
and which rule parameters apply to a site of a kind. Parsed once at start-up (hub/config.py).

A site is registered by ``[sites.registry]`` or by enrolment (``jikimi provision register``,
which stores its place: trust/enrolment.py); :func:`with_enrolled` adds the enrolled sites'
places to the registry (the config's own entry wins), so an enrolled site is a registered one,
accepted even when ``accept_any`` is false. A hub that forwards alerts refuses to
start while a registered site has no position (:func:`unplaced_problem`): its alerts could
then only name an area.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from hub.rules import PARAM_NAMES, RuleParams, default_params
from shared.tomlread import Table
from trust.places import AREA_RE, Place, position_problem

SITE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
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
        if not AREA_RE.match(area):
            raise e.error("area", f"{area!r}: use a-z, 0-9 and '-'")
        lat, lon = e.optional_number("lat"), e.optional_number("lon")
        if (lat is None) != (lon is None):
            raise e.error("lat", "give both lat and lon, in WGS84 degrees")
        problem = None if lat is None else position_problem(lat, lon)
        if problem is not None:
            raise e.error(problem.split()[0], f"{problem}; give both lat and lon, in WGS84 degrees")
        registry[site] = SiteEntry(area=area, name=e.text("name", ""), lat=lat, lon=lon)
        e.done()
    reg.done()
    sites = SitesConfig(accept_any=s.flag("accept_any", True), registry=registry)
    if not sites.accept_any and not registry:
        raise s.error("accept_any", "is false but sites.registry lists no site: no site could report")
    s.done()
    return sites


def with_enrolled(sites: SitesConfig, enrolled: Mapping[str, Place | None]) -> SitesConfig:
    """``sites`` with the places of enrolled sites: a site the registry lacks is added (its
    area: the place's, else the id's), a registry entry without a position takes the enrolled one."""
    registry = dict(sites.registry)
    for site, place in enrolled.items():
        entry = registry.get(site)
        if entry is None:
            area = place.area if place is not None and place.area else sites.area_of(site)
            registry[site] = SiteEntry(area=area, lat=place.lat if place else None, lon=place.lon if place else None)
        elif entry.lat is None and place is not None:
            registry[site] = dataclasses.replace(entry, lat=place.lat, lon=place.lon)
    return dataclasses.replace(sites, registry=registry)


def unplaced_problem(sites: SitesConfig, enrolled: Mapping[str, Place | None]) -> tuple[str, str] | None:
    """(key, problem) naming the registered sites without a position, or None when all have one."""
    missing = sorted(site for site, e in sites.registry.items() if e.lat is None or e.lon is None)
    if not missing:
        return None
    in_config = [s for s in missing if s not in enrolled]
    key = f"sites.registry.{in_config[0]}.lat" if in_config else "enrolment.db"
    fix = []
    if in_config:
        fix.append(f"give [sites.registry.<site>] lat and lon ({', '.join(in_config)})")
    enrolled_only = [s for s in missing if s in enrolled]
    if enrolled_only:
        fix.append(f"register again with 'jikimi provision register --lat --lon' ({', '.join(enrolled_only)})")
    return key, (f"alerts are forwarded ([forward]) but {len(missing)} registered site(s) have no position:"
                 f" {', '.join(missing)}; " + "; ".join(fix))


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
