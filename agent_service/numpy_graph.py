"""Run a policy stage's ONNX graph with numpy alone (``train.graph_engine: numpy``): no onnxruntime in the process.

The graphs ``marlmesh export`` and the learners write (opset 17, :mod:`marlmesh.policies.onnx_export`) use a
small set of operators: dense layers, elementwise maths, reductions, shape plumbing, layer normalisation.
:class:`NumpyGraph` reads the serialized ``ModelProto`` with the protobuf wire walker of
:mod:`agent_service.onnx_weights` (the ``onnx`` package is not needed either) and evaluates its nodes in order,
float32 throughout, so an agent acts as it does with onnxruntime (up to float rounding) while the process
leaves out onnxruntime's library pages and its start (see docs/benchmarks.md, the scale section). A graph
with an operator outside :data:`OPS` is refused when it is loaded, naming the operator.

It offers the part of ``onnxruntime.InferenceSession`` that :class:`~agent_service.runtime.OnnxRuntime` uses:
:meth:`NumpyGraph.run`, :meth:`NumpyGraph.get_inputs` and :meth:`NumpyGraph.get_overridable_initializers`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_service.onnx_weights import protobuf_fields, varint

_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
"""ONNX ``TensorProto.DataType`` -> numpy dtype."""


def _signed(value: int) -> int:
    """A protobuf int64 varint as a Python int (negative values travel as 64-bit two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _varints(value: bytes | int) -> list[int]:
    """The signed ints of a repeated int field: one unpacked value, or a packed run of varints."""
    if isinstance(value, int):
        return [_signed(value)]
    out, i = [], 0
    while i < len(value):
        v, i = varint(value, i)
        out.append(_signed(v))
    return out


def read_tensor(buf: bytes) -> tuple[str, np.ndarray]:
    """``(name, array)`` of a serialized ``TensorProto`` (raw or typed data).

    Raises:
        ValueError: If its data type is not supported or its data does not fit its dims.
    """
    name, dims, dtype_code = "", [], 1
    raw: bytes | None = None
    floats, ints, doubles = bytearray(), [], bytearray()
    for field, _, value in protobuf_fields(buf):
        if field == 1:
            dims += _varints(value)
        elif field == 2:
            dtype_code = int(value)
        elif field == 8:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 9:
            raw = bytes(value)
        elif field == 4:  # float_data: packed (wire 2) or one fixed32 (wire 5)
            floats += value
        elif field in (5, 7):  # int32_data (also bool, int8/16, float16 bits), int64_data
            ints += _varints(value)
        elif field == 10:
            doubles += value
    if dtype_code not in _DTYPES:
        raise ValueError(f"tensor {name!r}: ONNX data type {dtype_code} is not supported by the numpy engine")
    dtype = np.dtype(_DTYPES[dtype_code])
    if raw is not None:
        flat = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
    elif floats:
        flat = np.frombuffer(bytes(floats), "<f4").astype(dtype)
    elif doubles:
        flat = np.frombuffer(bytes(doubles), "<f8").astype(dtype)
    elif dtype_code == 10:  # float16 values travel as their bits in int32_data
        flat = np.array(ints, np.uint16).view(np.float16)
    else:
        flat = np.array(ints, dtype)
    try:
        return name, flat.reshape(dims)
    except ValueError:
        raise ValueError(f"tensor {name!r}: {flat.size} values do not fit dims {dims}") from None


def _read_attribute(buf: bytes) -> tuple[str, Any]:
    """``(name, value)`` of a serialized ``AttributeProto`` (float, int, string, tensor or lists of them)."""
    name, value, ints, floats = "", None, [], []
    for field, wire, item in protobuf_fields(buf):
        if field == 1:
            name = bytes(item).decode()
        elif field == 2:
            value = struct.unpack("<f", item)[0]
        elif field == 3:
            value = _signed(int(item))
        elif field == 4:
            value = bytes(item).decode("utf-8", "replace")
        elif field == 5:
            value = read_tensor(bytes(item))[1]
        elif field == 7:
            floats += struct.unpack(f"<{len(item) // 4}f", item) if wire == 2 else struct.unpack("<f", item)
        elif field == 8:
            ints += _varints(item)
        elif field in (6, 9, 10, 11):  # graphs, strings, tensors: no operator of OPS takes them
            raise ValueError(f"attribute {name!r}: graph, string-list and tensor-list attributes are not supported")
    if value is None:
        value = ints if ints else floats
    return name, value


@dataclass(frozen=True)
class ValueInfo:
    """A graph input as ``onnxruntime.NodeArg`` describes it: name and shape (an int, or a name per free axis)."""

    name: str
    shape: list[int | str]


def _read_value_info(buf: bytes) -> ValueInfo:
    """A serialized ``ValueInfoProto``: its name and tensor shape."""
    name, shape = "", []
    for field, _, value in protobuf_fields(buf):
        if field == 1:
            name = bytes(value).decode()
        elif field == 2:  # TypeProto.tensor_type (1) -> shape (2) -> dim (1) -> dim_value (1) | dim_param (2)
            for t_field, _, tensor_type in protobuf_fields(bytes(value)):
                if t_field != 1:
                    continue
                for s_field, _, shape_proto in protobuf_fields(bytes(tensor_type)):
                    if s_field != 2:
                        continue
                    for d_field, _, dim in protobuf_fields(bytes(shape_proto)):
                        if d_field != 1:
                            continue
                        axis: int | str = "?"
                        for a_field, _, a_value in protobuf_fields(bytes(dim)):
                            axis = _signed(a_value) if a_field == 1 else bytes(a_value).decode()
                        shape.append(axis)
    return ValueInfo(name, shape)


# -- operators -----------------------------------------------------------------------------------------------
Op = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]
_Node = tuple[Op, tuple[str, ...], tuple[str, ...], dict[str, Any]]
"""A node ready to run: operator, input names (``""``: an omitted optional input), output names, attributes."""


