"""The hub's network forecaster (pure): causal features, time order, and hostile parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import forecast as fc

# This checkout's models (an installed package could point elsewhere).
MODELS = Path(__file__).resolve().parents[2] / "firmware-configs" / "models"
SITES = ["a", "b", "c", "far"]
POSITIONS: dict[str, tuple[float, float] | None] = {
    "a": (40.70, -73.90),
    "b": (40.705, -73.905),  # about 0.7 km from a
    "c": (40.71, -73.89),
    "far": (40.90, -73.60),  # about 34 km away
}


def _net() -> fc.NetworkForecaster:
    return fc.NetworkForecaster(SITES, POSITIONS, closing_depth_cm=15.0, arm_depth_cm=10.16)


def _shipped() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((MODELS / "network_warning.json").read_text(encoding="utf-8"))
    return raw


Stream = list[tuple[float, str, float]]


def _feed(net: fc.NetworkForecaster, samples: Stream) -> None:
    for t, s, d in samples:
        net.observe(s, t, d)


samples_st = st.lists(
    st.tuples(st.integers(0, 7200), st.sampled_from(SITES), st.floats(0.0, 40.0)), min_size=1, max_size=60
).map(lambda xs: sorted([(float(t), s, d) for t, s, d in xs], key=lambda x: x[0]))


def _replay(samples: Stream) -> dict[float, fc.FloatArray]:
    """Features of every site right after each instant's samples, as the hub reads them."""
    net = _net()
    out: dict[float, fc.FloatArray] = {}
    for i, (t, s, d) in enumerate(samples):
        net.observe(s, t, d)
        if i + 1 == len(samples) or samples[i + 1][0] != t:
            out[t] = net.features(t)
    return out


@settings(max_examples=80, deadline=None)
@given(samples=samples_st, cut=st.integers(0, 7200), noise=st.floats(0.0, 40.0))
def test_features_at_t_ignore_everything_after_t(samples: Stream, cut: int, noise: float) -> None:
    """Altering, adding or dropping samples after t never changes any site's features at or before t."""
    t = float(cut)
    before = [x for x in samples if x[0] <= t]
    after = [x for x in samples if x[0] > t]
    want = _replay(before)
    for altered in (after, [(ts, s, noise) for ts, s, _ in after], [(t + 1.0, "a", 99.0), (t + 2.0, "b", 16.0)]):
        got = _replay(before + altered)
        for when, rows in want.items():
            np.testing.assert_array_equal(got[when], rows)


def test_features_before_the_latest_sample_are_refused() -> None:
    """Asking for an instant the state has moved past raises instead of answering with later data."""
    net = _net()
    net.observe("a", 100.0, 16.0)
    with pytest.raises(fc.ForecastError, match="already holds"):
        net.features(99.0)


def test_the_newest_of_two_samples_at_one_instant_is_the_depth() -> None:
    """Two samples of a site at the same second: the one observed last is its depth."""
    net = _net()
    net.observe("a", 0.0, 15.0)
    net.observe("a", 0.0, 3.0)
    assert net.features(0.0, ["a"])[0][0] == pytest.approx(3.0 / 15.0)


def test_a_neighbour_crossing_raises_the_network_terms_and_a_far_one_less() -> None:
    """A crossing 0.7 km away weighs more for site a than the same crossing 34 km away."""
    near, far = _net(), _net()
    for net, who in ((near, "b"), (far, "far")):
        net.observe(who, 0.0, 5.0)
        net.observe(who, 60.0, 16.0)
    i = fc.FEATURE_NAMES.index("cross_near")
    fa_near = near.features(600.0, ["a"])[0]
    fa_far = far.features(600.0, ["a"])[0]
    assert fa_near[i] > 0.5 > fa_far[i]
    assert fa_near[fc.FEATURE_NAMES.index("cross_count")] == pytest.approx(np.log1p(1.0))
    # a site is never its own neighbour
    assert near.features(600.0, ["b"])[0][i] == 0.0


