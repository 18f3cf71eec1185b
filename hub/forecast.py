"""Pure: the network flood forecaster — a site's own depth and what the rest of the city shows.

Each edge forecasts from its own depth series only. The hub sees every site, and a storm moves
across a city: when sensors nearby have just crossed the closing depth (15 cm), or are wet and
rising, a dry site is more likely to flood soon. This module scores every site from:

- its own last ``OWN_WINDOW_SECS`` of depth: the depth, its rise rate over 3 and 10 minutes,
  the inverse projected time to the closing depth (the edge rule's own quantity) and whether
  the depth is at least the arming depth;
- the network's state at the same instant: for every *other* site that crossed the closing
  depth within ``CROSS_WINDOW_SECS``, a weight falling off with distance and age (summed at
  two distance scales), the nearest such crossing, how many sites crossed anywhere in the city;
  and the other sites wet now (a sample within ``WET_WINDOW_SECS`` at or above the arming
  depth), weighted by distance, with their depths and rises.

Causality is the invariant: :meth:`NetworkForecaster.observe` must be fed in time order (an
older sample than the latest seen raises), and :meth:`NetworkForecaster.scores` at ``t`` uses
only samples at or before ``t``. The forecast warns a site when the model's probability reaches
the threshold and the site's depth is at least the warning depth (both chosen on the validation
year; a warning depth of 0 lets the network warn a dry site). A parameter file may add a second,
below-gate path (``below_gate``): its own logistic model and its own, stricter threshold, read
only where the depth is under the warning depth, so the network can warn a site before its own
water rises. The models are logistic regressions over standardised features: numpy only, no
training library. Their weights, scales and thresholds live in a JSON parameter
file (``firmware-configs/models/network_warning.json``) written by ``jikimi model train
network``; the closing and arming depths come from that file, which takes them from the edge's
definitions at training time.

State is a ring of the last ``RING`` samples per site plus each site's latest crossing time:
memory and time per minute grow linearly with the number of sites, the network terms with
sites × (recently crossed + wet sites).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hub.errors import HubError

FloatArray = npt.NDArray[np.float64]

OWN_WINDOW_SECS = 600.0
SHORT_SECS = 180.0
CROSS_WINDOW_SECS = 7200.0
WET_WINDOW_SECS = 600.0
RING = 24
TTC_CAP = 10.0
EARTH_RADIUS_KM = 6371.0
# Distance scales (km) and the age scale (s) of the crossing weights.
NEAR_KM = 1.5
CITY_KM = 8.0
AGE_SECS = 2400.0

FEATURE_NAMES = (
    "depth",
    "rise_10min",
    "rise_3min",
    "inv_ttc",
    "armed",
    "cross_near",
    "cross_city",
    "cross_nearest",
    "cross_count",
    "wet_near",
    "wet_depth_near",
    "wet_rise_near",
    "armed_x_cross_near",
    "dry_x_cross_near",
    "armed_x_inv_ttc",
    "armed_x_depth",
    "armed_x_cross_city",
    "armed_x_wet_depth_near",
)
OWN_FEATURES = ("depth", "rise_10min", "rise_3min", "inv_ttc", "armed", "armed_x_inv_ttc", "armed_x_depth")
N_FEATURES = len(FEATURE_NAMES)


class ForecastError(HubError):
    """The network model's parameters are missing or malformed, or samples came out of order."""


@dataclass(frozen=True)
class BelowGatePath:
    """The second path: a logistic model read only below the warning depth, with its own threshold.

    Its weights apply to the raw (unstandardised) features; its threshold is on the logit, as the
    probabilities it needs to reach sit too close to 1 for a probability to state them well.
    """

    weights: FloatArray
    bias: float
    threshold_logit: float


@dataclass(frozen=True)
class NetworkParams:
    """What the trained model needs at run time (all read from its JSON file)."""

    closing_depth_cm: float
    arm_depth_cm: float
    mean: FloatArray
    scale: FloatArray
    weights: FloatArray
    bias: float
    threshold: float
    warn_depth_cm: float
    horizon_s: float = 1800.0
    """How far ahead the model was trained to warn (``label_horizon_secs``): a warning's lead."""
    below_gate: BelowGatePath | None = None
    """The optional second path for sites under the warning depth (None: such sites never warn)."""