def _ints(array: np.ndarray) -> list[int]:
    """The values of an integer tensor (axes, shapes, slice bounds) as Python ints."""
    return array.reshape(-1).tolist()


def _axes(inputs: list[np.ndarray | None], attrs: dict[str, Any], index: int = 1) -> list[int] | None:
    """Axes from the input at ``index`` (opset 13+) or the ``axes`` attribute; None when neither is given."""
    if len(inputs) > index and inputs[index] is not None:
        return _ints(inputs[index])
    return list(attrs["axes"]) if "axes" in attrs else None


def _reduce(fn: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]) -> Op:
    def op(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        x = inputs[0]
        axes = _axes(inputs, attrs)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        return [fn(x, tuple(a % x.ndim for a in axes), bool(attrs.get("keepdims", 1)))]

    return op


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    top = np.maximum.reduce(x, axis=axes, keepdims=True)
    top[~np.isfinite(top)] = 0  # all -inf (or inf): the sum below says so
    out = np.log(np.add.reduce(np.exp(x - top), axis=axes, keepdims=True)) + top
    return out if keepdims else out.reshape([d for i, d in enumerate(out.shape) if i not in axes])


def _div(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    if np.issubdtype(a.dtype, np.integer):  # ONNX integer division truncates toward zero
        return [(np.trunc(a / b)).astype(a.dtype)]
    return [a / b]


def _gemm(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    out = np.matmul(a, b)
    if attrs.get("alpha", 1.0) != 1.0:
        out = out * np.float32(attrs["alpha"])
    if len(inputs) > 2 and inputs[2] is not None:
        c = inputs[2]
        out = out + (c if attrs.get("beta", 1.0) == 1.0 else c * np.float32(attrs["beta"]))
    return [out]


def _unsqueeze(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, axes = inputs[0], _axes(inputs, attrs) or []
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for axis in sorted(a % rank for a in axes):
        shape.insert(axis, 1)
    return [x.reshape(shape)]


def _squeeze(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, axes = inputs[0], _axes(inputs, attrs)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    drop = {a % x.ndim for a in axes}
    if any(x.shape[a] != 1 for a in drop):
        raise ValueError(f"Squeeze: axes {sorted(drop)} of shape {list(x.shape)} are not all 1")
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in drop])]


def _reshape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):  # 0 copies the input's dimension
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


def _shape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    dims = inputs[0].shape
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [np.array(dims[start:end], np.int64)]


def _slice(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis % x.ndim] = slice(start, end, step)
    return [x[tuple(index)]]


def _clip(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    if low is not None:
        x = np.maximum(x, np.asarray(low, x.dtype))
    if high is not None:
        x = np.minimum(x, np.asarray(high, x.dtype))
    return [x]


def _elu(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    alpha = np.float32(attrs.get("alpha", 1.0))
    return [np.where(x > 0, x, alpha * np.expm1(x))]  # expm1 overflows only where x is taken


def _layer_norm(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    axes = tuple(range(attrs.get("axis", -1) % x.ndim, x.ndim))
    count = np.float32(np.prod([x.shape[a] for a in axes]))
    mean = np.add.reduce(x, axis=axes, keepdims=True) / count
    centred = x - mean
    variance = np.add.reduce(centred * centred, axis=axes, keepdims=True) / count
    inv_std = 1 / np.sqrt(variance + np.float32(attrs.get("epsilon", 1e-5)))
    y = centred * inv_std * scale
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + inputs[2]
    return [y, mean, inv_std]


def _constant(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    if "value" in attrs:
        return [attrs["value"]]
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return [np.array(attrs[key], dtype)]
    if "value_ints" in attrs:
        return [np.array(attrs["value_ints"], np.int64)]
    raise ValueError(f"Constant with attributes {sorted(attrs)} is not supported by the numpy engine")


def _constant_of_shape(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    value = attrs.get("value", np.zeros(1, np.float32))
    return [np.full(_ints(inputs[0]), value.reshape(-1)[0], value.dtype)]


def _cast(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    if attrs["to"] not in _DTYPES:
        raise ValueError(f"Cast to ONNX data type {attrs['to']} is not supported by the numpy engine")
    return [inputs[0].astype(_DTYPES[attrs["to"]])]


def _pad(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    if attrs.get("mode", "constant") != "constant":
        raise ValueError(f"Pad mode {attrs['mode']!r} is not supported by the numpy engine")
    pads = [int(p) for p in (inputs[1] if len(inputs) > 1 else attrs["pads"])]
    axes = _axes(inputs, attrs, index=3) or list(range(x.ndim))
    fill = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0)
    widths = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for j, axis in enumerate(a % x.ndim for a in axes):
        begin, end = pads[j], pads[j + len(axes)]
        widths[axis] = (max(begin, 0), max(end, 0))  # negative pads crop
        crop[axis] = slice(-min(begin, 0), x.shape[axis] + min(end, 0))
    return [np.pad(x[tuple(crop)], widths, constant_values=np.asarray(fill, x.dtype).reshape(-1)[:1].item())]


def _softmax(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, axis = inputs[0], attrs.get("axis", -1)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return [e / np.sum(e, axis=axis, keepdims=True)]


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Op:
    return lambda inputs, attrs: [fn(inputs[0])]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Op:
    return lambda inputs, attrs: [fn(inputs[0], inputs[1])]


OPS: dict[str, Op] = {
    "Add": _binary(np.add),
    "Cast": _cast,
    "Clip": _clip,
    "Concat": lambda inputs, attrs: [np.concatenate(inputs, axis=attrs["axis"])],
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Div": _div,
    "Elu": _elu,
    "Equal": _binary(np.equal),
    "Exp": _unary(np.exp),
    "Expand": lambda inputs, attrs: [inputs[0] * np.ones(_ints(inputs[1]), inputs[0].dtype)],  # broadcasts both
    "Gather": lambda inputs, attrs: [inputs[0].take(inputs[1], axis=attrs.get("axis", 0))],
    "Gemm": _gemm,
    "Greater": _binary(np.greater),
    "GreaterOrEqual": _binary(np.greater_equal),
    "Identity": _unary(lambda x: x),
    "LayerNormalization": _layer_norm,
    "Less": _binary(np.less),
    "Log": _unary(np.log),
    "MatMul": _binary(np.matmul),
    "Max": lambda inputs, attrs: [np.maximum.reduce(np.broadcast_arrays(*inputs))],
    "Min": lambda inputs, attrs: [np.minimum.reduce(np.broadcast_arrays(*inputs))],
    "Mul": _binary(np.multiply),
    "Neg": _unary(np.negative),
    "Not": _unary(np.logical_not),
    "Pad": _pad,
    "ReduceL2": _reduce(lambda x, axes, keep: np.sqrt(np.add.reduce(x * x, axis=axes, keepdims=keep))),
    "ReduceLogSumExp": _reduce(_log_sum_exp),
    "ReduceMax": _reduce(lambda x, axes, keep: np.maximum.reduce(x, axis=axes, keepdims=keep)),
    "ReduceMean": _reduce(lambda x, axes, keep: np.mean(x, axis=axes, keepdims=keep)),
    "ReduceSum": _reduce(lambda x, axes, keep: np.add.reduce(x, axis=axes, keepdims=keep)),
    "Relu": _unary(lambda x: np.maximum(x, np.zeros((), x.dtype))),
    "Reshape": _reshape,
    "Shape": _shape,
    "Sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "Slice": _slice,
    "Softmax": _softmax,
    "Softplus": _unary(lambda x: np.logaddexp(np.zeros((), x.dtype), x)),
    "Sqrt": _unary(np.sqrt),
    "Squeeze": _squeeze,
    "Sub": _binary(np.subtract),
    "Tanh": _unary(np.tanh),
    "Transpose": lambda inputs, attrs: [np.transpose(inputs[0], attrs.get("perm") or None)],
    "Unsqueeze": _unsqueeze,
    "Where": lambda inputs, attrs: [np.where(inputs[0], inputs[1], inputs[2])],
}
"""The operators the numpy engine runs (ONNX default domain, opset 17 semantics), by ``op_type``."""


class NumpyGraph:
    """One ONNX graph, evaluated node by node with numpy.

    Args:
        model: A serialized ``ModelProto`` (single graph, default domain, no external data).
        where: What the graph is, for error messages.

    Raises:
        ValueError: If the bytes are not a model or a node uses an operator outside :data:`OPS`.
    """

    def __init__(self, model: bytes, where: str = "graph") -> None:
        graph = next((bytes(v) for f, w, v in protobuf_fields(model) if f == 7 and w == 2), None)
        if graph is None:
            raise ValueError(f"{where}: not an ONNX model (no graph)")
        initializers: dict[str, np.ndarray] = {}
        nodes: list[_Node] = []
        declared_inputs: list[ValueInfo] = []
        self._outputs: list[str] = []
        for field, wire, value in protobuf_fields(graph):
            if wire != 2:
                continue
            if field == 1:
                nodes.append(self._read_node(bytes(value), where))
            elif field == 5:
                name, array = read_tensor(bytes(value))
                initializers[name] = array
            elif field == 11:
                declared_inputs.append(_read_value_info(bytes(value)))
            elif field == 12:
                self._outputs.append(_read_value_info(bytes(value)).name)
        self._inputs = [i for i in declared_inputs if i.name not in initializers]
        self._overridable = [i for i in declared_inputs if i.name in initializers]
        self._values, self._nodes = self._fold(nodes, initializers, {i.name for i in declared_inputs})

    @staticmethod
    def _fold(
        nodes: list[_Node], initializers: dict[str, np.ndarray], fed: set[str]
    ) -> tuple[dict[str, np.ndarray | None], list[_Node]]:
        """Evaluate once the nodes that depend on no feed (constants, frozen weights): ``(values, nodes left)``."""
        values: dict[str, np.ndarray | None] = {"": None, **initializers}
        known = {name for name in initializers if name not in fed} | {""}
        left = []
        with np.errstate(all="ignore"):
            for node in nodes:
                op, inputs, outputs, attrs = node
                if not all(name in known for name in inputs):
                    left.append(node)
                    continue
                for name, result in zip(outputs, op([values[i] for i in inputs], attrs), strict=False):
                    values[name] = result
                    known.add(name)
        return values, left

    @staticmethod
    def _read_node(buf: bytes, where: str) -> _Node:
        inputs, outputs, attrs, op_type, domain = [], [], {}, "", ""
        for field, _, value in protobuf_fields(buf):
            if field == 1:
                inputs.append(bytes(value).decode())
            elif field == 2:
                outputs.append(bytes(value).decode())
            elif field == 4:
                op_type = bytes(value).decode()
            elif field == 5:
                name, attr = _read_attribute(bytes(value))
                attrs[name] = attr
            elif field == 7:
                domain = bytes(value).decode()
        if domain not in ("", "ai.onnx") or op_type not in OPS:
            raise ValueError(
                f"{where}: operator {domain + '.' if domain else ''}{op_type} is not supported by the numpy engine; "
                "set train.graph_engine=onnxruntime"
            )
        return OPS[op_type], tuple(inputs), tuple(outputs), attrs

    def get_inputs(self) -> list[ValueInfo]:
        """The inputs a caller must feed (graph inputs without an initializer)."""
        return list(self._inputs)

    def get_overridable_initializers(self) -> list[ValueInfo]:
        """Inputs that have an initializer (the parameters of a learner's graphs): a feed replaces it."""
        return list(self._overridable)

    def run(self, output_names: list[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Evaluate the graph.

        Args:
            output_names: Graph outputs to return, in this order (None: all, in the graph's order).
            feeds: Input name -> array (and parameters that override initializers).

        Raises:
            ValueError: If a required input is missing.
        """
        for info in self._inputs:
            if info.name not in feeds:
                raise ValueError(f"missing input {info.name!r}")
        values = {**self._values, **feeds}
        with np.errstate(all="ignore"):  # as onnxruntime: inf and NaN are values, not warnings
            for op, inputs, outputs, attrs in self._nodes:
                for name, result in zip(outputs, op([values[i] for i in inputs], attrs), strict=False):
                    values[name] = result
        return [np.array(values[name], copy=True) for name in (output_names or self._outputs)]
