"""The surfaces ``marlmesh bench fuzz`` attacks and the inputs it sends to each.

Every surface gets the same mix (:data:`MIX`): values of a Hypothesis strategy for its request message
(:mod:`marlmesh.testing.fuzz_strategies`), byte mutations of valid requests, random bytes, and valid requests
unchanged (so the accepting path runs too). gRPC inputs are sent as raw bytes, so undecodable ones reach the
server as they are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from marlmesh import tensors
from marlmesh.testing import fuzz_strategies as fz
from marlmesh.v1 import bus_pb2, control_pb2, env_pb2, learner_pb2

MIX = {"structured": 0.3, "mutated": 0.45, "random": 0.15, "valid": 0.1}
"""Share of each input kind per surface."""
MAX_RANDOM_BYTES = 512


@dataclass
class Surface:
    """One gRPC method (or the bus receive path) and how to build its inputs.

    Attributes:
        name: ``service.Method`` or ``bus.receive``.
        servers: Which server processes it is sent to (in turn): ``env``, ``learner``, ``bus``.
        path: The gRPC method path (empty for the bus).
        structured: Hypothesis strategy of serialized requests.
        valid: Valid serialized requests (sent unchanged and mutated).
        streaming: Server-streaming method.
    """

    name: str
    servers: tuple[str, ...]
    path: str
    structured: st.SearchStrategy[bytes]
    valid: list[bytes]
    streaming: bool = False


def build_inputs(surface: Surface, n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` inputs ``(kind, bytes)`` for ``surface`` in the proportions of :data:`MIX`, shuffled (seeded)."""
    rng = random.Random(seed)
    counts = {kind: int(n * share) for kind, share in MIX.items()}
    counts["mutated"] += n - sum(counts.values())
    structured = fz.generate(surface.structured, counts["structured"], seed)
    counts["mutated"] += counts["structured"] - len(structured)  # a small strategy may run out of values
    out = [("structured", b) for b in structured]
    out += [("mutated", fz.mutate(rng.choice(surface.valid), rng)) for _ in range(counts["mutated"])]
    out += [("random", rng.randbytes(rng.randint(0, MAX_RANDOM_BYTES))) for _ in range(counts["random"])]
    out += [("valid", rng.choice(surface.valid)) for _ in range(counts["valid"])]
    rng.shuffle(out)
    return out


def _serialized(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda m: m.SerializeToString())


