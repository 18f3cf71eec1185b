"""Running a ``.tflite`` model on the edge: LiteRT, checked against its model card, in a thread.

- The interpreter is ``ai_edge_litert.interpreter.Interpreter`` (``tflite_runtime`` where
  ai-edge-litert has no wheel). TensorFlow is never imported here.
- The model file is read once; its SHA-256 must equal the card's, else it is not loaded.
- One worker thread owns the interpreter (LiteRT interpreters are not thread-safe); callers
  submit inputs and wait, or ``await`` from asyncio.
- Health is a closed set: ``ok``, ``model_missing``, ``model_corrupt`` (hash mismatch or the
  flatbuffer does not load), ``failed`` (it loaded but an inference raised). Every non-ok
  state is logged once; the caller falls back to the rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InferenceError

log = logging.getLogger(__name__)


class Health(Enum):
    OK = "ok"
    MODEL_MISSING = "model_missing"
    MODEL_CORRUPT = "model_corrupt"
    FAILED = "failed"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def _reference_kernels(interpreter_class: Any) -> dict[str, Any]:
    """Interpreter options for LiteRT's reference kernels without the default XNNPACK delegate.

    For a network this small the delegate only costs memory (~1 MB of RSS, issue 17); the
    reference kernels give the same outputs for the shipped int8 model (tests/edge/inference/
    test_runtime.py compares them). Empty where the runtime has no such option.
    """
    module = __import__(interpreter_class.__module__, fromlist=["OpResolverType"])
    kind = getattr(getattr(module, "OpResolverType", None), "BUILTIN_REF", None)
    return {} if kind is None else {"experimental_op_resolver_type": kind}


@dataclass(frozen=True)
class ModelSpec:
    """What the card says about one model file: where it is, its hash, its threshold."""

    name: str
    path: Path
    sha256: str
    threshold: float
    arm_depth_cm: float = 0.0


def load_card(path: Path) -> dict[str, Any]:
    """The machine-readable model card (JSON). Raises :class:`InferenceError` naming it."""
    try:
        card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InferenceError(f"{path}: cannot read model card: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InferenceError(f"{path}: model card is not JSON: {exc}") from exc
    return card


def model_spec(card_path: Path, variant: str) -> ModelSpec:
    """The spec of ``variant`` (``float`` or ``int8``) from the card at ``card_path``."""
    card = load_card(card_path)
    try:
        entry = card["models"][variant]
        return ModelSpec(
            name=f"{card['name']}-{variant}",
            path=card_path.parent / str(entry["file"]),
            sha256=str(entry["sha256"]),
            threshold=float(entry["threshold"]),
            arm_depth_cm=float(entry.get("arm_depth_cm", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InferenceError(f"{card_path}: models.{variant}: incomplete entry: {exc}") from exc


class ModelRunner:
    """One ``.tflite`` model, loaded once into a worker thread, hash-checked.

    Never raises on construction: a missing or corrupt model leaves ``health`` non-ok and
    :meth:`predict` raising :class:`InferenceError`, so the caller keeps its rules in charge.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.health = Health.OK
        self.sha256: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="litert")
        self._interp: Any = None
        self._in_index = 0
        self._out_index = 0
        self._load()

    def _set_unhealthy(self, health: Health, event: str, error: str) -> None:
        if self.health is Health.OK:  # log once: the first departure from ok
            log.error(
                event,
                extra={"model": self.spec.name, "path": str(self.spec.path), "health": health.value, "error": error},
            )
        self.health = health

    def _load(self) -> None:
        try:
            data = self.spec.path.read_bytes()
        except OSError as exc:
            self._set_unhealthy(Health.MODEL_MISSING, "inference.model_missing", str(exc))
            return
        self.sha256 = hashlib.sha256(data).hexdigest()
        if self.sha256 != self.spec.sha256:
            self._set_unhealthy(
                Health.MODEL_CORRUPT,
                "inference.model_hash_mismatch",
                f"sha256 {self.sha256} != card {self.spec.sha256}",
            )
            return
        try:
            self._executor.submit(self._open, data).result()
        except (ValueError, RuntimeError) as exc:
            self._set_unhealthy(Health.MODEL_CORRUPT, "inference.model_load_failed", str(exc))
            return
        log.info("inference.model_loaded", extra={"model": self.spec.name, "sha256": self.sha256})

    def _open(self, data: bytes) -> None:
        cls = _interpreter_class()
        interp = cls(model_content=data, num_threads=1, **_reference_kernels(cls))
        interp.allocate_tensors()
        self._in_index = interp.get_input_details()[0]["index"]
        self._out_index = interp.get_output_details()[0]["index"]
        self._interp = interp

    def _invoke(self, x: npt.NDArray[np.float32]) -> float:
        self._interp.set_tensor(self._in_index, x.reshape(1, -1))
        self._interp.invoke()
        return float(self._interp.get_tensor(self._out_index).reshape(-1)[0])

    def predict(self, x: npt.NDArray[np.float32]) -> float:
        """The model's output for one input row, computed in the worker thread."""
        if self.health is not Health.OK:
            raise InferenceError(f"{self.spec.name}: model not available ({self.health.value})")
        try:
            return self._executor.submit(self._invoke, x).result()
        except (ValueError, RuntimeError) as exc:
            self._set_unhealthy(Health.FAILED, "inference.invoke_failed", str(exc))
            raise InferenceError(f"{self.spec.name}: inference failed: {exc}") from exc

    async def predict_async(self, x: npt.NDArray[np.float32]) -> float:
        """:meth:`predict` for asyncio callers: the event loop is not blocked."""
        return await asyncio.get_running_loop().run_in_executor(None, self.predict, x)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
