"""The ONNX operators of the numpy graph engine (:mod:`agent_service.numpy_graph`), opset 17 semantics.

Each operator takes its inputs (``None`` for an omitted optional input) and the node's attributes and returns
its outputs with the dtypes and shapes onnxruntime gives, the values up to float rounding (a test compares each
one with onnxruntime). :data:`OPS` lists them by ``op_type``: the operators the graphs of
:mod:`marlmesh.policies.onnx_export` use for every channel and actor network, and a few of their kin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

DTYPES = {
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


Op = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]
"""An operator: ``(inputs, attributes) -> outputs`` (``None`` for an omitted optional input)."""


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
    if attrs["to"] not in DTYPES:
        raise ValueError(f"Cast to ONNX data type {attrs['to']} is not supported by the numpy engine")
    return [inputs[0].astype(DTYPES[attrs["to"]])]


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