def grpc_surfaces(fragment: dict[str, np.ndarray], num_envs: int) -> list[Surface]:
    """Every gRPC method of the env, learner, control and health services."""
    from grpc_health.v1 import health_pb2

    action = tensors.encode(np.zeros(num_envs, np.int64))
    frag = learner_pb2.RolloutFragment(
        agent_index=0,
        num_steps=int(fragment["obs"].shape[0]),
        min_policy_version=0,
        max_policy_version=0,
        columns=tensors.encode_named(fragment),
    )
    process_ids = st.one_of(st.text(max_size=300), st.just(""))
    env = ("env",)
    learner = ("learner",)
    both = ("env", "learner")
    return [
        Surface(
            "env.Join",
            env,
            "/marlmesh.v1.EnvService/Join",
            _serialized(st.builds(env_pb2.JoinRequest, agent_index=fz.AGENT, process_id=process_ids)),
            [env_pb2.JoinRequest(agent_index=i, process_id=f"fuzz-{i}").SerializeToString() for i in range(3)],
        ),
        Surface(
            "env.Step",
            env,
            "/marlmesh.v1.EnvService/Step",
            _serialized(
                st.builds(
                    env_pb2.StepRequest,
                    agent_index=fz.AGENT,
                    tick=st.one_of(st.integers(-2, 4), fz.INT64),
                    action=fz.wire_tensors(),
                )
            ),
            [env_pb2.StepRequest(agent_index=0, tick=t, action=action).SerializeToString() for t in range(4)],
        ),
        Surface(
            "env.Leave",
            env,
            "/marlmesh.v1.EnvService/Leave",
            _serialized(st.builds(env_pb2.LeaveRequest, agent_index=fz.AGENT)),
            [env_pb2.LeaveRequest(agent_index=i).SerializeToString() for i in range(3)],
        ),
        Surface(
            "env.GetStats",
            env,
            "/marlmesh.v1.EnvService/GetStats",
            _serialized(st.builds(env_pb2.StatsRequest, episodes_from=fz.INT64, max_episodes=fz.INT32)),
            [env_pb2.StatsRequest(episodes_from=0, max_episodes=5).SerializeToString()],
        ),
        Surface("env.GetSpec", env, "/marlmesh.v1.EnvService/GetSpec", st.binary(max_size=64), [b"", b"\x08\x01"]),
        Surface(
            "learner.PushRollout",
            learner,
            "/marlmesh.v1.LearnerService/PushRollout",
            _serialized(fz.fragments(fragment)),
            [frag.SerializeToString()],
        ),
        Surface(
            "learner.WatchWeights",
            learner,
            "/marlmesh.v1.LearnerService/WatchWeights",
            _serialized(
                st.builds(
                    learner_pb2.WatchWeightsRequest,
                    agent_index=fz.AGENT,
                    have_version=st.one_of(st.integers(-3, 3), fz.INT64),
                )
            ),
            [learner_pb2.WatchWeightsRequest(agent_index=0, have_version=-1).SerializeToString()],
            streaming=True,
        ),
        Surface(
            "learner.GetPolicyGraphs",
            learner,
            "/marlmesh.v1.LearnerService/GetPolicyGraphs",
            _serialized(st.builds(learner_pb2.PolicyGraphsRequest, agent_index=fz.AGENT)),
            [learner_pb2.PolicyGraphsRequest(agent_index=0).SerializeToString()],
        ),
        Surface(
            "learner.GetStatus",
            learner,
            "/marlmesh.v1.LearnerService/GetStatus",
            st.binary(max_size=64),
            [learner_pb2.LearnerStatusRequest().SerializeToString()],
        ),
        Surface(
            "control.GetInfo",
            both,
            "/marlmesh.v1.Control/GetInfo",
            st.binary(max_size=64),
            [control_pb2.InfoRequest().SerializeToString()],
        ),
        Surface(
            "control.Shutdown",
            both,
            "/marlmesh.v1.Control/Shutdown",
            _serialized(
                st.builds(
                    control_pb2.ShutdownRequest,
                    reason=st.one_of(st.text(max_size=50), st.text(min_size=1025, max_size=3000)),
                )
            ),
            [control_pb2.ShutdownRequest(reason="fuzz").SerializeToString()],
        ),
        Surface(
            "health.Check",
            both,
            "/grpc.health.v1.Health/Check",
            _serialized(st.builds(health_pb2.HealthCheckRequest, service=st.text(max_size=40))),
            [health_pb2.HealthCheckRequest(service="").SerializeToString()],
        ),
    ]


def valid_frames() -> list[bytes]:
    """Valid bus frames from agent 0 to agent 1: a few payload shapes, with and without visibility times."""
    return [
        fz.valid_frame(rows, dim, visible)
        for rows, dim, visible in ((1, 4, False), (4, 4, True), (2, 16, False), (8, 2, True))
    ]


def bus_surface() -> Surface:
    """The bus receive path: hostile envelopes, mutations of valid frames, random bytes, valid frames."""
    return Surface("bus.receive", ("bus",), "", _serialized(fz.ENVELOPES), valid_frames())


def wrong_sender(frame: bytes, rng: random.Random) -> bytes:
    """``frame`` (a valid envelope) claiming another sender: itself, out of range, or negative."""
    msg = bus_pb2.Envelope.FromString(frame)
    msg.src = rng.choice([1, 3, 99, -1, 2**31 - 1])
    return msg.SerializeToString()
