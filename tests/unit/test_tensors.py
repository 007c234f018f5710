import numpy as np
import pytest

from marlmesh import tensors
from marlmesh.v1 import tensor_pb2


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int8", "bool", "uint8"])
def test_round_trip(dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    out = tensors.decode(tensors.encode(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)


def test_scalar_and_empty():
    assert tensors.decode(tensors.encode(np.float32(3.5))).item() == 3.5
    assert tensors.decode(tensors.encode(np.zeros((0, 4), np.float32))).shape == (0, 4)


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (tensor_pb2.Tensor(dtype="object", shape=[1], data=b"x"), "unknown dtype"),
        (tensor_pb2.Tensor(dtype="float32", shape=[2], data=b"1234"), "do not match"),
        (tensor_pb2.Tensor(dtype="float32", shape=[-1], data=b""), "negative"),
        (tensor_pb2.Tensor(dtype="int8", shape=[1 << 20, 1 << 20], data=b""), "elements"),
    ],
)
def test_malformed_tensors_raise_clear_errors(msg, match):
    with pytest.raises(tensors.TensorError, match=match):
        tensors.decode(msg, what="x")


def test_named_duplicates_rejected():
    items = tensors.encode_named({"a": np.zeros(1, np.float32)}) * 2
    with pytest.raises(tensors.TensorError, match="duplicate"):
        tensors.decode_named(items)


def test_unsendable_dtype():
    with pytest.raises(tensors.TensorError, match="cannot be sent"):
        tensors.encode(np.zeros(2, np.complex64))