def params_from_dict(raw: Mapping[str, Any], source: str = "parameters") -> NetworkParams:
    """Validate the parameter document; raises :class:`ForecastError` naming ``source`` and the key."""

    def number(key: str) -> float:
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ForecastError(f"{source}: {key}: expected a finite number")
        return float(v)

    def vector(key: str) -> FloatArray:
        v = raw.get(key)
        if not isinstance(v, list) or len(v) != N_FEATURES:
            raise ForecastError(f"{source}: {key}: expected a list of {N_FEATURES} numbers")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise ForecastError(f"{source}: {key}: expected finite numbers")
        return np.asarray(v, dtype=np.float64)

    def below_gate_path() -> BelowGatePath | None:
        v = raw.get("below_gate")
        if v is None:
            return None
        if not isinstance(v, dict):
            raise ForecastError(f"{source}: below_gate: expected an object or null")
        return params_from_below_gate(v, f"{source}: below_gate")

    if raw.get("features") != list(FEATURE_NAMES):
        raise ForecastError(f"{source}: features: not the features this hub computes {list(FEATURE_NAMES)}")
    scale = vector("scale")
    if np.any(scale <= 0.0):
        raise ForecastError(f"{source}: scale: every scale must be positive")
    if not 0.0 < number("threshold") <= 1.0:
        raise ForecastError(f"{source}: threshold: must be above 0 and at most 1")
    if number("warn_depth_cm") < 0.0:
        raise ForecastError(f"{source}: warn_depth_cm: must not be negative")
    closing = number("closing_depth_cm")
    arm = number("arm_depth_cm")
    if not 0.0 < arm < closing:
        raise ForecastError(f"{source}: arm_depth_cm: must be above 0 and below closing_depth_cm")
    return NetworkParams(
        closing_depth_cm=closing,
        arm_depth_cm=arm,
        mean=vector("mean"),
        scale=scale,
        weights=vector("weights"),
        bias=number("bias"),
        threshold=number("threshold"),
        warn_depth_cm=number("warn_depth_cm"),
        horizon_s=number("label_horizon_secs") if "label_horizon_secs" in raw else 1800.0,
        below_gate=below_gate_path(),
    )


