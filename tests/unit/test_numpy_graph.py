"""The numpy graph engine evaluates each operator it supports as onnxruntime does, and refuses the others.

Every case is a one-node opset-17 model built with ``onnx.helper``, run by :class:`NumpyGraph` and by an
``onnxruntime.InferenceSession`` on the same inputs (whole policies are compared with torch in
``test_onnx_export.py`` and ``test_training_graphs.py``).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent_service.numpy_graph import NumpyGraph
from agent_service.numpy_ops import OPS

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


CASES: dict[str, tuple[str, dict, list[np.ndarray | None]]] = {
    # name: (op_type, attributes, inputs: arrays are fed, None an omitted optional input)
    "add-broadcast": ("Add", {}, [f32(2, 3), f32(3)]),
    "sub": ("Sub", {}, [f32(2, 3), f32(2, 3)]),
    "mul": ("Mul", {}, [f32(4, 1, 3), f32(2, 1)]),
    "div": ("Div", {}, [f32(2, 3), f32(2, 3) + 3]),
    "div-int": ("Div", {}, [i64(7, -7, 9), i64(2, 2, -4)]),
    "tanh": ("Tanh", {}, [f32(3, 4)]),
    "sqrt": ("Sqrt", {}, [np.abs(f32(5))]),
    "exp-log": ("Log", {}, [np.abs(f32(5)) + 0.1]),
    "relu": ("Relu", {}, [f32(6)]),
    "sigmoid": ("Sigmoid", {}, [f32(6)]),
    "neg": ("Neg", {}, [f32(6)]),
    "softplus": ("Softplus", {}, [f32(6) * 30]),
    "elu": ("Elu", {"alpha": 0.7}, [f32(3, 5) * 100]),
    "clip": ("Clip", {}, [f32(3, 4), np.float32(-0.5), np.float32(0.3)]),
    "clip-min-only": ("Clip", {}, [f32(3, 4), np.float32(-0.5), None]),
    "gemm": ("Gemm", {"transB": 1, "alpha": 0.5, "beta": 2.0}, [f32(4, 3), f32(5, 3), f32(5)]),
    "gemm-no-bias": ("Gemm", {"transA": 1}, [f32(3, 4), f32(3, 2)]),
    "matmul": ("MatMul", {}, [f32(2, 4, 3), f32(3, 5)]),
    "concat": ("Concat", {"axis": -1}, [f32(2, 3), f32(2, 1)]),
    "reduce-sum": ("ReduceSum", {"keepdims": 0}, [f32(2, 3, 4), i64(-1, 0)]),
    "reduce-sum-all": ("ReduceSum", {}, [f32(2, 3), None]),
    "reduce-max": ("ReduceMax", {"axes": [1]}, [f32(2, 3)]),
    "reduce-mean": ("ReduceMean", {"axes": [0], "keepdims": 0}, [f32(2, 3)]),
    "reduce-l2": ("ReduceL2", {"axes": [-1], "keepdims": 1}, [f32(2, 3)]),
    "logsumexp": ("ReduceLogSumExp", {"axes": [-1], "keepdims": 0}, [f32(2, 5) * 50]),
    "logsumexp-masked": (
        "ReduceLogSumExp",
        {"axes": [-1]},
        [np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)],
    ),
    "softmax": ("Softmax", {"axis": -1}, [f32(3, 4) * 10]),
    "unsqueeze": ("Unsqueeze", {}, [f32(2, 3), i64(-1, 0)]),
    "squeeze": ("Squeeze", {}, [f32(2, 1, 3, 1), i64(1, -1)]),
    "squeeze-all": ("Squeeze", {}, [f32(1, 3, 1), None]),
    "reshape": ("Reshape", {}, [f32(2, 3, 4), i64(0, -1)]),
    "shape": ("Shape", {"start": 1}, [f32(2, 3, 4)]),
    "gather": ("Gather", {"axis": 1}, [f32(2, 4), i64(3, -1)]),
    "gather-scalar": ("Gather", {}, [i64(5, 6, 7), np.array(-1, np.int64)]),
    "slice": ("Slice", {}, [f32(4, 6), i64(1, -1), i64(9223372036854775807, 0), i64(0, 1), i64(1, -2)]),
    "transpose": ("Transpose", {"perm": [1, 0]}, [f32(2, 3)]),
    "expand": ("Expand", {}, [f32(3, 1), i64(2, 1, 4)]),
    "where": ("Where", {}, [RNG.random((2, 3)) > 0.5, f32(2, 3), f32(3)]),
    "greater-or-equal": ("GreaterOrEqual", {}, [f32(2, 3), f32(3)]),
    "equal": ("Equal", {}, [i64(1, 2, 3), i64(1, 0, 3)]),
    "not": ("Not", {}, [RNG.random(4) > 0.5]),
    "cast": ("Cast", {"to": F}, [RNG.random(4) > 0.5]),
    "pad": ("Pad", {"mode": "constant"}, [f32(2, 3), i64(0, 1, 0, -1), np.float32(9.0)]),
    "layer-norm": ("LayerNormalization", {"epsilon": 1e-3}, [f32(2, 5) * 4 + 1, f32(5), f32(5)]),
    "constant-of-shape": (
        "ConstantOfShape",
        {"value": numpy_helper.from_array(np.array([1.5], np.float32))},
        [i64(2, 3)],
    ),
    "max": ("Max", {}, [f32(2, 3), f32(3)]),
    "min": ("Min", {}, [f32(2, 3), f32(2, 3), f32(1)]),
    "exp": ("Exp", {}, [f32(5)]),
    "less": ("Less", {}, [f32(4), f32(4)]),
    "greater": ("Greater", {}, [f32(4), f32(4)]),
    "identity": ("Identity", {}, [f32(2, 2)]),
}

_TYPES = {np.dtype(np.float32): F, np.dtype(np.int64): I64, np.dtype(np.bool_): B}


def one_node_model(op_type: str, attrs: dict, inputs: list[np.ndarray | None]) -> tuple[bytes, dict[str, np.ndarray]]:
    """The serialized model of one node over ``inputs`` (a graph input each; ``None`` left out) and its feeds."""
    names = ["" if x is None else f"x{i}" for i, x in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    graph_inputs = [
        helper.make_tensor_value_info(n, _TYPES[np.asarray(x).dtype], np.shape(x))
        for n, x in zip(names, inputs, strict=False)
        if n
    ]
    outputs = ["y"] if op_type != "LayerNormalization" else ["y", "mean", "inv_std"]
    node = helper.make_node(op_type, names, outputs, **attrs)
    graph = helper.make_graph([node], "case", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {n: np.asarray(x) for n, x in zip(names, inputs, strict=False) if n}
    return model.SerializeToString(), feeds


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_onnxruntime(case: str) -> None:
    op_type, attrs, inputs = CASES[case]
    raw, feeds = one_node_model(op_type, attrs, inputs)
    expected = ort.InferenceSession(raw, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = NumpyGraph(raw, case).run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape, (g.dtype, g.shape, e.dtype, e.shape)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
        assert g.flags.writeable


def test_every_supported_operator_is_checked() -> None:
    assert {op for op, _, _ in CASES.values()} | {"Constant"} == set(OPS)  # Constant: the folding test


def test_constants_and_frozen_weights_are_folded_and_fed_weights_override() -> None:
    w = numpy_helper.from_array(np.full((3, 2), 2.0, np.float32), "w")
    k = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.float32(3.0)))
    nodes = [k, helper.make_node("Mul", ["w", "k"], ["w3"]), helper.make_node("MatMul", ["x", "w3"], ["y"])]
    x = helper.make_tensor_value_info("x", F, ["batch", 3])
    y = helper.make_empty_tensor_value_info("y")
    frozen = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    graph = NumpyGraph(helper.make_model(frozen).SerializeToString())
    assert [i.name for i in graph.get_inputs()] == ["x"] and graph.get_overridable_initializers() == []
    ones = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(graph.run(["y"], {"x": ones})[0], np.full((2, 2), 18.0))
    fed = helper.make_graph(nodes, "g", [x, helper.make_tensor_value_info("w", F, [3, 2])], [y], initializer=[w])
    graph = NumpyGraph(helper.make_model(fed).SerializeToString())
    assert [(i.name, i.shape) for i in graph.get_overridable_initializers()] == [("w", [3, 2])]
    assert graph.get_inputs()[0].shape == ["batch", 3]
    np.testing.assert_allclose(graph.run(["y"], {"x": ones})[0], np.full((2, 2), 18.0))
    np.testing.assert_allclose(graph.run(["y"], {"x": ones, "w": np.zeros((3, 2), np.float32)})[0], 0.0)
    with pytest.raises(ValueError, match="missing input 'x'"):
        graph.run(["y"], {})


def test_an_unsupported_operator_is_refused_naming_it() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", F, [1, 1, 3, 3]), helper.make_tensor_value_info("w", F, [1, 1, 1, 1])],
        [helper.make_empty_tensor_value_info("y")],
    )
    with pytest.raises(ValueError, match=r"agent 3's act: operator Conv is not supported.*graph_engine=onnxruntime"):
        NumpyGraph(helper.make_model(graph).SerializeToString(), "agent 3's act")
    with pytest.raises(ValueError, match="not an ONNX model"):
        NumpyGraph(onnx.TensorProto().SerializeToString(), "x")
