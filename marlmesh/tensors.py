"""Numpy arrays <-> ``marlmesh.v1.Tensor`` (raw bytes + dtype + shape).

Decoding validates everything it is given, because tensors arrive from other processes: an unknown dtype,
a negative dimension or a byte count that does not match the shape raises :class:`TensorError` with a
message naming the problem, never a numpy crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from marlmesh.v1 import tensor_pb2

#: dtypes allowed on the wire (little-endian).
WIRE_DTYPES: frozenset[str] = frozenset(
    {"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"}
)
#: Upper bound on one decoded tensor (elements), a guard against hostile shapes.
MAX_ELEMENTS = 1 << 28

_WIRE_DTYPE: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in WIRE_DTYPES}
"""Wire dtype name -> little-endian numpy dtype (looked up per tensor on the hot path)."""
_WIRE_NAME: dict[np.dtype, str] = {dtype: name for name, dtype in _WIRE_DTYPE.items()}
"""Little-endian (or native) numpy dtype -> wire name; a dtype missing here needs a check or a byte swap."""


class TensorError(ValueError):
    """A wire tensor is malformed (dtype, shape or byte count)."""


def encode(array: np.ndarray) -> tensor_pb2.Tensor:
    """Encode a numpy array as a wire tensor (C order, little-endian).

    Args:
        array: Any array whose dtype is in :data:`WIRE_DTYPES`.

    Raises:
        TensorError: If the dtype cannot travel on the wire.
    """
    arr = np.asarray(array)
    name = _WIRE_NAME.get(arr.dtype)
    if name is None:
        name = arr.dtype.name
        if name not in WIRE_DTYPES:
            raise TensorError(f"dtype {name!r} cannot be sent; allowed: {sorted(WIRE_DTYPES)}")
        arr = arr.astype(arr.dtype.newbyteorder("<"))  # a big-endian array of a wire dtype
    return tensor_pb2.Tensor(dtype=name, shape=arr.shape, data=arr.tobytes())


def decode(tensor: tensor_pb2.Tensor, *, what: str = "tensor") -> np.ndarray:
    """Decode a wire tensor into a read-only numpy array (zero copy over the message bytes).

    Args:
        tensor: The wire tensor.
        what: A name for error messages, e.g. ``"StepRequest.action"``.

    Raises:
        TensorError: If dtype, shape or byte count are invalid.
    """
    dtype = _WIRE_DTYPE.get(tensor.dtype)
    if dtype is None:
        raise TensorError(f"{what}: unknown dtype {tensor.dtype!r}; allowed: {sorted(WIRE_DTYPES)}")
    shape = tuple(tensor.shape)  # Python ints
    if shape and min(shape) < 0:
        raise TensorError(f"{what}: negative dimension in shape {shape}")
    if shape and max(shape) > MAX_ELEMENTS:  # even with no elements (a 0 elsewhere): no reader sizes by it
        raise TensorError(f"{what}: dimension {max(shape)} in shape {shape} is more than {MAX_ELEMENTS}")
    count = math.prod(shape)  # Python ints: no overflow, and cheaper than np.prod on a short tuple
    if count > MAX_ELEMENTS:
        raise TensorError(f"{what}: shape {shape} has {count} elements, more than {MAX_ELEMENTS}")
    if len(tensor.data) != count * dtype.itemsize:
        raise TensorError(
            f"{what}: {len(tensor.data)} bytes do not match shape {shape} of {tensor.dtype} "
            f"({count * dtype.itemsize} bytes expected)"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def encode_named(arrays: Mapping[str, np.ndarray]) -> list[tensor_pb2.NamedTensor]:
    """Encode a name -> array mapping as a list of ``NamedTensor`` (sorted by name)."""
    return [tensor_pb2.NamedTensor(name=k, tensor=encode(arrays[k])) for k in sorted(arrays)]


def decode_named(items: Iterable[tensor_pb2.NamedTensor], *, what: str = "tensors") -> dict[str, np.ndarray]:
    """Decode ``NamedTensor`` items into a dict; a duplicate or empty name raises :class:`TensorError`."""
    out: dict[str, np.ndarray] = {}
    for item in items:
        if not item.name:
            raise TensorError(f"{what}: a tensor has an empty name")
        if item.name in out:
            raise TensorError(f"{what}: duplicate tensor name {item.name!r}")
        out[item.name] = decode(item.tensor, what=f"{what}[{item.name}]")
    return out