def params_from_below_gate(raw: Mapping[str, Any], source: str) -> BelowGatePath:
    """Validate the ``below_gate`` object: ``weights`` (one per feature), ``bias``, ``threshold_logit``."""
    w = raw.get("weights")
    if not isinstance(w, list) or len(w) != N_FEATURES:
        raise ForecastError(f"{source}: weights: expected a list of {N_FEATURES} numbers")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in w):
        raise ForecastError(f"{source}: weights: expected finite numbers")
    out = []
    for key in ("bias", "threshold_logit"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ForecastError(f"{source}: {key}: expected a finite number")
        out.append(float(v))
    return BelowGatePath(weights=np.asarray(w, dtype=np.float64), bias=out[0], threshold_logit=out[1])


def load_params(path: Path, sha256: str | None = None) -> NetworkParams:
    """Read a parameter file; when ``sha256`` is given the file must hash to it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ForecastError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ForecastError(f"{path}: sha256 differs from the expected {sha256}")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ForecastError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ForecastError(f"{path}: expected a JSON object")
    return params_from_dict(raw, str(path))


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return out


def _gated(params: NetworkParams, features: FloatArray) -> npt.NDArray[np.bool_]:
    """Rows at or above the warning depth (the main path's rows)."""
    out: npt.NDArray[np.bool_] = features[:, 0] * params.closing_depth_cm >= params.warn_depth_cm
    return out


def below_gate_logit(params: NetworkParams, features: FloatArray) -> FloatArray:
    """The below-gate path's logit per row (-inf everywhere when the parameters have no such path)."""
    bg = params.below_gate
    if bg is None:
        return np.full(features.shape[0], -np.inf)
    out: FloatArray = features @ bg.weights + bg.bias
    return out


def probability(params: NetworkParams, features: FloatArray) -> FloatArray:
    """P(the site reaches the closing depth soon) for each row, from the path that reads that row.

    Rows at or above the warning depth: the main model. Below it: the below-gate model, or the
    main model when there is none (its probability is then shown, never acted on).
    """
    z = ((features - params.mean) / params.scale) @ params.weights + params.bias
    if params.below_gate is not None:
        z = np.where(_gated(params, features), z, below_gate_logit(params, features))
    return _sigmoid(z)


def score(params: NetworkParams, features: FloatArray) -> FloatArray:
    """What is compared with the threshold.

    At or above the warning depth: the main model's probability. Below it: 1 when the below-gate
    path reaches its own threshold, else 0 (so a sweep of the threshold traces the main path's
    curve with the below-gate path held at its chosen point).
    """
    gated = _gated(params, features)
    z = ((features - params.mean) / params.scale) @ params.weights + params.bias
    below = below_gate_logit(params, features)
    bg_fires = below >= (math.inf if params.below_gate is None else params.below_gate.threshold_logit)
    out: FloatArray = np.where(gated, _sigmoid(z), np.where(bg_fires, 1.0, 0.0))
    return out


def warns(params: NetworkParams, features: FloatArray) -> npt.NDArray[np.bool_]:
    """The forecast's decision per row: warn that the site will reach the closing depth soon."""
    out: npt.NDArray[np.bool_] = score(params, features) >= params.threshold
    return out


class NetworkForecaster:
    """The network state over a fixed set of sites, fed samples in time order.

    ``positions`` maps a site to (latitude, longitude) in degrees; a site without one (None)
    still gets its own features and the city-wide count, but no distance-weighted terms.
    """

    def __init__(self, sites: Sequence[str], positions: Mapping[str, tuple[float, float] | None],
                 closing_depth_cm: float, arm_depth_cm: float) -> None:
        self.sites = list(sites)
        self.index = {s: i for i, s in enumerate(self.sites)}
        if len(self.index) != len(self.sites):
            raise ForecastError("sites: a site is listed twice")
        n = len(self.sites)
        self.closing = closing_depth_cm
        self.arm = arm_depth_cm
        lat = np.full(n, np.nan)
        lon = np.full(n, np.nan)
        for s, i in self.index.items():
            p = positions.get(s)
            if p is not None:
                lat[i], lon[i] = p
        self._lat = np.radians(lat)
        self._lon = np.radians(lon)
        # unit vectors on the sphere, once: a block of distances is then one matrix product
        self._xyz = np.column_stack([np.cos(self._lat) * np.cos(self._lon), np.cos(self._lat) * np.sin(self._lon),
                                     np.sin(self._lat)])
        self._t = np.full((n, RING), -np.inf)
        self._d = np.zeros((n, RING))
        self._next = np.zeros(n, dtype=np.int64)
        self._last_cross = np.full(n, -np.inf)
        self._latest = -np.inf

    @property
    def latest(self) -> float:
        """The time of the newest sample taken (-inf before the first)."""
        return float(self._latest)

    def observe(self, site: str, t_secs: float, depth_cm: float) -> None:
        """Take one sample. Samples must come in time order across all sites."""
        if t_secs < self._latest:
            raise ForecastError(f"sample at {t_secs} after one at {self._latest}: out of time order")
        if not math.isfinite(depth_cm):
            raise ForecastError(f"site {site}: depth {depth_cm} is not a number")
        i = self.index.get(site)
        if i is None:
            raise ForecastError(f"site {site}: not a site of this forecaster")
        self._latest = t_secs
        slot = int(self._next[i])
        prev_slot = (slot - 1) % RING
        prev_d = self._d[i, prev_slot] if np.isfinite(self._t[i, prev_slot]) else 0.0
        if depth_cm >= self.closing and prev_d < self.closing:
            self._last_cross[i] = t_secs
        self._t[i, slot] = t_secs
        self._d[i, slot] = depth_cm
        self._next[i] = (slot + 1) % RING

    def reset_site(self, site: str) -> None:
        """Forget a site's own history (a new wet spell begins); its past crossings stay."""
        i = self.index[site]
        self._t[i] = -np.inf
        self._d[i] = 0.0

    def features(self, t_secs: float, which: Sequence[str] | None = None) -> FloatArray:
        """The feature rows (``len(which)`` × :data:`N_FEATURES`) at ``t_secs`` (default: all sites).

        ``t_secs`` may not be before the latest sample observed: the state at an earlier instant
        is gone (a later crossing replaces an earlier one), so the hub and the replay read the
        features right after observing the samples of that instant.
        """
        if t_secs < self._latest:
            raise ForecastError(f"features at {t_secs}: the state already holds a sample at {self._latest}")
        rows = np.arange(len(self.sites)) if which is None else np.array([self.index[s] for s in which], dtype=np.int64)
        t_all, d_all = self._t, self._d
        seen = t_all <= t_secs  # all of the ring, as t is not before the latest sample
        # Own features, vectorised over the ring; the newest sample is the last one written.
        tq = np.where(seen[rows], t_all[rows], -np.inf)
        dq = d_all[rows]
        last = (self._next[rows] - 1) % RING
        has = np.isfinite(tq[np.arange(rows.size), last])
        depth = np.where(has, dq[np.arange(rows.size), last], 0.0)
        rise10 = _rise(tq, dq, t_secs, OWN_WINDOW_SECS)
        rise3 = _rise(tq, dq, t_secs, SHORT_SECS)
        gap = np.maximum(self.closing - depth, 0.1)
        # (cm/min × 10 min) / gap: the inverse projected time to the closing depth, in 1/(10 min)
        inv_ttc = np.minimum(np.maximum(rise10, 0.0) * 10.0 / gap, TTC_CAP)
        armed = (depth >= self.arm).astype(np.float64)

        # Network: crossings of other sites within the window.
        age = t_secs - self._last_cross
        crossed = np.nonzero((age >= 0.0) & (age <= CROSS_WINDOW_SECS))[0]
        # Wet sites: latest sample within the wet window at or above the arming depth.
        t_seen = np.where(seen, t_all, -np.inf)
        last_all = (self._next - 1) % RING
        t_last = t_seen[np.arange(len(self.sites)), last_all]
        d_last = d_all[np.arange(len(self.sites)), last_all]
        wet = np.nonzero((t_secs - t_last <= WET_WINDOW_SECS) & (d_last >= self.arm))[0]

        cross_near = np.zeros(rows.size)
        cross_city = np.zeros(rows.size)
        cross_nearest = np.zeros(rows.size)
        cross_count = np.full(rows.size, float(crossed.size))
        wet_near = np.zeros(rows.size)
        wet_depth = np.zeros(rows.size)
        wet_rise = np.zeros(rows.size)
        # One distance matrix for every site that matters; a site is never its own neighbour.
        cols = np.union1d(crossed, wet)
        if cols.size:
            dist = self._distance(rows, cols)
            where_row = np.full(len(self.sites), -1)
            where_row[rows] = np.arange(rows.size)
            r = where_row[cols]
            own = r >= 0
            dist[r[own], np.nonzero(own)[0]] = np.inf
        if crossed.size:
            dc = dist[:, np.searchsorted(cols, crossed)]
            w_age = np.exp(-age[crossed] / AGE_SECS)
            cross_near = np.exp(-dc / NEAR_KM) @ w_age
            cross_city = np.exp(-dc / CITY_KM) @ w_age
            cross_nearest = np.exp(-np.min(dc, axis=1) / NEAR_KM)
            cross_count -= np.isin(rows, crossed)
        if wet.size:
            w = np.exp(-dist[:, np.searchsorted(cols, wet)] / NEAR_KM)
            wet_near = np.sum(w, axis=1)
            wet_depth = w @ (d_last[wet] / self.closing)
            wet_r = _rise(np.where(seen[wet], t_all[wet], -np.inf), d_all[wet], t_secs, OWN_WINDOW_SECS)
            wet_rise = w @ np.maximum(wet_r, 0.0)
        cross_log = np.log1p(np.maximum(cross_count, 0.0))
        out: FloatArray = np.column_stack([
            depth / self.closing,
            rise10,
            rise3,
            inv_ttc,
            armed,
            cross_near,
            cross_city,
            cross_nearest,
            cross_log,
            wet_near,
            wet_depth,
            wet_rise,
            armed * cross_near,
            (1.0 - armed) * cross_near,
            armed * inv_ttc,
            armed * depth / self.closing,
            armed * cross_city,
            armed * wet_depth,
        ])
        return out

    def _distance(self, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]) -> FloatArray:
        """Great-circle distance (km) between row sites and column sites; inf without a position.

        From the chord between unit vectors, |a - b|^2 = 2 - 2 a.b, so the whole block is one
        matrix product (the same distance as the haversine formula; at 10 m apart it differs by
        under a millimetre, far below the kernels' 1.5 and 8 km scales).
        """
        a, b = self._xyz[rows], self._xyz[cols]
        chord2 = np.maximum(2.0 - 2.0 * (a @ b.T), 0.0)
        d: FloatArray = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.minimum(np.sqrt(chord2) / 2.0, 1.0))
        return np.where(np.isnan(d), np.inf, d)


