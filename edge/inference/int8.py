"""Pure: the edge's own runner for small int8 ``.tflite`` models, in plain Python.

It reads the same file LiteRT does (a minimal, bounds-checked reader of the TFLite flatbuffer
schema fields it needs) and computes what LiteRT's reference kernels compute, bit for bit
(tests/edge/inference/test_int8.py compares every test-year sample and hostile inputs):

- QUANTIZE float32 → int8 (per tensor): ``round(x / scale)`` in double, half away from zero,
  converted to int32 as x86 does (NaN and anything out of the int32 range become INT32_MIN),
  plus the zero point with int32 wrap-around, clamped to [-128, 127]. So a NaN or a huge input
  of either sign quantizes as LiteRT's reference kernel makes it on x86.
- FULLY_CONNECTED int8 × int8 (weights per tensor or per output channel, zero point 0) + int32
  bias: the int32 sum is scaled by the quantized multiplier and shift TFLite derives from
  ``input_scale * weight_scale / output_scale`` (``frexp``, 31-bit significand), applied in
  TFLite's single-rounding form (the one LiteRT's wheels are built with), plus
  the output zero point, clamped to the fused activation's range (none or relu).
- LOGISTIC int8 → int8 (output scale 1/256, zero point -128): TFLite's 256-entry lookup table,
  built in float32 as TFLite builds it.
- DEQUANTIZE int8 → float32: ``scale * (q - zero_point)`` in double, rounded to float32.

Anything else (another op, type, option, shape or a sum that could overflow int32) is refused at
load with :class:`UnsupportedModel` naming it; a file that is not a readable TFLite flatbuffer
raises :class:`ModelFormatError`. :func:`edge.inference.runtime.select_engine` decides what then
runs the model.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from edge.errors import InferenceError

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
INT8_MIN: Final = -128
INT8_MAX: Final = 127

# TFLite schema enum values (tensorflow/lite/schema/schema.fbs).
_FLOAT32, _INT32, _INT8 = 0, 2, 9
_TYPE_NAMES: Final = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
                      7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64"}
_DEQUANTIZE, _FULLY_CONNECTED, _LOGISTIC, _QUANTIZE = 6, 9, 14, 114
_OP_NAMES: Final = {_DEQUANTIZE: "DEQUANTIZE", _FULLY_CONNECTED: "FULLY_CONNECTED", _LOGISTIC: "LOGISTIC",
                    _QUANTIZE: "QUANTIZE"}
# BuiltinOptions union members each op may carry (0: none).
_OPTIONS: Final = {_DEQUANTIZE: {0, 38}, _FULLY_CONNECTED: {0, 8}, _LOGISTIC: {0}, _QUANTIZE: {0, 89}}
_ACT_NONE, _ACT_RELU = 0, 1
_ACT_NAMES: Final = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


class ModelFormatError(InferenceError):
    """The bytes are not a TFLite flatbuffer this reader can follow."""


class UnsupportedModel(InferenceError):
    """A readable model that uses an op, type or option this runner does not run."""


# --- a minimal flatbuffer reader --------------------------------------------------------------


def _unpack(buf: bytes, fmt: str, pos: int) -> tuple[int | float, ...]:
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise ModelFormatError(f"offset {pos} (+{size}) is outside the {len(buf)}-byte file")
    return struct.unpack_from(fmt, buf, pos)


def _u32(buf: bytes, pos: int) -> int:
    return int(_unpack(buf, "<I", pos)[0])


class _Table:
    """One flatbuffer table: fields by their slot number in the schema."""

    __slots__ = ("buf", "pos", "vtable", "vtable_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - int(_unpack(buf, "<i", pos)[0])
        self.vtable_len = int(_unpack(buf, "<H", self.vtable)[0])

    def _field(self, slot: int) -> int:
        """Absolute position of the field, or 0 when it is absent (its default applies)."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_len:
            return 0
        off = int(_unpack(self.buf, "<H", self.vtable + entry)[0])
        return self.pos + off if off else 0

    def has(self, slot: int) -> bool:
        return self._field(slot) != 0

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        pos = self._field(slot)
        return default if not pos else int(_unpack(self.buf, "<" + fmt, pos)[0])

    def table(self, slot: int) -> _Table | None:
        pos = self._field(slot)
        return None if not pos else _Table(self.buf, pos + _u32(self.buf, pos))

    def _vector(self, slot: int, elem: int) -> tuple[int, int]:
        pos = self._field(slot)
        if not pos:
            return 0, 0
        start = pos + _u32(self.buf, pos)
        n = _u32(self.buf, start)
        if start + 4 + n * elem > len(self.buf):
            raise ModelFormatError(f"a vector of {n} at {start} runs past the end of the file")
        return start + 4, n

    def scalars(self, slot: int, fmt: str) -> tuple[int | float, ...]:
        start, n = self._vector(slot, struct.calcsize(fmt))
        return struct.unpack_from(f"<{n}{fmt}", self.buf, start) if n else ()

    def tables(self, slot: int) -> list[_Table]:
        start, n = self._vector(slot, 4)
        return [_Table(self.buf, p + _u32(self.buf, p)) for p in range(start, start + 4 * n, 4)]

    def raw(self, slot: int) -> bytes:
        start, n = self._vector(slot, 1)
        return bytes(self.buf[start:start + n])


