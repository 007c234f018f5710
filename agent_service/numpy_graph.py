"""Run a policy stage's ONNX graph with numpy alone (``train.graph_engine: numpy``): no onnxruntime in the process.

The graphs ``marlmesh export`` and the learners write (opset 17, :mod:`marlmesh.policies.onnx_export`) use a
small set of operators: dense layers, elementwise maths, reductions, shape plumbing, layer normalisation.
:class:`NumpyGraph` reads the serialized ``ModelProto`` with the protobuf wire walker of
:mod:`agent_service.onnx_weights` (the ``onnx`` package is not needed either) and evaluates its nodes in order,
float32 throughout, so an agent acts as it does with onnxruntime (up to float rounding) while the process
leaves out onnxruntime's library pages and its start (see docs/benchmarks.md, the scale section). A graph
with an operator outside :data:`~agent_service.numpy_ops.OPS` is refused when it is loaded, naming the operator.

It offers the part of ``onnxruntime.InferenceSession`` that :class:`~agent_service.runtime.OnnxRuntime` uses:
:meth:`NumpyGraph.run`, :meth:`NumpyGraph.get_inputs` and :meth:`NumpyGraph.get_overridable_initializers`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_service.numpy_ops import DTYPES, OPS, Op
from agent_service.onnx_weights import protobuf_fields, varint


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
    if dtype_code not in DTYPES:
        raise ValueError(f"tensor {name!r}: ONNX data type {dtype_code} is not supported by the numpy engine")
    dtype = np.dtype(DTYPES[dtype_code])
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
                            if a_field == 1:  # dim_value
                                axis = _signed(a_value)
                            elif a_field == 2:  # dim_param
                                axis = bytes(a_value).decode()
                        shape.append(axis)
    return ValueInfo(name, shape)


_Node = tuple[Op, tuple[str, ...], tuple[str, ...], dict[str, Any]]
"""A node ready to run: operator, input names (``""``: an omitted optional input), output names, attributes."""


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
