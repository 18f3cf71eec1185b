"""``FloodForecaster``: the edge's flood-rise forecaster, fed depth samples causally.

The edge agent feeds each depth sample ``(t_secs, depth_cm)`` of the site's gauge in order
and gets a :class:`Forecast`: whether to close now on the forecast, which policy decided,
and the model's probability when it ran. The close decision itself is
:func:`edge.inference.decision.should_close` (forecast or the 15 cm fallback).

Rules of the forecaster:

- Causal: a forecast uses only samples fed so far. History is trimmed to what the features
  look at (:data:`~edge.inference.features.KEEP_SECS` plus one sample), which leaves the
  features unchanged.
- The caller marks the start of a flood event with :meth:`reset` (the FloodNet events that
  the model was trained and scored on start when the street becomes wet).
- The model warns when its probability is at least the card's threshold *and* the depth is
  at least the card's arming depth (like the rule, it is not trusted on a barely wet road).
- The model card says which policy is in charge (``in_charge``: ``model`` or ``rule``). The
  model runs whenever it is healthy, so its hash and health are reported either way.
- When the model is missing, corrupt or fails, the rule decides; this is logged once by the
  runner and visible in :attr:`health`. It never raises for a model problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edge.errors import InferenceError
from edge.inference import rule
from edge.inference.features import KEEP_SECS, flood_features
from edge.inference.runtime import Health, ModelRunner, load_card, model_spec
from shared.paths import models_dir

CARD_FILE = "flood_rise.json"


def default_card_path() -> Path:
    return models_dir() / CARD_FILE


class Policy(Enum):
    MODEL = "model"
    RULE = "rule"


@dataclass(frozen=True)
class Forecast:
    """One sample's forecast: ``warns`` means close now on the forecast."""

    warns: bool
    decided_by: Policy
    probability: float | None
    score: float | None = None


class FloodForecaster:
    """Feed samples with :meth:`update`; read ``health`` and ``model_sha256`` for telemetry."""

    def __init__(
        self,
        card_path: Path | None = None,
        variant: str | None = None,
        policy: Policy | None = None,
        runner: ModelRunner | None = None,
    ) -> None:
        """Load the card and its model. ``variant`` defaults to the card's shipped variant,
        ``policy`` to the card's ``in_charge``; ``runner`` lets tests pass a prepared one."""
        path = card_path or default_card_path()
        card = load_card(path)
        try:
            self.variant = variant or str(card["shipped_variant"])
            self.policy = policy or Policy(str(card["in_charge"]))
            self.rule_horizon_secs = float(card["rule"]["horizon_secs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InferenceError(f"{path}: incomplete model card: {exc}") from exc
        self.spec = model_spec(path, self.variant)
        self.runner = runner or ModelRunner(self.spec)
        self._t: list[float] = []
        self._d: list[float] = []
        self._start: float | None = None

    @property
    def health(self) -> Health:
        return self.runner.health

    @property
    def model_sha256(self) -> str | None:
        """The loaded model's SHA-256 (None when the file is missing): for the birth message."""
        return self.runner.sha256

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def reset(self) -> None:
        """Start a new flood event: forget the history."""
        self._t.clear()
        self._d.clear()
        self._start = None

    def update(self, t_secs: float, depth_cm: float) -> Forecast:
        """Take one sample (times non-decreasing) and forecast from the history so far."""
        if self._t and t_secs < self._t[-1]:
            raise InferenceError(f"sample time {t_secs} is before the previous {self._t[-1]}")
        if self._start is None:
            self._start = t_secs
        self._t.append(t_secs)
        self._d.append(depth_cm)
        self._trim()
        t, d = self._t, self._d
        probability: float | None = None
        if self.runner.health is Health.OK:
            try:
                probability = self.runner.predict(flood_features(t, d, self._start))
            except InferenceError:
                probability = None  # logged once by the runner; the rule decides below
        score = None if probability is None else self.model_score(probability, depth_cm)
        if self.policy is Policy.MODEL and score is not None:
            return Forecast(score >= self.spec.threshold, Policy.MODEL, probability, score)
        warns = rule.rule_warns(t, d, self.rule_horizon_secs)
        return Forecast(warns, Policy.RULE, probability, score)

    def model_score(self, probability: float, depth_cm: float) -> float:
        """The model's probability once armed (depth ≥ the card's arming depth), else 0."""
        return probability if depth_cm >= self.spec.arm_depth_cm else 0.0

    def _trim(self) -> None:
        cutoff = self._t[-1] - KEEP_SECS
        drop = 0
        while drop + 1 < len(self._t) and self._t[drop + 1] <= cutoff:
            drop += 1
        if drop:
            del self._t[:drop]
            del self._d[:drop]

    def close(self) -> None:
        self.runner.close()
