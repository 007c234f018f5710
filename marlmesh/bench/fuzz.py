"""``marlmesh bench fuzz [--inputs N] [--surfaces ...] [--seed S] [--json]``: hostile inputs at volume.

Starts a real env service and learner (their own ``python -m`` entry points, as a mesh does) and a real bus
endpoint (:mod:`marlmesh.bench.fuzz_bus_target`) as OS processes on 127.0.0.1, then sends N inputs to every
surface (:mod:`marlmesh.bench.fuzz_surfaces`). Per surface it reports inputs sent, accepted, rejected by
status code (gRPC) or drop cause (bus), crashes (a process that exited or stopped answering its health
check, checked every :data:`LIVENESS_EVERY` inputs and at the end) and an accounting check: the rejections the
client saw equal the rise of the server's own counters over the surface (servicer rejections, learner
fragment drops by cause, undecodable requests, refused shutdowns; the bus's frames received plus frames
dropped by cause equal the frames sent).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from marlmesh.bench.fuzz_surfaces import Surface
    from marlmesh.launch.mesh import Mesh, Proc

HELP = "hostile inputs to every gRPC method and the bus receive path: 0 crashes, every input counted"
DEFAULT_INPUTS = 10_000
SURFACES = (
    "env.Join",
    "env.Step",
    "env.Leave",
    "env.GetStats",
    "env.GetSpec",
    "learner.PushRollout",
    "learner.WatchWeights",
    "learner.GetPolicyGraphs",
    "learner.GetStatus",
    "control.GetInfo",
    "control.Shutdown",
    "health.Check",
    "bus.receive",
)
"""Every surface (:mod:`marlmesh.bench.fuzz_surfaces` builds their inputs)."""
LIVENESS_EVERY = 1000
CALL_TIMEOUT_S = 5.0
WATCH_TIMEOUT_S = 1.0
"""Deadline of a WatchWeights call: a valid one waiting for a newer version ends with DEADLINE_EXCEEDED (long
enough that a loaded server still answers an invalid one first, which it counts as rejected)."""
WATCH_CONCURRENCY = 8
GRPC_UNDECODABLE = "Exception deserializing request!"
BUS_MAX_FRAME = 8192
BUS_SHARE = {"wrong_sender": 0.05, "oversize": 0.01}
"""Share of bus inputs replaced by valid frames with a wrong sender, and by oversized frames."""
FRAGMENT_LOSSES = ("superseded", "shutdown")
"""Learner drop causes of accepted fragments (not refusals)."""
CONFIG = [
    "env.kwargs={N: 3, max_cycles: 5}",
    "env.num_envs=2",
    "env.step_deadline_ms=30",
    "env.max_missed_deadlines=1000000",
    "channel.name=broadcast",
    "channel.message_dim=4",
    "algo.ppo.hidden_sizes=[16]",
    "train.torch_threads=1",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``marlmesh bench fuzz``."""
    p.add_argument("--inputs", type=int, default=DEFAULT_INPUTS, help=f"inputs per surface (default {DEFAULT_INPUTS})")
    p.add_argument(
        "--surfaces", nargs="+", default=None, choices=SURFACES, metavar="NAME", help="only these (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="input seed (default 0)")
    p.add_argument("--run-dir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")


@dataclass
class Tally:
    """What one surface did."""

    sent: int = 0
    accepted: int = 0
    accepted_by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    decoded_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def count(self, kind: str, code: str, details: str, accepted: bool) -> None:
        """Count one answered gRPC input."""
        self.sent += 1
        self.by_kind[kind] += 1
        if details != GRPC_UNDECODABLE:
            self.decoded_by_kind[kind] += 1
        if accepted:
            self.accepted += 1
            self.accepted_by_status[code] += 1
            return
        self.rejected[code] += 1
        self.examples.setdefault(code, details[:160])
        app_internal = code == "INTERNAL" and details != GRPC_UNDECODABLE
        if code == "UNKNOWN" or app_internal or not details:
            self.unexpected.append(f"{kind} -> {code}: {details[:200]}")

    def report(self, seconds: float, accounting: dict[str, Any]) -> dict[str, Any]:
        """The surface's JSON entry."""
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "accepted_by_status": dict(sorted(self.accepted_by_status.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_example": dict(sorted(self.examples.items())),
            "inputs_by_kind": dict(sorted(self.by_kind.items())),
            "decoded_by_kind": dict(sorted(self.decoded_by_kind.items())),
            "unexpected": len(self.unexpected),
            "unexpected_examples": self.unexpected[:5],
            "crashes": len(self.crashes),
            "crash_details": self.crashes,
            "accounting": accounting,
            "seconds": round(seconds, 1),
            "inputs_per_s": round(self.sent / seconds, 1) if seconds > 0 else None,
        }


class GrpcTargets:
    """The env and learner processes, their channels and counters."""

    def __init__(self, root: Path, log: Any) -> None:
        from marlmesh import control_token
        from marlmesh.config import dump_config, load_config
        from marlmesh.launch.mesh import Mesh
        from marlmesh.serving import wait_healthy

        config = load_config(None, CONFIG)
        config_path = root / "config.yaml"
        config_path.write_text(dump_config(config))
        self.config = config
        self.mesh: Mesh = Mesh(config, config_path, root, "train", "fuzz", 0, config.env.num_envs)
        self.env = self.mesh.start_env()
        self.token = control_token.load_token(str(self.mesh.control_token_file), environ={})
        timeout = config.runtime.startup_timeout_s
        self.learner: Proc = self.mesh.start_learner(0)
        self.learner_address = f"{config.runtime.host}:{self.learner.port}"
        for address in (self.mesh.env_address, self.learner_address):
            if not wait_healthy(address, timeout):
                raise RuntimeError(f"{address} never became healthy")
        self.addresses = {"env": self.mesh.env_address, "learner": self.learner_address}
        self.procs = {"env": self.env, "learner": self.learner}
        self.channels = {k: self.mesh.channel(a) for k, a in self.addresses.items()}
        log(f"fuzz: env at {self.addresses['env']}, learner at {self.addresses['learner']}")

    def spec(self) -> Any:
        """The learner's policy spec (from the env's spec, as the learner builds it)."""
        from marlmesh.policy_spec import policy_spec_for
        from marlmesh.v1 import env_pb2, env_pb2_grpc

        env_spec = env_pb2_grpc.EnvServiceStub(self.channels["env"]).GetSpec(env_pb2.GetSpecRequest(), timeout=10)
        return policy_spec_for(env_spec, 0, self.config)

    def counters(self) -> dict[str, float]:
        """Every server counter the accounting compares (``server.name``)."""
        from marlmesh.v1 import control_pb2, control_pb2_grpc, learner_pb2, learner_pb2_grpc

        out: dict[str, float] = {}
        for server, ch in self.channels.items():
            info = control_pb2_grpc.ControlStub(ch).GetInfo(control_pb2.InfoRequest(), timeout=CALL_TIMEOUT_S)
            out.update({f"{server}.{k}": v for k, v in info.counters.items()})
        status = learner_pb2_grpc.LearnerServiceStub(self.channels["learner"]).GetStatus(
            learner_pb2.LearnerStatusRequest(), timeout=CALL_TIMEOUT_S
        )
        out["learner.fragments_received"] = status.fragments_received
        for cause, n in status.fragments_dropped.items():
            out[f"learner.dropped.{cause}"] = n
        return out

    def alive(self) -> list[str]:
        """Why a server counts as crashed (empty: both alive and SERVING)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        problems = []
        for server, proc in self.procs.items():
            if proc.popen.poll() is not None:
                problems.append(f"{server} exited with code {proc.popen.returncode}")
                continue
            try:
                resp = health_pb2_grpc.HealthStub(self.channels[server]).Check(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
                )
                if resp.status != health_pb2.HealthCheckResponse.SERVING:
                    problems.append(f"{server} health is {resp.status}")
            except Exception as exc:  # any failure to answer is a crash for this bench
                problems.append(f"{server} health check failed: {exc}")
        return problems

    def close(self) -> dict[str, Any]:
        """Stop both processes (SIGTERM, as a mesh does) and return their final stats files."""
        for ch in self.channels.values():
            ch.close()
        codes = self.mesh.stop()
        out: dict[str, Any] = {"exit_codes": codes}
        for server, proc in self.procs.items():
            try:
                stats = json.loads(proc.stats_file.read_text())
            except (OSError, ValueError):
                stats = {}
            out[server] = {
                k: stats.get(k)
                for k in ("rejected_requests", "internal_errors", "fragments_received", "fragments_dropped")
                if k in stats
            }
        return out


def _call(channel: grpc.Channel, surface: Surface, payload: bytes, metadata: Any) -> tuple[str, str]:
    """Send one raw request; returns ``(status name, details)``."""
    import grpc

    try:
        if surface.streaming:
            call = channel.unary_stream(surface.path)(payload, timeout=WATCH_TIMEOUT_S, metadata=metadata)
            try:
                next(call)
            except StopIteration:
                pass
            call.cancel()
        else:
            channel.unary_unary(surface.path)(payload, timeout=CALL_TIMEOUT_S, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def _accepted_statuses(surface: Surface) -> set[str]:
    if surface.name == "health.Check":
        return {"OK", "NOT_FOUND"}  # an unknown service name is answered, nothing to count
    if surface.streaming:
        return {"OK", "DEADLINE_EXCEEDED", "CANCELLED"}  # valid and waiting for a newer version
    return {"OK"}


def _counted_rejections(surface: Surface, before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """The rise of the server counters that count rejections of ``surface``'s inputs."""

    def delta(key: str) -> int:
        return int(after.get(key, 0) - before.get(key, 0))

    out = {f"{s}.undecodable_requests": delta(f"{s}.undecodable_requests") for s in surface.servers}
    if surface.name.startswith("env."):
        out["env.rejected_requests"] = delta("env.rejected_requests")
    elif surface.name == "learner.PushRollout":
        for key in sorted(set(before) | set(after)):
            cause = key.removeprefix("learner.dropped.")
            if key.startswith("learner.dropped.") and cause not in FRAGMENT_LOSSES:
                out[key] = delta(key)
    elif surface.name in ("learner.WatchWeights", "learner.GetPolicyGraphs"):
        out["learner.rejected_requests"] = delta("learner.rejected_requests")
    elif surface.name == "control.Shutdown":
        for s in surface.servers:
            out[f"{s}.shutdown_refused"] = delta(f"{s}.shutdown_refused")
            out[f"{s}.shutdown_invalid"] = delta(f"{s}.shutdown_invalid")
    return {k: v for k, v in out.items() if v}


def fuzz_grpc(targets: GrpcTargets, surface: Surface, n: int, seed: int, log: Any) -> dict[str, Any]:
    """Send ``n`` inputs to one gRPC surface; the surface's report."""
    from marlmesh.bench.fuzz_surfaces import build_inputs
    from marlmesh.control_token import metadata

    rng = random.Random(seed + 1)
    inputs = build_inputs(surface, n, seed)
    ok_codes = _accepted_statuses(surface)
    tally = Tally()
    before = targets.counters()
    start = time.monotonic()
    calls = []
    for i, (kind, payload) in enumerate(inputs):
        meta = None
        if surface.name == "control.Shutdown":
            # never the right token on a request that could be valid: that would stop the process
            meta = rng.choice([None, metadata("not-the-token"), metadata(targets.token)])
            if meta is not None and meta == metadata(targets.token) and not _oversize_reason(payload):
                meta = None
        calls.append((kind, targets.channels[surface.servers[i % len(surface.servers)]], payload, meta))

    def send(call: tuple[str, Any, bytes, Any]) -> tuple[str, str]:
        return _call(call[1], surface, call[2], call[3])

    # a valid WatchWeights call may wait out its deadline: several at once (fewer than the server's workers)
    with futures.ThreadPoolExecutor(WATCH_CONCURRENCY if surface.streaming else 1) as pool:
        for at in range(0, len(calls), LIVENESS_EVERY):
            chunk = calls[at : at + LIVENESS_EVERY]
            for (kind, *_), (code, details) in zip(chunk, pool.map(send, chunk), strict=True):
                tally.count(kind, code, details, code in ok_codes)
            tally.crashes += targets.alive()
            if tally.crashes:
                break
            log(f"fuzz: {surface.name}: {at + len(chunk)}/{n}, rejected {dict(tally.rejected)}")
    seconds = time.monotonic() - start
    accounting: dict[str, Any] = {}
    if not tally.crashes:
        after = targets.counters()
        counted = _counted_rejections(surface, before, after)
        accounting = {
            "rejected_seen_by_client": sum(tally.rejected.values()),
            "rejected_counted_by_server": sum(counted.values()),
            "server_counters": counted,
        }
        accounting["ok"] = accounting["rejected_seen_by_client"] == accounting["rejected_counted_by_server"]
        if surface.name == "learner.PushRollout":
            received = int(after["learner.fragments_received"] - before["learner.fragments_received"])
            undecodable = counted.get("learner.undecodable_requests", 0)
            accounting["fragments_received"] = received
            accounting["fragments_received_ok"] = received == tally.sent - undecodable
            accounting["ok"] = accounting["ok"] and accounting["fragments_received_ok"]
        if surface.streaming:
            # A call that waited out its deadline may have been refused by a loaded server after the client
            # gave up: the server's own counters (streams started + refused) must still cover every input.
            streams = int(after.get("learner.watch_streams", 0) - before.get("learner.watch_streams", 0))
            waited = tally.accepted_by_status["DEADLINE_EXCEEDED"] + tally.accepted_by_status["CANCELLED"]
            late = accounting["rejected_counted_by_server"] - accounting["rejected_seen_by_client"]
            accounting["streams_counted_by_server"] = streams
            accounting["refused_after_client_deadline"] = late
            accounting["ok"] = streams + accounting["rejected_counted_by_server"] == tally.sent and 0 <= late <= waited
    return tally.report(seconds, accounting)


def _oversize_reason(payload: bytes) -> bool:
    """True if ``payload`` is a ShutdownRequest whose reason is too long to be accepted."""
    from google.protobuf.message import DecodeError

    from marlmesh.serving import MAX_SHUTDOWN_REASON_CHARS
    from marlmesh.v1 import control_pb2

    try:
        return len(control_pb2.ShutdownRequest.FromString(payload).reason) > MAX_SHUTDOWN_REASON_CHARS
    except (DecodeError, ValueError):
        return False


class BusTarget:
    """The bus endpoint process and the sockets that feed it."""

    def __init__(self, root: Path) -> None:
        import zmq

        log_path = root / "logs" / "fuzz-bus.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "marlmesh.bench.fuzz_bus_target", "--max-frame-bytes", str(BUS_MAX_FRAME)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"the bus target did not start (see {log_path})")
        _, bus_endpoint, control_endpoint = line
        self.ctx = zmq.Context()
        self.push = self._socket(zmq.PUSH, bus_endpoint)
        self.oversize = self._socket(zmq.PUSH, bus_endpoint)  # refused frames close their connection
        self.control = self._socket(zmq.REQ, control_endpoint)

    def _socket(self, kind: int, endpoint: str) -> Any:
        import zmq

        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 200_000)
        sock.connect(endpoint)
        return sock

    def counters(self, request: bytes = b"counters") -> dict[str, Any] | None:
        """The target's counters, or None if it does not answer within :data:`CALL_TIMEOUT_S`."""
        self.control.send(request)
        if not self.control.poll(int(CALL_TIMEOUT_S * 1000)):
            return None
        return json.loads(self.control.recv())

    def alive(self) -> list[str]:
        """Why the bus target counts as crashed (empty: it answers)."""
        if self.proc.poll() is not None:
            return [f"bus target exited with code {self.proc.returncode}"]
        return [] if self.counters() is not None else ["bus target stopped answering"]

    def close(self) -> None:
        """Stop the target and close the sockets."""
        if self.proc.poll() is None:
            self.counters(b"stop")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.ctx.destroy(0)
        self._log.close()


def fuzz_bus(target: BusTarget, n: int, seed: int, log: Any) -> dict[str, Any]:
    """Send ``n`` frames to the bus target; the surface's report."""
    from marlmesh.bench.fuzz_surfaces import build_inputs, bus_surface, wrong_sender

    rng = random.Random(seed + 2)
    surface = bus_surface()
    inputs = build_inputs(surface, n, seed)
    for kind, share in BUS_SHARE.items():
        for i in rng.sample(range(len(inputs)), int(n * share)):
            frame = rng.choice(surface.valid)
            inputs[i] = (kind, wrong_sender(frame, rng) if kind == "wrong_sender" else frame * (BUS_MAX_FRAME // 8))
    tally = Tally()
    before = target.counters() or {}
    refused = 0
    start = time.monotonic()
    for i, (kind, frame) in enumerate(inputs):
        if len(frame) > BUS_MAX_FRAME:
            target.oversize.send(frame)  # refused by the receiving socket (ZMQ_MAXMSGSIZE)
            refused += 1
        else:
            target.push.send(frame)
        tally.sent += 1
        tally.by_kind[kind] += 1
        if (i + 1) % LIVENESS_EVERY == 0:
            tally.crashes += target.alive()
            if tally.crashes:
                break
            log(f"fuzz: bus.receive: {i + 1}/{n}")
    after: dict[str, Any] | None = None
    deadline = time.monotonic() + 30
    while not tally.crashes and time.monotonic() < deadline:  # the last frames may still be in flight
        after = target.counters()
        if after is None:
            tally.crashes.append("bus target stopped answering")
            break
        seen = after["frames_received"] - before.get("frames_received", 0)
        seen += sum(after["frame_drops"].values()) - sum(before.get("frame_drops", {}).values())
        if seen >= tally.sent - refused:
            break
        time.sleep(0.1)
    tally.crashes += [] if tally.crashes else target.alive()
    seconds = time.monotonic() - start
    accounting: dict[str, Any] = {}
    if after is not None and not tally.crashes:
        drops = collections.Counter(after["frame_drops"])
        drops.subtract(before.get("frame_drops", {}))
        received = after["frames_received"] - before.get("frames_received", 0)
        tally.accepted = received
        tally.rejected = collections.Counter({k: v for k, v in drops.items() if v})
        if refused:
            tally.rejected["refused_by_socket"] = refused
        accounting = {
            "frames_sent": tally.sent,
            "frames_received": received,
            "frames_dropped_counted_by_bus": sum(v for v in drops.values()),
            "refused_by_socket": refused,
            "ok": received + sum(drops.values()) + refused == tally.sent,
        }
    return tally.report(seconds, accounting)


def run(ns: argparse.Namespace, root: Path, log: Any) -> dict[str, Any]:
    """Fuzz the selected surfaces; the JSON result."""
    from marlmesh.bench.fuzz_surfaces import grpc_surfaces
    from marlmesh.bench.meshrun import load_average
    from marlmesh.testing.fuzz_strategies import valid_fragment

    wanted = set(ns.surfaces) if ns.surfaces else None
    surfaces: dict[str, Any] = {}
    skipped: list[str] = []
    started = time.monotonic()
    targets = GrpcTargets(root, log)
    final: dict[str, Any] = {}
    try:
        grpc_list = grpc_surfaces(valid_fragment(targets.spec()), targets.config.env.num_envs)
        assert [s.name for s in grpc_list] + ["bus.receive"] == list(SURFACES)
        # Join once so that Step, Leave and the barrier have an agent to work with
        from marlmesh.v1 import env_pb2, env_pb2_grpc

        env_pb2_grpc.EnvServiceStub(targets.channels["env"]).Join(
            env_pb2.JoinRequest(agent_index=0, process_id="fuzz-0"), timeout=CALL_TIMEOUT_S
        )
        for k, surface in enumerate(grpc_list):
            if wanted is not None and surface.name not in wanted:
                continue
            if skipped or any(s["crashes"] for s in surfaces.values()):  # a server is gone: nothing to fuzz
                skipped.append(surface.name)
                continue
            log(f"fuzz: {surface.name}: {ns.inputs} inputs")
            surfaces[surface.name] = fuzz_grpc(targets, surface, ns.inputs, ns.seed + k, log)
    finally:
        final = targets.close()
    if wanted is None or "bus.receive" in wanted:
        bus = BusTarget(root)
        try:
            log(f"fuzz: bus.receive: {ns.inputs} frames")
            surfaces["bus.receive"] = fuzz_bus(bus, ns.inputs, ns.seed, log)
        finally:
            bus.close()
    internal = {s: (final.get(s) or {}).get("internal_errors") or {} for s in ("env", "learner")}
    return {
        "benchmark": "fuzz",
        "inputs_per_surface": ns.inputs,
        "seed": ns.seed,
        "mix": _mix(),
        "surfaces": surfaces,
        "totals": {
            "surfaces": len(surfaces),
            "inputs": sum(s["sent"] for s in surfaces.values()),
            "accepted": sum(s["accepted"] for s in surfaces.values()),
            "rejected": sum(sum(s["rejected"].values()) for s in surfaces.values()),
            "crashes": sum(s["crashes"] for s in surfaces.values()),
            "skipped_after_a_crash": skipped,
            "unexpected": sum(s["unexpected"] for s in surfaces.values()),
            "accounting_ok": all(s["accounting"].get("ok") for s in surfaces.values()),
            "internal_errors": internal,
        },
        "server_final_stats": final,
        "seconds": round(time.monotonic() - started, 1),
        "load_average": load_average(),
    }


def _mix() -> dict[str, float]:
    from marlmesh.bench.fuzz_surfaces import MIX

    return dict(MIX)


def main(ns: argparse.Namespace) -> int:
    """Run the benchmark; exit code 1 if a surface crashed, lost count of an input or answered unexpectedly."""
    from marlmesh.bench import emit, work_dir
    from marlmesh.launch.mesh import MeshError

    def log(line: str) -> None:
        print(line, file=sys.stderr if ns.json else sys.stdout, flush=True)

    if ns.inputs < 1:
        print("marlmesh: error: --inputs must be >= 1", file=sys.stderr)
        return 2
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("marlmesh: error: 'marlmesh bench fuzz' needs hypothesis (pip install 'marlmesh[dev]')", file=sys.stderr)
        return 2
    with work_dir(ns.run_dir, "marlmesh-fuzz-") as root:
        try:
            result = run(ns, root, log)
        except (ValueError, RuntimeError, MeshError) as exc:
            print(f"marlmesh: error: {exc}", file=sys.stderr)
            return 2
    if not ns.json:
        for name, s in result["surfaces"].items():
            print(
                f"{name:>22}: sent {s['sent']}, accepted {s['accepted']}, rejected {dict(s['rejected'])}, "
                f"crashes {s['crashes']}, accounting {'ok' if s['accounting'].get('ok') else 'FAILED'}"
            )
    emit(ns, result)
    t = result["totals"]
    problems = t["crashes"] or t["skipped_after_a_crash"] or t["unexpected"] or any(t["internal_errors"].values())
    clean = t["accounting_ok"] and not problems
    return 0 if clean else 1