# --- TFLite's integer arithmetic ---------------------------------------------------------------


def _round_away(x: float) -> float:
    """``std::round``: halves away from zero (NaN and ±inf stay as they are)."""
    if not math.isfinite(x):
        return x
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _wrap32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def _to_int32(x: float) -> int:
    """A double to int32 as x86's conversion does: NaN and out-of-range give INT32_MIN."""
    if math.isnan(x) or not INT32_MIN <= x < 2**31:
        return INT32_MIN
    return int(x)


def f32(x: float) -> float:
    """``x`` rounded to float32 (overflow gives ±inf, as a C cast does)."""
    return array("f", (x,))[0]


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: (31-bit significand, shift) with real ≈ m · 2^(shift-31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(_round_away(q * 2**31))
    if fixed == 2**31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """``x · multiplier · 2^(shift-31)`` rounded once, half up: TFLite's single-rounding form.

    LiteRT's wheels are built with ``TFLITE_SINGLE_ROUNDING``. The older two-step form (rounding
    doubling high multiply, then rounding divide by a power of two) rounds some sums one step
    differently: on random inputs it changed this model's output for about 4 in 1,000 rows
    against LiteRT, so it is not what LiteRT runs.
    """
    total = 31 - shift
    return (x * multiplier + (1 << (total - 1))) >> total


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type: int
    buffer: int
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        return f"tensor {self.index} ({self.name!r}, {_TYPE_NAMES.get(self.type, self.type)})"


Step = Callable[[list[float] | list[int]], list[float] | list[int]]


@dataclass(frozen=True)
class _Op:
    name: str
    input: int
    output: int
    run: Step


class Int8Model:
    """A loaded model: :meth:`run` maps one float input row to the float outputs."""

    def __init__(self, ops: list[_Op], input_index: int, input_size: int, output_index: int) -> None:
        self._ops = ops
        self._input = input_index
        self.input_size = input_size
        self._output = output_index
        self.ops = tuple(op.name for op in ops)

    def run(self, x: Sequence[float]) -> list[float]:
        """The outputs for one input row of :attr:`input_size` values (taken as float32)."""
        if len(x) != self.input_size:
            raise InferenceError(f"input has {len(x)} values, the model takes {self.input_size}")
        values: dict[int, list[float] | list[int]] = {self._input: array("f", x).tolist()}
        for op in self._ops:
            values[op.output] = op.run(values[op.input])
        out = values[self._output]
        return [float(v) for v in out]


def load(data: bytes) -> Int8Model:
    """Parse ``data`` (a ``.tflite`` file) and prepare its ops.

    Raises :class:`ModelFormatError` if the flatbuffer cannot be read, :class:`UnsupportedModel`
    naming the first op, type or option this runner does not run.
    """
    try:
        return _load(data)
    except struct.error as exc:  # a bounds check above should come first; never let one escape
        raise ModelFormatError(f"unreadable flatbuffer: {exc}") from exc


def _load(data: bytes) -> Int8Model:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = _Table(data, _u32(data, 0))
    version = model.scalar(0, "I")
    if version != 3:
        raise UnsupportedModel(f"schema version {version} (supported: 3)")
    codes: list[int] = []
    for oc in model.tables(1):
        if oc.has(1):
            raise UnsupportedModel("custom op")
        codes.append(max(oc.scalar(0, "b"), oc.scalar(3, "i")))
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if len(subgraphs) != 1:
        raise UnsupportedModel(f"{len(subgraphs)} subgraphs (supported: 1)")
    sg = subgraphs[0]
    tensors = [_read_tensor(i, t) for i, t in enumerate(sg.tables(0))]

    def tensor(i: int) -> _Tensor:
        if not 0 <= i < len(tensors):
            raise ModelFormatError(f"tensor index {i} out of range ({len(tensors)} tensors)")
        return tensors[i]

    def constant(t: _Tensor, fmt: str) -> tuple[int, ...]:
        if not 0 < t.buffer < len(buffers):
            raise UnsupportedModel(f"{t.describe()} is not a constant")
        buf = buffers[t.buffer]
        if buf.scalar(1, "Q") > 1 or buf.scalar(2, "Q"):
            raise UnsupportedModel(f"{t.describe()} is stored outside the flatbuffer")
        raw = buf.raw(0)
        if len(raw) != t.size * struct.calcsize(fmt):
            raise ModelFormatError(f"{t.describe()} has {len(raw)} bytes for shape {list(t.shape)}")
        return tuple(int(v) for v in struct.unpack(f"<{t.size}{fmt}", raw))

    inputs, outputs = sg.scalars(1, "i"), sg.scalars(2, "i")
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModel(f"{len(inputs)} inputs and {len(outputs)} outputs (supported: 1 and 1)")
    x_in, x_out = tensor(int(inputs[0])), tensor(int(outputs[0]))
    if x_in.type != _FLOAT32 or x_out.type != _FLOAT32:
        raise UnsupportedModel(f"model input/output types {_TYPE_NAMES.get(x_in.type)}/"
                               f"{_TYPE_NAMES.get(x_out.type)} (supported: FLOAT32)")
    ops: list[_Op] = []
    for n, op in enumerate(sg.tables(3)):
        idx = op.scalar(0, "I")
        if idx >= len(codes):
            raise ModelFormatError(f"operator {n}: opcode index {idx} out of range")
        code = codes[idx]
        name = _OP_NAMES.get(code)
        if name is None:
            raise UnsupportedModel(f"operator {n}: builtin op {code} (supported: {', '.join(_OP_NAMES.values())})")
        where = f"operator {n} ({name})"
        options_type = op.scalar(3, "B")
        if options_type not in _OPTIONS[code]:
            raise UnsupportedModel(f"{where}: options type {options_type}")
        if op.has(5) or op.has(7) or op.has(8) or op.has(11) or op.has(12):
            raise UnsupportedModel(f"{where}: custom options, variable inputs or intermediates")
        ins = [int(i) for i in op.scalars(1, "i")]
        outs = [int(i) for i in op.scalars(2, "i")]
        if len(outs) != 1:
            raise UnsupportedModel(f"{where}: {len(outs)} outputs")
        out = tensor(outs[0])
        if code == _QUANTIZE:
            ops.append(_quantize(where, _only_input(where, ins, tensor), out))
        elif code == _DEQUANTIZE:
            ops.append(_dequantize(where, _only_input(where, ins, tensor), out))
        elif code == _LOGISTIC:
            ops.append(_logistic(where, _only_input(where, ins, tensor), out))
        else:
            options = op.table(4)
            ops.append(_fully_connected(where, ins, out, options, tensor, constant))
    _check_chain(ops, x_in.index, x_out.index)
    return Int8Model(ops, x_in.index, x_in.size, x_out.index)


def _read_tensor(index: int, t: _Table) -> _Tensor:
    name = t.raw(3).decode("utf-8", "replace")
    if t.has(6) or t.scalar(5, "B") or t.has(9) or t.scalar(10, "I"):
        raise UnsupportedModel(f"tensor {index} ({name!r}): sparse, variable or external")
    shape = tuple(int(v) for v in t.scalars(0, "i"))
    if any(d < 0 for d in shape):
        raise UnsupportedModel(f"tensor {index} ({name!r}): dynamic shape {list(shape)}")
    q = t.table(4)
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    qdim = 0
    if q is not None:
        if q.scalar(4, "B"):
            raise UnsupportedModel(f"tensor {index} ({name!r}): custom quantization")
        scales = tuple(float(v) for v in q.scalars(2, "f"))
        zero_points = tuple(int(v) for v in q.scalars(3, "q"))
        qdim = q.scalar(6, "i")
        if len(scales) != len(zero_points):
            raise ModelFormatError(f"tensor {index} ({name!r}): {len(scales)} scales, {len(zero_points)} zero points")
    return _Tensor(index, name, shape, t.scalar(1, "b"), t.scalar(2, "I"), scales, zero_points, qdim)


def _only_input(where: str, ins: list[int], tensor: Callable[[int], _Tensor]) -> _Tensor:
    if len(ins) != 1:
        raise UnsupportedModel(f"{where}: {len(ins)} inputs")
    return tensor(ins[0])


def _per_tensor(where: str, t: _Tensor, type_: int) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor of ``type_``."""
    if t.type != type_:
        raise UnsupportedModel(f"{where}: {t.describe()}, expected {_TYPE_NAMES[type_]}")
    if len(t.scales) != 1:
        raise UnsupportedModel(f"{where}: {t.describe()} has {len(t.scales)} scales (supported: 1)")
    scale, zp = t.scales[0], t.zero_points[0]
    if not (math.isfinite(scale) and scale > 0.0) or not INT8_MIN <= zp <= INT8_MAX:
        raise UnsupportedModel(f"{where}: {t.describe()} has scale {scale}, zero point {zp}")
    return scale, zp


def _same_size(where: str, a: _Tensor, b: _Tensor) -> None:
    if a.size != b.size:
        raise UnsupportedModel(f"{where}: shapes {list(a.shape)} → {list(b.shape)}")


def _quantize(where: str, src: _Tensor, dst: _Tensor) -> _Op:
    if src.type != _FLOAT32:
        raise UnsupportedModel(f"{where}: {src.describe()}, expected FLOAT32")
    scale, zp = _per_tensor(where, dst, _INT8)
    _same_size(where, src, dst)

    def run(x: list[float] | list[int]) -> list[int]:
        out = []
        for v in x:
            q = _wrap32(_to_int32(_round_away(v / scale)) + zp)
            out.append(INT8_MIN if q < INT8_MIN else INT8_MAX if q > INT8_MAX else q)
        return out

    return _Op("QUANTIZE", src.index, dst.index, run)


def _dequantize(where: str, src: _Tensor, dst: _Tensor) -> _Op:
    scale, zp = _per_tensor(where, src, _INT8)
    if dst.type != _FLOAT32:
        raise UnsupportedModel(f"{where}: {dst.describe()}, expected FLOAT32")
    _same_size(where, src, dst)

    def run(x: list[float] | list[int]) -> list[float]:
        return array("f", [scale * (int(q) - zp) for q in x]).tolist()

    return _Op("DEQUANTIZE", src.index, dst.index, run)


def _logistic(where: str, src: _Tensor, dst: _Tensor) -> _Op:
    in_scale, in_zp = _per_tensor(where, src, _INT8)
    out_scale, out_zp = _per_tensor(where, dst, _INT8)
    if out_scale != 1.0 / 256 or out_zp != INT8_MIN:
        raise UnsupportedModel(f"{where}: output scale {out_scale}, zero point {out_zp} (TFLite needs 1/256, -128)")
    _same_size(where, src, dst)
    table = _logistic_table(in_scale, in_zp, out_scale, out_zp)

    def run(x: list[float] | list[int]) -> list[int]:
        return [table[int(q) - INT8_MIN] for q in x]

    return _Op("LOGISTIC", src.index, dst.index, run)


def _logistic_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> list[int]:
    """TFLite's int8 lookup table for the logistic, computed in float32 as TFLite does."""
    inverse = f32(1.0 / out_scale)
    table = []
    for q in range(INT8_MIN, INT8_MAX + 1):
        x = f32(in_scale * f32(q - in_zp))
        try:
            e = f32(math.exp(-x))
        except OverflowError:
            e = math.inf
        y = f32(1.0 / f32(1.0 + e))
        rescaled = _round_away(f32(y * inverse))
        v = int(f32(rescaled + out_zp))
        table.append(max(INT8_MIN, min(INT8_MAX, v)))
    return table


def _fully_connected(where: str, ins: list[int], dst: _Tensor, options: _Table | None,
                     tensor: Callable[[int], _Tensor], constant: Callable[[_Tensor, str], tuple[int, ...]]) -> _Op:
    if len(ins) not in (2, 3):
        raise UnsupportedModel(f"{where}: {len(ins)} inputs")
    src, weights = tensor(ins[0]), tensor(ins[1])
    bias = tensor(ins[2]) if len(ins) == 3 and ins[2] >= 0 else None
    activation = _ACT_NONE
    if options is not None:
        activation = options.scalar(0, "b")
        if options.scalar(1, "b") or options.scalar(3, "B") or options.scalar(4, "b") not in (0, _INT32):
            raise UnsupportedModel(f"{where}: shuffled weights, hybrid inputs or a non-int32 bias")
    if activation not in (_ACT_NONE, _ACT_RELU):
        raise UnsupportedModel(f"{where}: fused activation {_ACT_NAMES.get(activation, activation)}"
                               " (supported: NONE, RELU)")
    in_scale, in_zp = _per_tensor(where, src, _INT8)
    out_scale, out_zp = _per_tensor(where, dst, _INT8)
    if weights.type != _INT8 or len(weights.shape) != 2:
        raise UnsupportedModel(f"{where}: weights {weights.describe()} shape {list(weights.shape)}")
    units, depth = weights.shape
    if src.size != depth or dst.size != units:
        raise UnsupportedModel(f"{where}: input of {src.size} / output of {dst.size} for weights {units}×{depth}"
                               " (supported: one row)")
    if len(weights.scales) not in (1, units) or any(weights.zero_points) or (
            len(weights.scales) > 1 and weights.quantized_dimension != 0):
        raise UnsupportedModel(f"{where}: weight quantization ({len(weights.scales)} scales,"
                               f" dimension {weights.quantized_dimension}, nonzero zero points)")
    w = constant(weights, "b")
    rows = [w[u * depth:(u + 1) * depth] for u in range(units)]
    b: tuple[int, ...] = (0,) * units
    if bias is not None:
        if bias.type != _INT32 or bias.size != units:
            raise UnsupportedModel(f"{where}: bias {bias.describe()} shape {list(bias.shape)}")
        b = constant(bias, "i")
    multipliers: list[tuple[int, int]] = []
    for u in range(units):
        w_scale = weights.scales[u if len(weights.scales) > 1 else 0]
        if not (math.isfinite(w_scale) and w_scale > 0.0):
            raise UnsupportedModel(f"{where}: weight scale {w_scale}")
        real = in_scale * w_scale / out_scale
        if not (math.isfinite(real) and real > 0.0):
            raise UnsupportedModel(f"{where}: output multiplier {real} (unit {u})")
        m, shift = quantize_multiplier(real)
        if shift > 0:
            raise UnsupportedModel(f"{where}: output multiplier ≥ 1 (unit {u})")
        # int32 accumulation must not overflow (in C it would be undefined)
        if 255 * sum(abs(v) for v in rows[u]) + abs(b[u]) > INT32_MAX:
            raise UnsupportedModel(f"{where}: unit {u} could overflow the int32 sum")
        multipliers.append((m, shift))
    lo = max(INT8_MIN, out_zp) if activation == _ACT_RELU else INT8_MIN
    plan = list(zip(rows, b, multipliers, strict=True))

    def run(x: list[float] | list[int]) -> list[int]:
        shifted = [int(v) - in_zp for v in x]
        out = []
        for row, bias_u, (m, shift) in plan:
            acc = sum(map(int.__mul__, row, shifted)) + bias_u
            acc = multiply_by_quantized_multiplier(acc, m, shift) + out_zp
            out.append(lo if acc < lo else INT8_MAX if acc > INT8_MAX else acc)
        return out

    return _Op("FULLY_CONNECTED", src.index, dst.index, run)


def _check_chain(ops: list[_Op], first: int, last: int) -> None:
    """Every op reads a value the model input or an earlier op made; the last makes the output."""
    known = {first}
    for op in ops:
        if op.input not in known:
            raise UnsupportedModel(f"{op.name} reads tensor {op.input} before anything writes it")
        known.add(op.output)
    if last not in known:
        raise UnsupportedModel(f"nothing writes the model output (tensor {last})")