def test_crossings_older_than_the_window_are_forgotten() -> None:
    """Two hours and more after a crossing the network terms are back to zero."""
    net = _net()
    net.observe("b", 0.0, 16.0)
    i = fc.FEATURE_NAMES.index("cross_city")
    assert net.features(fc.CROSS_WINDOW_SECS, ["a"])[0][i] > 0.0
    assert net.features(fc.CROSS_WINDOW_SECS + 1.0, ["a"])[0][i] == 0.0


def test_own_slope_matches_a_least_squares_fit() -> None:
    """A steady 1 cm/min rise reads as 1 cm/min over 3 and 10 minutes."""
    net = _net()
    for m in range(12):
        net.observe("a", 60.0 * m, 0.5 + m)
    row = net.features(660.0, ["a"])[0]
    assert row[fc.FEATURE_NAMES.index("rise_10min")] == pytest.approx(1.0)
    assert row[fc.FEATURE_NAMES.index("rise_3min")] == pytest.approx(1.0)
    assert row[fc.FEATURE_NAMES.index("depth")] == pytest.approx(11.5 / 15.0)


def test_samples_out_of_time_order_are_refused() -> None:
    """An older sample after a newer one (any site) raises: the state would no longer be causal."""
    net = _net()
    net.observe("a", 100.0, 1.0)
    with pytest.raises(fc.ForecastError, match="out of time order"):
        net.observe("b", 99.0, 1.0)


@pytest.mark.parametrize(
    ("site", "depth", "message"),
    [("nowhere", 1.0, "not a site"), ("a", float("nan"), "not a number"), ("a", float("inf"), "not a number")],
)
def test_hostile_samples_are_refused(site: str, depth: float, message: str) -> None:
    """An unknown site or a non-finite depth is an error, not a silent feature."""
    with pytest.raises(fc.ForecastError, match=message):
        _net().observe(site, 0.0, depth)


def test_a_site_without_a_position_gets_no_distance_terms() -> None:
    """No position: own features and the city-wide count only."""
    net = fc.NetworkForecaster(["a", "b"], {"a": None, "b": (40.7, -73.9)}, 15.0, 10.16)
    net.observe("b", 0.0, 16.0)
    row = net.features(60.0, ["a"])[0]
    assert row[fc.FEATURE_NAMES.index("cross_near")] == 0.0
    assert row[fc.FEATURE_NAMES.index("cross_count")] > 0.0


def test_shipped_parameters_load_and_match_the_card_hash() -> None:
    """The committed parameter file loads, with the SHA-256 the card records."""
    card = json.loads((MODELS / "network_warning_card.json").read_text(encoding="utf-8"))
    params = fc.load_params(MODELS / "network_warning.json", sha256=card["params_sha256"])
    assert 0.0 < params.threshold < 1.0


