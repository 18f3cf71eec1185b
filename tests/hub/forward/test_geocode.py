"""Pure: a notice placed only by its area's geocode renders in every format: CAP whose <area>
holds areaDesc and geocode only (valid against the shipped schema), a platform event without a
location, a webhook alert with the geocode; an operation over an area of no placed site too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from hub.alerting import AREA_GEOCODE, operation_notice
from hub.config import HubConfig
from hub.forward import capread, keti, webhook
from hub.forward.cap import render
from hub.forward.capread import CapSchema
from hub.forward.config import Format
from hub.forward.plan import Notice, plan
from hub.sites import SiteEntry, SitesConfig
from tests.hub.forward.helpers import config, notice, recipient

GEO = ((AREA_GEOCODE, "suwon-gwonseon"),)


def _unplaced() -> Notice:
    return notice(position=None, geocodes=GEO)


def test_a_notice_needs_a_position_a_polygon_or_a_geocode() -> None:
    """Neither position, polygon nor geocode: the notice cannot be placed at all and is refused."""
    with pytest.raises(ValueError, match="position"):
        notice(position=None)


def test_cap_of_a_geocode_only_notice_is_schema_valid() -> None:
    """The CAP <area> carries the geocode and no circle, in both languages, and validates."""
    planned = plan(_unplaced(), None, config(recipient("c", "https://c.example/cap", areas=("*",))), "hub-test.g")
    assert planned is not None
    xml = render(planned.facts)
    assert CapSchema().errors(xml) == ()
    for info in capread.read(xml).infos:
        (area,) = info.areas
        assert (area.circles, area.polygons, area.geocodes) == ((), (), GEO)


def test_platform_event_and_webhook_of_a_geocode_only_notice() -> None:
    """The platform event has no location (its 'area' item names the area); the webhook has the geocode."""
    cfg = config(recipient("p", "https://p.example/e", areas=("*",), format=Format.KETI),
                 recipient("w", "https://w.example/h", areas=("*",), format=Format.WEBHOOK))
    planned = plan(_unplaced(), None, cfg, "hub-test.k")
    assert planned is not None
    event = keti.decode(keti.render(planned, planned.facts))
    assert event.location is None
    assert ("area", "suwon-gwonseon") in {(i.name, i.value) for i in event.items}
    hook = webhook.decode(webhook.render(planned, planned.facts))
    assert [a.geocodes for a in hook.areas] == [[GEO[0]]]
    assert [a.circles for a in hook.areas] == [[]]


def test_an_operation_over_an_area_without_placed_sites_is_placed_by_its_geocode() -> None:
    """An evacuation of an area whose sites have no position still becomes a notice (no longer
    dropped): by the area's geocode; with a placed site it is a circle around it."""
    def cfg(entry: SiteEntry) -> HubConfig:  # operation_notice reads only the sites
        return cast(HubConfig, SimpleNamespace(sites=SitesConfig(registry={"gg-a-01": entry})))

    unplaced = operation_notice(cfg(SiteEntry(area="gg-a")), "op-1", "evacuate", "gg-a", "sam", "flood", 1.0)
    assert (unplaced.position, unplaced.geocodes) == (None, ((AREA_GEOCODE, "gg-a"),))
    placed = operation_notice(cfg(SiteEntry(area="gg-a", lat=37.0, lon=127.0)), "op-1", "evacuate", "gg-a", "sam",
                              "flood", 1.0)
    assert placed.position is not None
    assert placed.geocodes == ()
