"""Hypothesis fuzzing of every gRPC method against real servers on 127.0.0.1 (started in this process).

Thousands of malformed requests in total: each must be answered with a fitting status (never UNKNOWN, never
an application INTERNAL), the servers must stay SERVING, and the rejection counters must rise.
"""

import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from env_service.node import EnvNode
from env_service.servicer import EnvServicer
from learner_service.node import LearnerNode
from learner_service.servicer import LearnerServicer
from marlmesh import tensors
from marlmesh.config import load_config
from marlmesh.control_token import metadata
from marlmesh.policy_spec import policy_spec_for
from marlmesh.rollout import FRAGMENT_REJECT_CAUSES
from marlmesh.serving import Identity, start_server
from marlmesh.testing.fuzz_strategies import AGENT, INT32, INT64, fragments, valid_fragment, wire_tensors
from marlmesh.v1 import control_pb2, control_pb2_grpc, env_pb2, env_pb2_grpc, learner_pb2, learner_pb2_grpc

pytestmark = pytest.mark.integration

MAX_BYTES = 1 << 20
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: Statuses a malformed request may get. INTERNAL only from gRPC itself for undecodable bytes.
CONTROL_TOKEN = "fuzz-control-token-0123456789"
"""Authorizes Control.Shutdown on the fuzzed servers; a call without it is refused before validation."""
AUTH = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
GRPC_UNDECODABLE = "Exception deserializing request!"
CALLS: dict[str, int] = {}
"""Fuzzed calls per status, across this module (the last test checks the counters against it)."""


class Servers:
    def __init__(self):
        config = load_config(
            None,
            [
                "env.kwargs={N: 3, max_cycles: 5}",
                "env.step_deadline_ms=30",
                "env.max_missed_deadlines=1000000",
                "channel.name=broadcast",
                "channel.message_dim=4",
                "algo.ppo.hidden_sizes=[16]",
            ],
        )
        self.env_node = EnvNode(config.env, seed=0, num_envs=2)
        self.env_servicer = EnvServicer(self.env_node)
        spec = policy_spec_for(self.env_servicer._spec, 0, config)
        self.learner_node = LearnerNode(config, spec, checkpoint_dir=None)
        self.stop = threading.Event()
        self.learner_servicer = LearnerServicer(self.learner_node, self.stop)
        self.env_server = start_server(
            host="127.0.0.1",
            port=0,
            identity=Identity("env"),
            stop=self.stop,
            max_message_bytes=MAX_BYTES,
            register=lambda s: env_pb2_grpc.add_EnvServiceServicer_to_server(self.env_servicer, s),
            token=CONTROL_TOKEN,
        )
        self.learner_server = start_server(
            host="127.0.0.1",
            port=0,
            identity=Identity("learner", 0),
            stop=self.stop,
            max_message_bytes=MAX_BYTES,
            register=lambda s: learner_pb2_grpc.add_LearnerServiceServicer_to_server(self.learner_servicer, s),
            token=CONTROL_TOKEN,
        )
        self.env_ch = grpc.insecure_channel(f"127.0.0.1:{self.env_server.port}")
        self.learner_ch = grpc.insecure_channel(f"127.0.0.1:{self.learner_server.port}")
        self.env = env_pb2_grpc.EnvServiceStub(self.env_ch)
        self.learner = learner_pb2_grpc.LearnerServiceStub(self.learner_ch)
        self.env.Join(env_pb2.JoinRequest(agent_index=0, process_id="fuzz-0"), timeout=5)
        self.fragment = valid_fragment(spec)

    def close(self):
        for ch in (self.env_ch, self.learner_ch):
            ch.close()
        self.env_node.close()
        self.learner_node.close()
        self.env_server.stop(0.2)
        self.learner_server.stop(0.2)


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    s.close()


def _expect_handled(call, *, allow_ok=True, allow=frozenset()):
    """Run one RPC: it may succeed or fail with an expected status, never UNKNOWN or an application INTERNAL."""
    try:
        call()
    except grpc.RpcError as exc:
        code = exc.code()
        CALLS[code.name] = CALLS.get(code.name, 0) + 1
        if code == grpc.StatusCode.INTERNAL and exc.details() == GRPC_UNDECODABLE:
            CALLS["undecodable"] = CALLS.get("undecodable", 0) + 1
            return code
        assert code in EXPECTED | set(allow), f"{code.name}: {exc.details()}"
        assert exc.details(), "a rejection must say why"
        return code
    assert allow_ok, "malformed request was accepted"
    CALLS["OK"] = CALLS.get("OK", 0) + 1
    return grpc.StatusCode.OK


# -- EnvService ---------------------------------------------------------------------------------------
@FUZZ
@given(agent=AGENT, process_id=st.one_of(st.text(max_size=300), st.just("")))
def test_fuzz_env_join(servers, agent, process_id):
    _expect_handled(lambda: servers.env.Join(env_pb2.JoinRequest(agent_index=agent, process_id=process_id), timeout=5))


@settings(FUZZ, max_examples=400)
@given(agent=AGENT, tick=st.one_of(st.integers(-2, 4), INT64), action=st.one_of(st.none(), wire_tensors()))
def test_fuzz_env_step(servers, agent, tick, action):
    req = env_pb2.StepRequest(agent_index=agent, tick=tick)
    if action is not None:
        req.action.CopyFrom(action)
    _expect_handled(lambda: servers.env.Step(req, timeout=5))


