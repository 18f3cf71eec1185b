"""Inference latency of the shipped flood model on this machine, for ``jikimi bench edge``.

Measures one forecaster call as the edge makes it: feature building from a trimmed history,
the hop into the LiteRT worker thread, and the invoke. Wall-clock per call; the figure is a
property of the machine, so the machine is reported with it.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from edge.errors import InferenceError
from edge.inference.features import N_FEATURES
from edge.inference.flood import FloodForecaster, Policy
from edge.inference.runtime import Health


def measure_inference(n_calls: int = 2000, variant: str | None = None) -> dict[str, Any]:
    """p50/p99 (ms) of ``FloodForecaster.update`` and of the bare model call over ``n_calls``."""
    if n_calls < 10:
        raise InferenceError("bench needs at least 10 calls")
    fc = FloodForecaster(variant=variant, policy=Policy.MODEL)
    try:
        if fc.health is not Health.OK:
            raise InferenceError(f"model not available: {fc.health.value}")
        depth = 5.0 + 4.0 * np.sin(np.arange(n_calls) / 30.0) ** 2
        update_ms = np.empty(n_calls)
        for i in range(n_calls):
            start = time.perf_counter()
            fc.update(60.0 * i, float(depth[i]))
            update_ms[i] = (time.perf_counter() - start) * 1000.0
        x = np.full(N_FEATURES, 0.3, dtype=np.float32)
        model_ms = np.empty(n_calls)
        for i in range(n_calls):
            start = time.perf_counter()
            fc.runner.predict(x)
            model_ms[i] = (time.perf_counter() - start) * 1000.0
        return {
            "model": fc.spec.name,
            "sha256": fc.model_sha256,
            "calls": n_calls,
            "update_p50_ms": round(float(np.percentile(update_ms, 50)), 4),
            "update_p99_ms": round(float(np.percentile(update_ms, 99)), 4),
            "model_p50_ms": round(float(np.percentile(model_ms, 50)), 4),
            "model_p99_ms": round(float(np.percentile(model_ms, 99)), 4),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.machine(),
                "python": platform.python_version(),
            },
        }
    finally:
        fc.close()
