"""The province API's responses (province/api.py): what a provincial operator sees of every city.

Every age is seconds before the province's clock at the time of the request; ``None`` when the
province has nothing to measure it from.
"""

from __future__ import annotations

import msgspec


class CityView(msgspec.Struct, frozen=True, kw_only=True):
    city: str
    hub: str | None
    """The city hub that serves it (its birth or status), None before either arrived."""
    hub_version: str | None
    link: str
    """The city link's health from the city's retained status (its Will says ``offline``):
    ``online``, ``offline``, or ``unknown`` before any status."""
    status_age_s: float | None
    """Age of that status as the city dated it."""
    last_record_ts: float | None
    """The newest record time of what the province committed for the city."""
    data_age_s: float | None
    """Now less ``last_record_ts``."""
    last_batch_age_s: float | None
    """Since the province last committed a batch of the city."""
    lag_s: float | None
    """City → province lag of that batch (its commit time less its newest record's time)."""
    epoch: int | None
    """The epoch of the city outbox's latest committed batch."""
    records_committed: int
    quarantined: int
    """Messages on the city's topics the province quarantined (bounded; oldest dropped first)."""
    sites: int
    """Sites in the city's birth."""


class SiteView(msgspec.Struct, frozen=True, kw_only=True):
    city: str
    site: str
    state: str
    """``online`` or ``offline`` as the city hub sees the site."""
    data_age_s: float | None
    """Now less the site's newest data acquisition time as its city hub reported it."""
    state_age_s: float
    """Age of that report."""
    lat: float | None
    lon: float | None
    catchment: str | None


class AlarmView(msgspec.Struct, frozen=True, kw_only=True):
    city: str
    alarm_id: str
    site: str
    rule: str
    severity: str
    state: str
    raised_at: float
    data_age_s: float | None
    """The data age of the alarm's site (None when its city sent no state for the site)."""
    lat: float | None = None
    lon: float | None = None
    """Where the alarm is (its own place, else its site's): the province's map."""


class IncidentView(msgspec.Struct, frozen=True, kw_only=True):
    incident_id: str
    cities: list[str]
    alarms: list[AlarmView]
    """Its member alarms, earliest first (province/grouping.py)."""


class HealthView(msgspec.Struct, frozen=True, kw_only=True):
    """Public: counts only, no province, city or site ids."""

    status: str
    mqtt_connected: bool
    uptime_s: float
    cities: int
    cities_online: int
    records_committed: int
