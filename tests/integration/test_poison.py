"""Poison never trains: real learner and agent processes refuse bad fragments and bad weights, by cause.

One env process (smoke config, N=2, channel ``none``) serves both tests. A real learner process gets one
fragment of every kind of poison over gRPC, then a fragment whose huge (finite) rewards make its update
non-finite; a real agent process watches weights from a LearnerService in this test that serves NaN and
wrong-layout versions between good ones.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from service_procs import SMOKE, start, start_env, stop, wait_port

from learner_service.node import policy_params
from learner_service.policy_graphs import PolicyGraphsSource
from marlmesh import plugins, tensors
from marlmesh.config import dump_config, load_config
from marlmesh.policy_spec import PolicySpec, policy_spec_for
from marlmesh.rollout import RolloutRecorder
from marlmesh.serving import Identity, start_server
from marlmesh.v1 import control_pb2, control_pb2_grpc, env_pb2, env_pb2_grpc, learner_pb2, learner_pb2_grpc, tensor_pb2

pytestmark = pytest.mark.integration
SETS = ["env.kwargs.N=2", "env.step_deadline_ms=200", "channel.name=none", "algo.ppo.epochs=1", "train.torch_threads=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str, PolicySpec]]:
    """``(tmp, config_path, env_address, agent 0's policy spec)`` of a running env process."""
    tmp = tmp_path_factory.mktemp("poison")
    config = load_config(SMOKE, SETS)
    config_path = tmp / "config.yaml"
    config_path.write_text(dump_config(config))
    proc, address = start_env(tmp, config_path)
    try:
        with grpc.insecure_channel(address) as channel:
            spec_msg = env_pb2_grpc.EnvServiceStub(channel).GetSpec(env_pb2.GetSpecRequest(), timeout=30)
        yield tmp, config_path, address, policy_spec_for(spec_msg, 0, config)
    finally:
        stop([proc])


def _fragment(spec: PolicySpec, version: int = 0, steps: int = 4, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(version)
    rec = RolloutRecorder(steps, batch, spec.obs_shape, spec.action_space, 0, spec.num_agents, spec.message_dim)
    for _ in range(steps):
        obs = rng.normal(size=(batch, *spec.obs_shape)).astype(np.float32)
        action = rng.integers(0, spec.action_space.n, batch)
        rec.add_decision(obs, [], action, np.full(batch, -1.6, np.float32), np.zeros(batch), version)
        rec.add_outcome(rng.normal(size=batch), np.zeros(batch, bool), np.zeros(batch, bool), obs)
    return rec.finish(np.zeros((batch, *spec.obs_shape), np.float32), [])


def _push(stub: learner_pb2_grpc.LearnerServiceStub, cols: dict[str, np.ndarray], agent: int = 0) -> grpc.StatusCode:
    versions = cols["policy_version"]
    req = learner_pb2.RolloutFragment(
        agent_index=agent,
        num_steps=int(cols["obs"].shape[0]),
        min_policy_version=int(versions.min()),
        max_policy_version=int(versions.max()),
        columns=tensors.encode_named(cols),
    )
    try:
        stub.PushRollout(req, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _weights(stub: learner_pb2_grpc.LearnerServiceStub) -> tuple[int, dict[str, np.ndarray]]:
    """The learner's published version and parameters (the first message of a WatchWeights stream)."""
    stream = stub.WatchWeights(learner_pb2.WatchWeightsRequest(agent_index=0, have_version=-1), timeout=30)
    msg = next(iter(stream))
    stream.cancel()
    return msg.version, tensors.decode_named(msg.params)


def _status(stub: learner_pb2_grpc.LearnerServiceStub) -> learner_pb2.LearnerStatus:
    return stub.GetStatus(learner_pb2.LearnerStatusRequest(), timeout=10)


def _poisons(spec: PolicySpec) -> dict[str, tuple[dict[str, np.ndarray], int]]:
    """Cause -> (columns, claimed agent) of one poisoned fragment each."""
    good = _fragment(spec)
    nan_obs = good["obs"].copy()
    nan_obs[2, 1, 0] = np.nan
    return {
        "non_finite": (dict(good, obs=nan_obs), 0),
        "bad_shape": (dict(good, obs=good["obs"][:, :, :-1]), 0),
        "bad_dtype": (dict(good, reward=good["reward"].astype(np.int64)), 0),
        "action_out_of_range": (dict(good, action=np.full_like(good["action"], spec.action_space.n)), 0),
        "bad_columns": (dict(good, **{"inbox.0.msg": np.zeros((4, 2, spec.num_agents, 8), np.float32)}), 0),
        "bad_version": (dict(good, policy_version=np.array([2, 1, 1, 1], np.int64)), 0),
        "wrong_agent": (good, 1),
    }


def test_learner_process_refuses_each_poison_by_cause_and_rolls_back_a_non_finite_update(env) -> None:
    tmp, config_path, env_address, spec = env
    port_file, log = tmp / "learner.port", tmp / "learner.log"
    args = ["--config", str(config_path), "--agent-id", "0", "--env-addr", env_address, "--port", "0"]
    proc = start("learner_service", [*args, "--port-file", str(port_file)], log)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{wait_port(proc, port_file, log)}")
        stub = learner_pb2_grpc.LearnerServiceStub(channel)
        version, initial = _weights(stub)
        assert version == 0
        for cause, (cols, agent) in _poisons(spec).items():
            assert _push(stub, cols, agent) == grpc.StatusCode.INVALID_ARGUMENT, cause
        status = _status(stub)
        assert dict(status.fragments_dropped) == dict.fromkeys(_poisons(spec), 1)
        assert status.version == 0 and status.updates == 0 and status.fragments_received == len(_poisons(spec))

        huge = _fragment(spec)
        huge["reward"] = np.full_like(huge["reward"], 3e38)  # finite, but the advantages overflow
        assert _push(stub, huge) == grpc.StatusCode.OK
        deadline = time.monotonic() + 60
        while sum((status := _status(stub)).updates_rejected.values()) < 1:
            assert time.monotonic() < deadline, "the huge-reward fragment was never trained on"
            time.sleep(0.05)
        assert status.version == 0 and status.updates == 0 and status.fragments_dropped["non_finite_update"] == 1
        assert set(status.updates_rejected) == {"non_finite_loss", "non_finite_grad", "non_finite_params"}
        version, after = _weights(stub)
        assert version == 0 and all(np.array_equal(after[k], v) for k, v in initial.items())

        assert _push(stub, _fragment(spec)) == grpc.StatusCode.OK  # the learner still trains on good data
        while _status(stub).version < 1:
            assert time.monotonic() < deadline, "the good fragment was never trained on"
            time.sleep(0.05)
        version, trained = _weights(stub)
        assert version == 1 and all(np.isfinite(v).all() for v in trained.values())
        assert any(not np.array_equal(trained[k], v) for k, v in initial.items())
        channel.close()
    finally:
        codes = stop([proc])
    assert codes == [0], log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("rejected fragment (non_finite)") == 1 and "update rejected (non_finite_" in text


class ScriptedLearner(learner_pb2_grpc.LearnerServiceServicer):
    """Streams good weights (version 0), then poisoned versions 1..7, then (once ``release`` is set) version 8.

    It hands out the policy's graphs as a learner process does (``train.agent_runtime: onnx``).
    """

    def __init__(self, good: dict[str, np.ndarray], graphs: PolicyGraphsSource) -> None:
        self.good = good
        self.graphs = graphs
        self.release = threading.Event()

    def GetPolicyGraphs(self, request, context):  # noqa: N802
        """The graphs of the agent's policy, parameters as inputs."""
        return self.graphs.message()

    def poisoned(self) -> list[tuple[str, learner_pb2.Weights]]:
        """(cause, message) of each poisoned version."""
        good = self.good
        first = next(iter(good))
        nan = dict(good, **{first: np.full_like(good[first], np.nan)})
        missing = {k: v for k, v in good.items() if k != first}
        extra = dict(good, unexpected=np.zeros(3, np.float32))
        shape = dict(good, **{first: np.zeros((*good[first].shape, 2), np.float32)})
        dtype = dict(good, **{first: good[first].astype(np.float64)})
        broken = tensors.encode_named(good)
        broken[0].tensor.CopyFrom(tensor_pb2.Tensor(dtype="float32", shape=[4], data=b"\0" * 3))
        cases = [("non_finite", nan), ("bad_keys", missing), ("bad_keys", extra), ("bad_shape", shape)]
        cases.append(("bad_dtype", dtype))
        out = [(c, learner_pb2.Weights(agent_index=0, params=tensors.encode_named(p))) for c, p in cases]
        out.append(("wrong_agent", learner_pb2.Weights(agent_index=1, params=tensors.encode_named(good))))
        out.append(("undecodable", learner_pb2.Weights(agent_index=0, params=broken)))
        for version, (_, msg) in enumerate(out, start=1):
            msg.version = version
        return out

    def WatchWeights(self, request, context):  # noqa: N802
        """Version 0, the poisoned ones, then version 8 once released; then hold the stream open."""
        if request.have_version < 0:
            yield learner_pb2.Weights(agent_index=0, version=0, params=tensors.encode_named(self.good))
        for version, (_, msg) in enumerate(self.poisoned(), start=1):
            if version > request.have_version:
                yield msg
        while not self.release.wait(0.1):
            if not context.is_active():
                return
        if request.have_version < 8:
            yield learner_pb2.Weights(agent_index=0, version=8, params=tensors.encode_named(self.good))
        while context.is_active():
            time.sleep(0.1)

    def PushRollout(self, request, context):  # noqa: N802
        """Accept every fragment (this learner never trains)."""
        return learner_pb2.PushAck(accepted=True, version=0)


def _agent_counters(stub: control_pb2_grpc.ControlStub) -> dict[str, float]:
    return dict(stub.GetInfo(control_pb2.InfoRequest(), timeout=10).counters)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_agent_process_refuses_nan_and_wrong_layout_weights_and_keeps_its_version(env, runtime) -> None:
    tmp, env_config_path, env_address, spec = env
    tmp = tmp / runtime
    tmp.mkdir()
    config = load_config(env_config_path, [f"train.agent_runtime={runtime}"])
    config_path = tmp / "config.yaml"
    config_path.write_text(dump_config(config))
    channel = plugins.load("channels", config.channel.name)(config.channel)
    good = policy_params(channel.build_policy(spec))
    learner = ScriptedLearner(good, PolicyGraphsSource(channel, spec))
    stop_learner = threading.Event()
    server = start_server(
        host="127.0.0.1",
        port=0,
        identity=Identity("learner", 0),
        stop=stop_learner,
        max_message_bytes=1 << 22,
        register=lambda s: learner_pb2_grpc.add_LearnerServiceServicer_to_server(learner, s),
    )
    port_file, log, stats_file = tmp / "agent.port", tmp / "agent.log", tmp / "agent.json"
    args = ["--config", str(config_path), "--agent-id", "0", "--env-addr", env_address]
    args += ["--learner-addr", f"127.0.0.1:{server.port}", "--port", "0", "--port-file", str(port_file)]
    proc = start("agent_service", [*args, "--stats-file", str(stats_file)], log)
    expected = len(learner.poisoned())
    try:
        control = grpc.insecure_channel(f"127.0.0.1:{wait_port(proc, port_file, log)}")
        stub = control_pb2_grpc.ControlStub(control)
        deadline = time.monotonic() + 60
        while (c := _agent_counters(stub))["weights_rejected"] < expected or c["steps"] < 2:
            assert proc.poll() is None and time.monotonic() < deadline, (c, log.read_text()[-3000:])
            time.sleep(0.05)
        assert c["policy_version"] == 0 and c["weights_rejected"] == expected
        learner.release.set()  # a good version after the poison is taken up
        while _agent_counters(stub)["policy_version"] != 8:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        control.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        stop([proc])
        stop_learner.set()
        server.stop(0.2)
    stats = json.loads(stats_file.read_text())
    want: dict[str, int] = {}
    for cause, _ in learner.poisoned():
        want[cause] = want.get(cause, 0) + 1
    assert {k: v for k, v in stats["weights_rejected"].items() if v} == want
    assert stats["weights_loaded"] == 2 and stats["weights_versions_received"] == 2 and stats["policy_version"] == 8
    text = log.read_text()
    assert text.count("refused weights version") == len(want)  # once per cause, not per message
    assert stats["runtime"] == runtime and stats["torch_imported"] is (runtime == "torch")