def _rise(t: FloatArray, d: FloatArray, t_now: float, window: float) -> FloatArray:
    """Least-squares depth slope (cm/min) of each row's samples within ``window`` of ``t_now``.

    ``t`` holds -inf where there is no usable sample. Fewer than two samples, or all at one
    instant, give 0 (as the edge's ``ols_slope``).
    """
    inside = (t >= t_now - window) & np.isfinite(t)
    n = inside.sum(axis=1)
    safe_n = np.maximum(n, 1)
    tt = np.where(inside, t - t_now, 0.0)
    dd = np.where(inside, d, 0.0)
    tm = tt.sum(axis=1) / safe_n
    dm = dd.sum(axis=1) / safe_n
    tc = np.where(inside, tt - tm[:, None], 0.0)
    denom = np.sum(tc * tc, axis=1)
    num = np.sum(tc * np.where(inside, dd - dm[:, None], 0.0), axis=1)
    ok = (n >= 2) & (denom > 0.0)
    out: FloatArray = np.where(ok, num / np.where(ok, denom, 1.0) * 60.0, 0.0)
    return out


@dataclass(frozen=True)
class Driver:
    """One neighbour behind a site's forecast: a recent crossing of the closing depth, or wet now."""

    site: str
    distance_km: float
    crossed_ago_s: float | None
    """Seconds since it crossed the closing depth (None: it did not within the window)."""
    depth_cm: float
    rise_cm_per_min: float
    weight: float
    """Its share in the near-distance terms: exp(-distance / NEAR_KM), times the crossing's age weight."""


