"""Running a ``.tflite`` model on the edge: checked against its model card, in a thread.

- Two engines run a model; :func:`select_engine` alone decides which. The edge's own int8
  runner (edge/inference/int8.py) runs any model whose every op, type and option it supports,
  the shipped flood model among them; anything else goes to LiteRT
  (``ai_edge_litert.interpreter.Interpreter``, ``tflite_runtime`` where ai-edge-litert has no
  wheel). TensorFlow is never imported here.
- Why an int8 runner of our own: the edge's footprint goal (issue 17: a 10-device site with its
  model in ≤ 60 MB RSS). numpy (~15 MB) and LiteRT (~10 MB) cost more than the whole rest of
  the agent, for a 21-input network of ~1,200 multiply-adds. The runner is plain Python on the
  same file, with TFLite's reference integer arithmetic; tests/edge/inference/test_int8.py
  checks that its output equals LiteRT's bit for bit on every test-year sample and on hostile
  inputs, so the card's figures hold. LiteRT stays for any model the runner refuses.
- The engine in use is :attr:`ModelRunner.engine`, logged with ``inference.model_loaded``
  (and the reason when the int8 runner refused the model).
- The model file is read once; its SHA-256 must equal the card's, else it is not loaded.
- One worker thread owns the engine (LiteRT interpreters are not thread-safe; the int8 runner
  keeps the same contract); callers submit inputs and wait, or ``await`` from asyncio.
- Health is a closed set: ``ok``, ``model_missing``, ``model_corrupt`` (hash mismatch or the
  flatbuffer does not load), ``failed`` (it loaded but an inference raised). Every non-ok
  state is logged once; the caller falls back to the rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from edge.errors import InferenceError
from edge.inference import int8
from edge.inference.features import Series

log = logging.getLogger(__name__)


class Health(Enum):
    OK = "ok"
    MODEL_MISSING = "model_missing"
    MODEL_CORRUPT = "model_corrupt"
    FAILED = "failed"


class Engine(Enum):
    """What runs a loaded model."""

    INT8 = "int8"  # edge/inference/int8.py, plain Python
    LITERT = "litert"


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine | None
    """None: the file is no TFLite model the runner can read, and nothing is to load it."""
    model: int8.Int8Model | None  # the prepared int8 model when ``engine`` is INT8
    refused: str | None = None  # why the int8 runner did not take it


def select_engine(data: bytes) -> EngineChoice:
    """The one place that decides what runs a model file: the int8 runner when it supports
    every op, type and option in it, else LiteRT. A file the runner cannot even read as a
    TFLite flatbuffer goes to neither: LiteRT does not check the flatbuffer it is handed, and
    half of the shipped model (its hash made to match) crashed it with a segfault, which would
    end the agent; such a model is corrupt, and the rules decide."""
    try:
        return EngineChoice(Engine.INT8, int8.load(data))
    except int8.UnsupportedModel as exc:
        return EngineChoice(Engine.LITERT, None, str(exc))
    except int8.ModelFormatError as exc:
        return EngineChoice(None, None, str(exc))


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
        self.engine: Engine | None = None
        """What runs the model once loaded (None while it is missing or corrupt)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._int8: int8.Int8Model | None = None
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
        choice = select_engine(data)
        if choice.engine is None:
            self._set_unhealthy(Health.MODEL_CORRUPT, "inference.model_unreadable", f"int8 runner: {choice.refused}")
            return
        if choice.engine is Engine.LITERT:
            try:
                self._executor.submit(self._open, data).result()
            except (ValueError, RuntimeError) as exc:
                self._set_unhealthy(Health.MODEL_CORRUPT, "inference.model_load_failed",
                                    f"{exc} (int8 runner: {choice.refused})")
                return
        self._int8 = choice.model
        self.engine = choice.engine
        log.info("inference.model_loaded", extra={
            "model": self.spec.name, "sha256": self.sha256, "engine": choice.engine.value,
            **({} if choice.refused is None else {"int8_refused": choice.refused})})

    def _open(self, data: bytes) -> None:
        cls = _interpreter_class()
        interp = cls(model_content=data, num_threads=1, **_reference_kernels(cls))
        interp.allocate_tensors()
        self._in_index = interp.get_input_details()[0]["index"]
        self._out_index = interp.get_output_details()[0]["index"]
        self._interp = interp

    def _invoke(self, x: Sequence[float]) -> float:
        if self._int8 is not None:
            return self._int8.run(x)[0]
        import numpy as np  # only with LiteRT, which needs it anyway

        self._interp.set_tensor(self._in_index, np.asarray(x, dtype=np.float32).reshape(1, -1))
        self._interp.invoke()
        return float(self._interp.get_tensor(self._out_index).reshape(-1)[0])

    def predict(self, x: Series) -> float:
        """The model's output for one input row (a list, or a numpy array), computed in the worker thread."""
        if self.health is not Health.OK:
            raise InferenceError(f"{self.spec.name}: model not available ({self.health.value})")
        row = [float(x[i]) for i in range(len(x))]
        try:
            return self._executor.submit(self._invoke, row).result()
        except (ValueError, RuntimeError, InferenceError) as exc:
            self._set_unhealthy(Health.FAILED, "inference.invoke_failed", str(exc))
            raise InferenceError(f"{self.spec.name}: inference failed: {exc}") from exc

    async def predict_async(self, x: Series) -> float:
        """:meth:`predict` for asyncio callers: the event loop is not blocked."""
        return await asyncio.get_running_loop().run_in_executor(None, self.predict, x)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