@settings(FUZZ, max_examples=200)
@given(agent=AGENT)
def test_fuzz_env_leave_and_stats(servers, agent):
    _expect_handled(lambda: servers.env.Leave(env_pb2.LeaveRequest(agent_index=agent), timeout=5))
    _expect_handled(
        lambda: servers.env.GetStats(env_pb2.StatsRequest(episodes_from=agent * 1000, max_episodes=agent), timeout=5)
    )
    servers.env.Join(env_pb2.JoinRequest(agent_index=0, process_id="fuzz-0"), timeout=5)


@FUZZ
@given(episodes_from=INT64, max_episodes=INT32)
def test_fuzz_env_get_stats(servers, episodes_from, max_episodes):
    req = env_pb2.StatsRequest(episodes_from=episodes_from, max_episodes=max_episodes)
    _expect_handled(lambda: servers.env.GetStats(req, timeout=5))


# -- LearnerService -----------------------------------------------------------------------------------
@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_fuzz_learner_push_rollout(servers, data):
    frag = data.draw(fragments(servers.fragment))
    _expect_handled(lambda: servers.learner.PushRollout(frag, timeout=5))


@settings(FUZZ, max_examples=150)
@given(agent=AGENT, have=st.one_of(st.integers(-3, 3), INT64))
def test_fuzz_learner_watch_weights(servers, agent, have):
    def call():
        for _ in servers.learner.WatchWeights(
            learner_pb2.WatchWeightsRequest(agent_index=agent, have_version=have), timeout=0.2
        ):
            pass

    _expect_handled(call, allow={grpc.StatusCode.DEADLINE_EXCEEDED})


# -- Control and raw bytes ----------------------------------------------------------------------------
@settings(FUZZ, max_examples=200)
@given(reason=st.one_of(st.text(max_size=50), st.text(min_size=1000, max_size=3000)))
def test_fuzz_control(servers, reason):
    request = control_pb2.ShutdownRequest(reason=reason)
    for ch in (servers.env_ch, servers.learner_ch):
        stub = control_pb2_grpc.ControlStub(ch)
        _expect_handled(lambda stub=stub: stub.Shutdown(request, timeout=5, metadata=metadata(CONTROL_TOKEN)))
        unauthorized = _expect_handled(lambda stub=stub: stub.Shutdown(request, timeout=5), allow_ok=False, allow=AUTH)
        assert unauthorized in AUTH
        _expect_handled(lambda stub=stub: stub.GetInfo(control_pb2.InfoRequest(), timeout=5))


METHODS = [
    ("env", "/marlmesh.v1.EnvService/Join"),
    ("env", "/marlmesh.v1.EnvService/Step"),
    ("env", "/marlmesh.v1.EnvService/Leave"),
    ("env", "/marlmesh.v1.EnvService/GetStats"),
    ("env", "/marlmesh.v1.EnvService/GetSpec"),
    ("learner", "/marlmesh.v1.LearnerService/PushRollout"),
    ("learner", "/marlmesh.v1.LearnerService/GetStatus"),
    ("learner", "/marlmesh.v1.LearnerService/GetPolicyGraphs"),
    ("env", "/marlmesh.v1.Control/GetInfo"),
    ("learner", "/marlmesh.v1.Control/Shutdown"),
]


@settings(FUZZ, max_examples=600)
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=512))
def test_fuzz_raw_bytes_on_every_unary_method(servers, method, payload):
    server, path = method
    channel = servers.env_ch if server == "env" else servers.learner_ch
    call = channel.unary_unary(path)  # bytes in, bytes out: no client-side serialization
    _expect_handled(lambda: call(payload, timeout=5), allow=AUTH if path.endswith("/Shutdown") else frozenset())


# -- afterwards -------------------------------------------------------------------------------------
def test_oversized_messages_are_refused_and_servers_stay_up_and_counted(servers):
    big = learner_pb2.RolloutFragment(agent_index=0, columns=tensors.encode_named({"obs": np.zeros(MAX_BYTES // 2)}))
    with pytest.raises(grpc.RpcError) as info:
        servers.learner.PushRollout(big, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for ch in (servers.env_ch, servers.learner_ch):
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert not servers.env_servicer.internal_errors and not servers.learner_servicer.internal_errors
    # requests gRPC could not decode never reach a servicer, but the server counts them too
    undecodable = sum(
        control_pb2_grpc.ControlStub(ch).GetInfo(control_pb2.InfoRequest(), timeout=5).counters["undecodable_requests"]
        for ch in (servers.env_ch, servers.learner_ch)
    )
    assert undecodable == CALLS.get("undecodable", 0)
    print("fuzzed calls by status:", CALLS, "env rejected:", dict(servers.env_servicer.rejected))
    print("learner dropped:", dict(servers.learner_node.dropped), "watch rejected:", servers.learner_servicer.rejected)
    if sum(CALLS.values()) > 2000:  # the whole module ran: thousands of requests went through real handlers
        assert CALLS.get("INVALID_ARGUMENT", 0) > 1000, CALLS
        assert sum(servers.env_servicer.rejected.values()) > 500
        dropped = servers.learner_node.dropped
        # every kind of rejection was hit (how often depends on hypothesis' random draws)
        column_checks = sum(dropped[cause] for cause in FRAGMENT_REJECT_CAUSES)
        assert column_checks > 100 and dropped["bad_tensor"] > 0 and dropped["wrong_agent"] > 0
        assert servers.learner_servicer.rejected["WatchWeights"] > 0
    # and the servers still do their job
    assert servers.env.GetSpec(env_pb2.GetSpecRequest(), timeout=5).num_envs == 2
    ack = servers.learner.PushRollout(
        learner_pb2.RolloutFragment(
            agent_index=0,
            num_steps=2,
            min_policy_version=0,
            max_policy_version=0,
            columns=tensors.encode_named(servers.fragment),
        ),
        timeout=5,
    )
    assert ack.accepted