def drivers(fc: NetworkForecaster, site: str, t_secs: float, limit: int = 5) -> list[Driver]:
    """The neighbours that weigh most in ``site``'s network terms at ``t_secs``, heaviest first.

    The same sets as :meth:`NetworkForecaster.features` (crossed within ``CROSS_WINDOW_SECS``,
    or wet within ``WET_WINDOW_SECS``), never the site itself nor a site without a position.
    """
    i = fc.index[site]
    n = len(fc.sites)
    age = t_secs - fc._last_cross
    crossed = (age >= 0.0) & (age <= CROSS_WINDOW_SECS)
    last = (fc._next - 1) % RING
    t_last = fc._t[np.arange(n), last]
    d_last = fc._d[np.arange(n), last]
    wet = (t_secs - t_last <= WET_WINDOW_SECS) & (d_last >= fc.arm) & (t_last <= t_secs)
    cand = np.nonzero(crossed | wet)[0]
    cand = cand[cand != i]
    if cand.size == 0:
        return []
    dist = fc._distance(np.array([i], dtype=np.int64), cand)[0]
    keep = np.isfinite(dist)
    cand, dist = cand[keep], dist[keep]
    w = np.exp(-dist / NEAR_KM) * np.where(crossed[cand], np.exp(-np.maximum(age[cand], 0.0) / AGE_SECS), 1.0)
    rise = _rise(fc._t[cand], fc._d[cand], t_secs, OWN_WINDOW_SECS)
    order = np.argsort(-w, kind="stable")[:limit]
    return [Driver(site=fc.sites[int(cand[k])], distance_km=round(float(dist[k]), 3),
                   crossed_ago_s=round(float(age[cand[k]]), 1) if crossed[cand[k]] else None,
                   depth_cm=round(float(d_last[cand[k]]), 2), rise_cm_per_min=round(float(rise[k]), 3),
                   weight=round(float(w[k]), 4)) for k in order]
