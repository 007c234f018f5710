"""Find non-finite weights in an ONNX graph without the ``onnx`` package (the edge install has only onnxruntime).

Walks the protobuf wire format of ``ModelProto`` just far enough to read the float tensors it holds: the graph's
initializers and the tensors of node attributes (``Constant`` nodes), also in subgraphs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_FLOAT_TYPES = {1: np.dtype("<f4"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}
"""ONNX ``TensorProto.DataType`` -> dtype of its ``raw_data`` (FLOAT, FLOAT16, DOUBLE)."""


def varint(buf: bytes, i: int) -> tuple[int, int]:
    """The unsigned varint at ``buf[i]`` and the index after it.

    Raises:
        ValueError: If it is truncated or longer than 64 bits.
    """
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def protobuf_fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """``(field number, wire type, value)`` of one protobuf message (length-delimited values as bytes).

    Raises:
        ValueError: If the bytes are not a well-formed protobuf message.
    """
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
            yield field, wire, value
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield field, wire, buf[i : i + size]
            i += size
        elif wire == 2:
            size, i = varint(buf, i)
            if i + size > len(buf):
                raise ValueError("truncated protobuf field")
            yield field, wire, buf[i : i + size]
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _tensor_finite(buf: bytes) -> tuple[str, bool]:
    """``(name, all values finite)`` of a ``TensorProto`` (non-float tensors count as finite)."""
    name, dtype, chunks = "", 0, []
    for field, wire, value in protobuf_fields(buf):
        if field == 8 and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 2 and wire == 0:
            dtype = int(value)
        elif field == 9 and wire == 2:  # raw_data
            chunks.append(("raw", bytes(value)))
        elif field == 4:  # float_data (packed or not)
            chunks.append(("<f4", bytes(value)))
        elif field == 10:  # double_data
            chunks.append(("<f8", bytes(value)))
    for kind, data in chunks:
        if kind == "raw":
            if dtype not in _FLOAT_TYPES:
                continue
            kind = _FLOAT_TYPES[dtype].str
        values = np.frombuffer(data[: len(data) - len(data) % np.dtype(kind).itemsize], kind)
        if not np.isfinite(values).all():
            return name, False
    return name, True


def _graph_tensors(graph: bytes) -> Iterator[bytes]:
    for field, wire, value in protobuf_fields(graph):
        if wire != 2:
            continue
        if field == 5:  # initializer
            yield bytes(value)
        elif field == 1:  # node -> attribute (5) -> t (5), tensors (9), g (6), graphs (7)
            for n_field, n_wire, attr in protobuf_fields(bytes(value)):
                if n_field != 5 or n_wire != 2:
                    continue
                for a_field, a_wire, item in protobuf_fields(bytes(attr)):
                    if a_wire == 2 and a_field in (5, 9):
                        yield bytes(item)
                    elif a_wire == 2 and a_field in (6, 7):
                        yield from _graph_tensors(bytes(item))


def non_finite_tensors(model: bytes) -> list[str]:
    """Names of the float tensors of a serialized ``ModelProto`` that hold NaN or inf.

    Raises:
        ValueError: If the bytes are not a well-formed protobuf message.
    """
    bad = []
    for field, wire, value in protobuf_fields(model):
        if field == 7 and wire == 2:  # graph
            for tensor in _graph_tensors(bytes(value)):
                name, finite = _tensor_finite(tensor)
                if not finite:
                    bad.append(name)
    return bad
