"""env_service as a real gRPC server: the client API, malformed requests, health, and the process entry point."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from env_service.node import EnvNode
from env_service.servicer import EnvServicer
from marlmesh.config import EnvConfig
from marlmesh.env_client import EnvClient, StepInterrupted
from marlmesh.serving import Identity, start_server
from marlmesh.v1 import env_pb2, env_pb2_grpc, tensor_pb2

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served():
    node = EnvNode(EnvConfig(kwargs={"N": 3, "max_cycles": 4}, step_deadline_ms=5000), seed=0, num_envs=3)
    servicer = EnvServicer(node)
    stop = threading.Event()
    server = start_server(
        host="127.0.0.1",
        port=0,
        identity=Identity("env"),
        stop=stop,
        max_message_bytes=4 << 20,
        register=lambda s: env_pb2_grpc.add_EnvServiceServicer_to_server(servicer, s),
    )
    address = f"127.0.0.1:{server.port}"
    yield address, node, servicer
    node.close()
    server.stop(0.2)


def test_three_clients_step_through_the_barrier(served):
    address, node, _ = served
    results: dict[int, list] = {}

    def agent(i):
        with EnvClient(address, timeout_s=5, step_timeout_s=10) as env:
            spec, ob = env.join(i, f"proc-{i}")
            assert [a.name for a in spec.agents] == ["agent_0", "agent_1", "agent_2"] and spec.num_envs == 3
            got = []
            for _ in range(8):
                ob, applied = env.step(i, ob.tick, np.full(3, i + 1, np.int64))
                got.append((ob.tick, applied, ob.truncated.copy(), ob.reward.copy(), ob.positions.shape))
            results[i] = got

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2]
    for i in range(3):
        assert [g[0] for g in results[i]] == list(range(1, 9)) and all(g[1] for g in results[i])
        assert [bool(g[2].all()) for g in results[i]] == [False, False, False, True] * 2
        assert all(g[4] == (3, 3, 2) for g in results[i])
    with EnvClient(address) as env:
        stats = env.stats()
    assert stats.tick == 8 and stats.env_steps == 24 and stats.episodes == 6
    assert all(len(e.agent_returns) == 3 and e.length == 4 for e in stats.recent)
    # returns in the stats are the rewards the agents were given
    total = sum(float(g[3].sum()) for i in range(3) for g in results[i])
    assert abs(sum(e.return_sum for e in stats.recent) - total) < 1e-3


def test_interrupt_ends_a_step_waiting_at_the_barrier_and_the_client_stays_usable(served):
    address, node, _ = served
    with EnvClient(address, timeout_s=5, step_timeout_s=30) as env:
        for i in range(3):
            _, ob = env.join(i, f"proc-{i}")
        threading.Timer(0.3, env.interrupt).start()
        started = time.monotonic()
        with pytest.raises(StepInterrupted, match="barrier of tick 0"):
            env.step(0, ob.tick, np.zeros(3, np.int64))  # agents 1 and 2 never act: the barrier would wait 5 s
        assert time.monotonic() - started < 3.0
        env.leave(0)  # over the fresh channel
        assert 0 not in node.stats().live_agents


def test_a_leave_racing_interrupt_still_reaches_the_env(served):
    # An agent stopping runs both at once: its stop watcher interrupts the Step while the main thread leaves.
    # Interrupt used to replace the one channel under the Leave in flight, which then failed (CANCELLED) and
    # the env kept waiting for the agent that was gone until it missed enough deadlines.
    address, node, _ = served
    with EnvClient(address, timeout_s=5, step_timeout_s=30) as env:
        for attempt in range(40):
            env.join(0, f"proc-{attempt}")
            assert 0 in node.stats().live_agents
            together = threading.Barrier(2)
            watcher = threading.Thread(target=lambda b=together: (b.wait(), env.interrupt()))
            watcher.start()
            together.wait()
            env.leave(0)
            watcher.join(5)
            assert 0 not in node.stats().live_agents, f"attempt {attempt}: the leave was lost"


def test_malformed_requests_get_invalid_argument_and_the_server_stays_up(served):
    address, node, servicer = served
    with grpc.insecure_channel(address) as ch:
        stub = env_pb2_grpc.EnvServiceStub(ch)
        stub.Join(env_pb2.JoinRequest(agent_index=0, process_id="p"), timeout=5)
        bad = [
            (
                env_pb2.StepRequest(agent_index=0, tick=0, action=tensor_pb2.Tensor(dtype="complex64", shape=[3])),
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown dtype",
            ),
            (
                env_pb2.StepRequest(
                    agent_index=0, tick=0, action=tensor_pb2.Tensor(dtype="int64", shape=[3], data=b"x")
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "bytes",
            ),
            (env_pb2.StepRequest(agent_index=9, tick=0), grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
            (
                env_pb2.StepRequest(
                    agent_index=1,
                    tick=0,
                    action=tensor_pb2.Tensor(dtype="int64", shape=[3], data=np.zeros(3, np.int64).tobytes()),
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
                "has not joined",
            ),
        ]
        for req, code, text in bad:
            with pytest.raises(grpc.RpcError) as info:
                stub.Step(req, timeout=5)
            assert info.value.code() == code and text in info.value.details(), info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetStats(env_pb2.StatsRequest(episodes_from=-1), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.GetSpec(env_pb2.GetSpecRequest(), timeout=5).has_collisions
    assert sum(servicer.rejected.values()) == 5


def test_wait_ready_reports_an_unreachable_address():
    with (
        EnvClient("127.0.0.1:1") as env,
        pytest.raises(ConnectionError, match="cannot reach env_service at 127.0.0.1:1"),
    ):
        env.wait_ready(0.5)


def test_process_entry_point_serves_and_stops_cleanly_on_sigterm(tmp_path):
    port_file, stats_file = tmp_path / "port", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "env_service",
            "-c",
            "configs/smoke.yaml",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--stats-file",
            str(stats_file),
            "--num-envs",
            "2",
            "--set",
            "env.kwargs.N=2",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(port_file.read_text()).keys() == {"grpc"}  # no metrics endpoint asked for
        with EnvClient(f"127.0.0.1:{json.loads(port_file.read_text())['grpc']}") as env:
            spec = env.wait_ready(10)
            assert len(spec.agents) == 2 and spec.num_envs == 2 and spec.instance_id
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        assert json.loads(stats_file.read_text())["role"] == "env"
    finally:
        if proc.poll() is None:
            proc.kill()