def test_a_tampered_parameter_file_fails_the_hash(tmp_path: Path) -> None:
    """One changed byte and the expected hash no longer matches."""
    path = tmp_path / "p.json"
    data = (MODELS / "network_warning.json").read_bytes()
    path.write_bytes(data.replace(b'"bias": ', b'"bias": 1'))
    with pytest.raises(fc.ForecastError, match="sha256"):
        fc.load_params(path, sha256="0" * 64)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"features": ["depth"]}, "features"),
        ({"weights": [1.0]}, "weights"),
        ({"weights": [float("nan")] * fc.N_FEATURES}, "weights"),
        ({"scale": [0.0] * fc.N_FEATURES}, "scale"),
        ({"threshold": "high"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"bias": None}, "bias"),
        ({"arm_depth_cm": 20.0}, "arm_depth_cm"),
        ({"warn_depth_cm": -1.0}, "warn_depth_cm"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"below_gate": "on"}, "below_gate"),
        ({"below_gate": [1, 2]}, "below_gate"),
        ({"below_gate": {"weights": [1.0], "bias": 0.0, "threshold_logit": 5.0}}, "below_gate: weights"),
        ({"below_gate": {"weights": [True] * fc.N_FEATURES, "bias": 0.0, "threshold_logit": 5.0}},
         "below_gate: weights"),
        ({"below_gate": {"weights": [0.0] * fc.N_FEATURES, "bias": "x", "threshold_logit": 5.0}},
         "below_gate: bias"),
        ({"below_gate": {"weights": [0.0] * fc.N_FEATURES, "bias": 0.0}}, "below_gate: threshold_logit"),
        ({"below_gate": {"weights": [0.0] * fc.N_FEATURES, "bias": 0.0, "threshold_logit": float("inf")}},
         "below_gate: threshold_logit"),
    ],
)
def test_malformed_parameters_name_the_key(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    """A broken parameter file is refused with its path and the offending key."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**_shipped(), **change}), encoding="utf-8")
    with pytest.raises(fc.ForecastError, match=f"{path}: {key}"):
        fc.load_params(path)


@pytest.mark.parametrize("content", [b"", b"[1, 2]", b"\xff\xfe", b"{"])
def test_a_parameter_file_that_is_not_an_object_is_refused(tmp_path: Path, content: bytes) -> None:
    """Empty, non-object, non-UTF-8 or truncated JSON: a clear error naming the file."""
    path = tmp_path / "p.json"
    path.write_bytes(content)
    with pytest.raises(fc.ForecastError, match=str(path)):
        fc.load_params(path)


def test_the_forecast_never_warns_below_its_warning_depth() -> None:
    """Whatever the probability, a site below the warning depth gets score 0."""
    params = fc.params_from_dict(_shipped())
    x = np.zeros((1, fc.N_FEATURES))
    x[0, 0] = (params.warn_depth_cm - 0.01) / params.closing_depth_cm
    forced = fc.params_from_dict({**_shipped(), "bias": 50.0})
    assert fc.score(forced, x)[0] == 0.0
    x[0, 0] = params.warn_depth_cm / params.closing_depth_cm
    assert fc.warns(forced, x)[0]


def _below_gate(bias: float, threshold_logit: float) -> dict[str, Any]:
    """Shipped parameters plus a below-gate path whose logit is ``bias`` (weights 0) everywhere."""
    return {**_shipped(), "below_gate": {"weights": [0.0] * fc.N_FEATURES, "bias": bias,
                                         "threshold_logit": threshold_logit}}


def test_the_below_gate_path_warns_a_dry_site_only_at_its_own_threshold() -> None:
    """Under the warning depth the second path decides, by its own threshold, whatever the main model says."""
    x = np.zeros((2, fc.N_FEATURES))
    shipped = fc.params_from_dict(_shipped())
    x[0, 0] = 0.0  # dry
    x[1, 0] = (shipped.warn_depth_cm - 0.01) / shipped.closing_depth_cm  # just under the gate
    below = fc.params_from_dict({**_below_gate(6.0, 5.0), "bias": -50.0})
    assert fc.warns(below, x).tolist() == [True, True]
    assert fc.warns(fc.params_from_dict(_below_gate(4.9, 5.0)), x).tolist() == [False, False]
    # the main model, however sure, still never warns under the gate
    assert not fc.warns(fc.params_from_dict({**_below_gate(-50.0, 5.0), "bias": 50.0}), x).any()


def test_the_below_gate_path_leaves_sites_at_the_gate_to_the_main_model() -> None:
    """At or above the warning depth, a below-gate path that always fires changes nothing."""
    shipped = fc.params_from_dict(_shipped())
    x = np.zeros((1, fc.N_FEATURES))
    x[0, 0] = shipped.warn_depth_cm / shipped.closing_depth_cm
    for bias, expected in ((-50.0, False), (50.0, True)):
        p = fc.params_from_dict({**_below_gate(50.0, 0.0), "bias": bias})
        assert fc.warns(p, x)[0] is np.bool_(expected)


def test_probability_below_the_gate_is_the_below_gate_models() -> None:
    """The probability shown for a dry site (the prealert's) comes from the path that judges it."""
    x = np.zeros((1, fc.N_FEATURES))
    p = fc.params_from_dict({**_below_gate(2.0, 5.0), "bias": -50.0})
    assert fc.probability(p, x)[0] == pytest.approx(1.0 / (1.0 + np.exp(-2.0)))
    assert fc.below_gate_logit(fc.params_from_dict(_shipped()), x)[0] == -np.inf
