"""Pure: the MQTT topics of DESIGN §3, built and parsed here and nowhere else.

    jk/v1/site/{site}/status|birth|data     edge → hub
    jk/v1/site/{site}/cmd|ack               hub → edge
    jk/v1/hub/{hub}/status                  hub → edges
    jk/v1/city/{city}/status|birth|data     city hub → province (over the city broker's bridge)
    jk/v1/city/{city}/ack|req               province → city hub

A city hub is to the province what an edge is to the city hub (DESIGN §8): the city channels
mirror the site channels, ``req`` carrying the province's requests down. A city id is the city
hub's id without ``hub-`` (``hub-suwon`` serves city ``suwon``).

Site and hub ids are validated on the way in and out, so no id can smuggle a ``/``, ``+``
or ``#`` into a topic.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from shared.errors import WireError

ROOT: Final = "jk/v1"
_SITE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_HUB_RE: Final = re.compile(r"^hub-[a-z0-9][a-z0-9-]{0,58}$")
_CITY_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,58}$")
HUB_PREFIX: Final = "hub-"


class SiteChannel(enum.StrEnum):
    STATUS = "status"
    BIRTH = "birth"
    DATA = "data"
    CMD = "cmd"
    ACK = "ack"

    @property
    def from_edge(self) -> bool:
        return self in (SiteChannel.STATUS, SiteChannel.BIRTH, SiteChannel.DATA)


@dataclass(frozen=True)
class SiteTopic:
    site: str
    channel: SiteChannel

    def __str__(self) -> str:
        return site_topic(self.site, self.channel)


@dataclass(frozen=True)
class HubTopic:
    hub: str

    def __str__(self) -> str:
        return hub_status_topic(self.hub)


class CityChannel(enum.StrEnum):
    STATUS = "status"
    BIRTH = "birth"
    DATA = "data"
    ACK = "ack"
    REQ = "req"

    @property
    def from_city(self) -> bool:
        return self in (CityChannel.STATUS, CityChannel.BIRTH, CityChannel.DATA)


@dataclass(frozen=True)
class CityTopic:
    city: str
    channel: CityChannel

    def __str__(self) -> str:
        return city_topic(self.city, self.channel)


def check_site_id(site: str) -> str:
    if not _SITE_RE.match(site):
        raise WireError(f"invalid site id {site!r}: use 2-63 of a-z, 0-9 and '-'")
    return site


def check_hub_id(hub: str) -> str:
    if not _HUB_RE.match(hub):
        raise WireError(f"invalid hub id {hub!r}: 'hub-' then a-z, 0-9 and '-'")
    return hub


def check_city_id(city: str) -> str:
    if not _CITY_RE.match(city):
        raise WireError(f"invalid city id {city!r}: 1-59 of a-z, 0-9 and '-'")
    return city


def city_of_hub(hub: str) -> str:
    """The city a city hub serves: its id without ``hub-``."""
    return check_city_id(check_hub_id(hub)[len(HUB_PREFIX):])


def city_topic(city: str, channel: CityChannel) -> str:
    return f"{ROOT}/city/{check_city_id(city)}/{channel.value}"


def all_cities(channel: CityChannel) -> str:
    """The filter the provincial hub subscribes with, e.g. ``jk/v1/city/+/data``."""
    return f"{ROOT}/city/+/{channel.value}"


def site_topic(site: str, channel: SiteChannel) -> str:
    return f"{ROOT}/site/{check_site_id(site)}/{channel.value}"


def hub_status_topic(hub: str) -> str:
    return f"{ROOT}/hub/{check_hub_id(hub)}/status"


def all_sites(channel: SiteChannel) -> str:
    """The filter a hub subscribes with, e.g. ``jk/v1/site/+/data``."""
    return f"{ROOT}/site/+/{channel.value}"


def all_hubs_status() -> str:
    return f"{ROOT}/hub/+/status"


def shared_subscription(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription (``$share/GROUP/FILTER``) to spread ingest over processes."""
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", group):
        raise WireError(f"invalid share group {group!r}")
    return f"$share/{group}/{topic_filter}"


def parse(topic: str) -> SiteTopic | HubTopic | CityTopic:
    """Parse a topic this system uses; anything else raises :class:`WireError`."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0:3] == ["jk", "v1", "site"]:
        try:
            channel = SiteChannel(parts[4])
        except ValueError:
            raise WireError(f"unknown site channel in topic {topic!r}") from None
        return SiteTopic(check_site_id(parts[3]), channel)
    if len(parts) == 5 and parts[0:3] == ["jk", "v1", "hub"] and parts[4] == "status":
        return HubTopic(check_hub_id(parts[3]))
    if len(parts) == 5 and parts[0:3] == ["jk", "v1", "city"]:
        try:
            city_channel = CityChannel(parts[4])
        except ValueError:
            raise WireError(f"unknown city channel in topic {topic!r}") from None
        return CityTopic(check_city_id(parts[3]), city_channel)
    raise WireError(f"not a jikimi topic: {topic!r}")
