"""The hub's ``[forecast]`` section: whether and how the network forecast (hub/forecast.py) runs.

Example (every key has a default; the section itself may be left out: the forecast is off)::

    [forecast]
    enabled = true
    model = "network_warning.json"   # a bare name: the shipped model (firmware-configs/models/)
    # threshold = 0.6                # default: the model card's, chosen on the 2024 validation year
    priority = "high"                # the forecast alarm's ISA-18.2 priority
    every_s = 60                     # how often every site is scored
    hold_s = 30                      # samples are taken in time order once this old (batches from
                                     # different sites arrive out of step); older ones are counted, not used
    cap = false                      # also forward the forecast alarm as CAP (urgency Expected)
    prealert = true                  # send a signed forecast.prealert to the site's edge
    prealert_ttl_s = 1800            # the prealert's not_after, from its issue
    drivers = 5                      # neighbours named with each forecast alarm
    clear_after_s = 900              # the alarm clears once the site has not warned this long

CAP is off by default: at the card's operating point one non-flood event in about fourteen gets a
warning (6.6 % on the test years), and a CAP alert leaves the hub for city centres, 112 and 119,
who cannot see how it was made; a city turns it on once it has seen its own false-alarm rate. The
console alarm and the edge's prealert stay inside the system, so they are on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.forecast import ForecastError, NetworkParams, load_params
from hub.rules import AlarmPriority
from shared.paths import models_dir
from shared.tomlread import Table

DEFAULT_MODEL = "network_warning.json"


@dataclass(frozen=True)
class ForecastConfig:
    params: NetworkParams
    model: Path
    priority: AlarmPriority = AlarmPriority.HIGH
    every_s: float = 60.0
    hold_s: float = 30.0
    cap: bool = False
    prealert: bool = True
    prealert_ttl_s: float = 1800.0
    drivers: int = 5
    clear_after_s: float = 900.0


def parse_forecast(t: Table, *, present: bool) -> ForecastConfig | None:
    """``[forecast]``; None when it is absent (``present`` false) or ``enabled = false``. Errors
    name file and key."""
    enabled = t.flag("enabled", present)  # a [forecast] section, even empty, turns it on
    model = t.path("model", DEFAULT_MODEL)
    if not model.exists() and Path(t.text("model", DEFAULT_MODEL)).parent == Path():
        model = models_dir() / model.name  # a bare name: the shipped model
    priority = t.enum("priority", AlarmPriority, AlarmPriority.HIGH)
    threshold = t.optional_number("threshold", lo=0.0, hi=1.0)
    every_s = t.number("every_s", 60.0, positive=True)
    hold_s = t.number("hold_s", 30.0, lo=0.0)
    cap = t.flag("cap", False)
    prealert = t.flag("prealert", True)
    ttl = t.number("prealert_ttl_s", 1800.0, positive=True)
    drivers = t.integer("drivers", 5, lo=1, hi=20)
    clear_after_s = t.number("clear_after_s", 900.0, lo=0.0)
    t.done()
    if not enabled:
        return None
    try:
        params = load_params(model)
    except ForecastError as exc:
        raise t.error("model", str(exc)) from None
    if threshold is not None:
        params = NetworkParams(**{**vars(params), "threshold": threshold})
    return ForecastConfig(params=params, model=model, priority=priority, every_s=every_s, hold_s=hold_s, cap=cap,
                          prealert=prealert, prealert_ttl_s=ttl, drivers=drivers, clear_after_s=clear_after_s)
