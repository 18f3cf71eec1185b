"""Topics are built and parsed in one place and cannot carry wildcards."""

from __future__ import annotations

import pytest
from hypothesis import given

from shared import topics as t
from shared.errors import WireError
from tests.shared import strategies as s


@given(s.site_ids)
def test_site_topics_round_trip(site: str) -> None:
    for channel in t.SiteChannel:
        assert t.parse(t.site_topic(site, channel)) == t.SiteTopic(site, channel)


@given(s.hub_ids)
def test_hub_topic_round_trips(hub: str) -> None:
    assert t.parse(t.hub_status_topic(hub)) == t.HubTopic(hub)


def test_design_topic_strings() -> None:
    """The exact strings of DESIGN §3."""
    assert t.site_topic("gg-suwon-up-0031", t.SiteChannel.DATA) == "jk/v1/site/gg-suwon-up-0031/data"
    assert t.hub_status_topic("hub-suwon") == "jk/v1/hub/hub-suwon/status"
    assert t.all_sites(t.SiteChannel.STATUS) == "jk/v1/site/+/status"
    assert t.shared_subscription("ingest", t.all_sites(t.SiteChannel.DATA)) == "$share/ingest/jk/v1/site/+/data"


@pytest.mark.parametrize("site", ["a", "+", "#", "gg/x", "GG-UPPER", "-lead", "x" * 64, ""])
def test_bad_site_ids_are_refused(site: str) -> None:
    with pytest.raises(WireError):
        t.site_topic(site, t.SiteChannel.DATA)


@pytest.mark.parametrize(
    "topic",
    ["jk/v1/site/gg-x-01/other", "jk/v2/site/gg-x-01/data", "jk/v1/site/gg-x-01", "jk/v1/hub/hub-a/data",
     "jk/v1/site/+/data", "random"],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(WireError):
        t.parse(topic)


def test_city_topics_round_trip_and_follow_the_hub_id() -> None:
    assert t.city_of_hub("hub-suwon") == "suwon"
    assert t.city_topic("suwon", t.CityChannel.DATA) == "jk/v1/city/suwon/data"
    assert t.all_cities(t.CityChannel.DATA) == "jk/v1/city/+/data"
    for channel in t.CityChannel:
        assert t.parse(t.city_topic("bucheon", channel)) == t.CityTopic("bucheon", channel)
    assert {c for c in t.CityChannel if c.from_city} == {t.CityChannel.STATUS, t.CityChannel.BIRTH,
                                                          t.CityChannel.DATA}


@pytest.mark.parametrize("topic", ["jk/v1/city/+/data", "jk/v1/city/#/ack", "jk/v1/city/Suwon/data",
                                   "jk/v1/city/suwon/cmd", "jk/v1/city/suwon/data/x"])
def test_bad_city_topics_are_refused(topic: str) -> None:
    with pytest.raises(WireError):
        t.parse(topic)
