"""Entry point: ``python -m agent_service --config C --agent-id I --env-addr H:P --learner-addr H:P``.

Identity and peers come from flags or the ``MARLMESH_*`` environment variables (see
:mod:`marlmesh.contract`), so a local process and a Kubernetes pod run the same code path.
``--mode eval --checkpoint-dir D`` acts with a saved policy and no learner.
``--runtime onnx --policy-dir D`` (implies eval mode) acts from graphs written by ``marlmesh export`` with
numpy + onnxruntime only: torch is never imported (the ``edge`` install). A training agent does without torch
too with the config's ``train.agent_runtime: onnx`` (:mod:`agent_service.training_runtime`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Gauge

from agent_service.learner_link import LearnerLink
from agent_service.node import AgentNode
from agent_service.runtime import OnnxRuntime, PolicyRuntime, read_manifest
from agent_service.training_runtime import learner_graphs_runtime
from comm_bus.addressing import PeerAddressing
from comm_bus.bus import Bus
from comm_bus.faults import LinkFaults
from marlmesh import contract, ports, process
from marlmesh.env_client import EnvClient
from marlmesh.errors import MeshError
from marlmesh.ledger import FragmentLedger
from marlmesh.lockstep import FINISHED
from marlmesh.plugins import PluginError
from marlmesh.policy_runtime import sampler_seed
from marlmesh.serving import Identity, install_signal_handlers, setup_logging, start_metrics, start_server

ROLE = "agent_service"
log = logging.getLogger(ROLE)

STEPS = Counter("marlmesh_agent_steps", "Batched env steps taken by this agent")
VERSION = Gauge("marlmesh_agent_policy_version", "Weights version this agent acts with")


def _load_eval_params(role: str, directory: Path | None) -> tuple[int, dict]:
    from marlmesh.checkpoint import load_latest

    if directory is None:
        process.fail(role, f"--mode eval needs --checkpoint-dir ({contract.CHECKPOINT_DIR.name})")
    found = load_latest(directory)
    if found is None:
        process.fail(role, f"no valid checkpoint in {directory}")
    payload, path = found
    params = {k: v.numpy() for k, v in payload["policy"].items()}
    bad = sorted(k for k, v in params.items() if not np.isfinite(v).all())
    if bad:
        process.fail(role, f"checkpoint {path} has non-finite weights in {bad[:5]}; refusing to act with it")
    log.info("acting with %s (version %d)", path, payload["version"])
    return int(payload["version"]), params


def _onnx_runtime_factory(ns, config, agent: int):  # noqa: ANN001, ANN202
    """Check the exported policy folder now (clear error before joining the env); build the runtime later."""
    if ns.mode == "train":
        process.fail(
            ROLE,
            f"--runtime onnx acts from frozen exported graphs: use --mode eval (or {contract.MODE.name}=eval); "
            "a training agent acts without torch with the config key train.agent_runtime=onnx",
        )
    if ns.policy_dir is None:
        process.fail(
            ROLE, f"--runtime onnx needs --policy-dir ({contract.POLICY_DIR.name}), a 'marlmesh export' folder"
        )
    try:
        manifest = read_manifest(ns.policy_dir)
    except ValueError as exc:
        process.fail(ROLE, str(exc))
    if manifest["channel"]["name"] != config.channel.name:
        process.fail(
            ROLE,
            f"{ns.policy_dir} was exported for channel {manifest['channel']['name']!r} but the config uses "
            f"{config.channel.name!r}; use the run's config or re-export",
        )

    def build(spec) -> PolicyRuntime:  # noqa: ANN001
        runtime = OnnxRuntime(
            ns.policy_dir,
            agent,
            seed=config.seed + agent,
            threads=config.train.torch_threads,
            engine=config.train.graph_engine,
        )
        if tuple(runtime.obs_shape) != tuple(spec.obs_shape) or runtime.action_space != spec.action_space:
            raise ValueError(
                f"{ns.policy_dir}: agent {agent} was exported for obs {runtime.obs_shape} / {runtime.action_space}, "
                f"the env gives {spec.obs_shape} / {spec.action_space}"
            )
        return runtime

    return build


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m agent_service`` (defaults from the ``MARLMESH_*`` variables)."""
    p = process.base_parser(ROLE, "One agent: env observations -> bus rounds -> actions.", contract.AGENT_PORT)
    process.agent_id_arg(p, ROLE)
    process.env_addr_arg(p, ROLE)
    process.variable_arg(p, ROLE, contract.LEARNER_ADDR, "this agent's learner host:port; '{id}' -> the agent id")
    process.variable_arg(p, ROLE, contract.MODE, "train with a learner, or eval", choices=contract.MODE.choices)
    process.variable_arg(p, ROLE, contract.CHECKPOINT_DIR, "eval mode: the checkpoints to act with", type=Path)
    process.variable_arg(p, ROLE, contract.BUS_TRACE, "file for message-fate records; default: none", type=Path)
    process.variable_arg(
        p,
        ROLE,
        contract.RUNTIME,
        "policy runtime: torch, or onnx from an exported policy (eval only, no torch)",
        choices=contract.RUNTIME.choices,
    )
    process.variable_arg(p, ROLE, contract.POLICY_DIR, "onnx runtime: a 'marlmesh export' folder", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one agent until SIGTERM/SIGINT."""
    ns = parser().parse_args(argv)
    process.exit_with_parent()
    config = process.load_or_fail(ROLE, ns)
    agent = process.parse_agent_id(ROLE, ns.agent_id)
    setup_logging("agent", agent)
    tls_identity, token = process.security_or_fail(ROLE, ns, config, f"agent-{agent}", agent)
    make_runtime = None
    onnx_training = ns.mode == "train" and ns.runtime == "torch" and config.train.agent_runtime == "onnx"
    if ns.runtime == "onnx":
        make_runtime = _onnx_runtime_factory(ns, config, agent)
    elif not onnx_training:  # train.agent_runtime=torch, or eval from checkpoints: the one path that has torch
        from marlmesh.policies.torch_runtime import setup_torch

        setup_torch(config.train.torch_threads, sampler_seed(config.seed, agent))
    try:
        addressing = PeerAddressing.from_env()
    except ValueError as exc:
        process.fail(ROLE, str(exc))
    host = ns.host or config.runtime.host
    rpc = config.runtime.rpc_timeout_s
    env = EnvClient(
        ns.env_addr,
        timeout_s=rpc,
        max_message_bytes=config.runtime.max_message_bytes,
        step_timeout_s=config.env.step_deadline_ms / 1000.0 + rpc,
        tls_identity=tls_identity,
    )
    try:
        env.wait_ready(config.runtime.startup_timeout_s)
    except ConnectionError as exc:
        process.fail(ROLE, str(exc), code=3)

    stop = threading.Event()
    install_signal_handlers(stop)
    learner = None
    initial = None
    if ns.mode == "train" and ns.runtime == "torch":
        learner = LearnerLink(
            ns.learner_addr.format(id=agent),
            agent,
            timeout_s=rpc,
            max_message_bytes=config.runtime.max_message_bytes,
            tls_identity=tls_identity,
            await_layout=True,
        )
        learner.on_fragment_change = FragmentLedger(ns.stats_file, learner.fragment_counts).write
        if onnx_training:
            make_runtime = functools.partial(learner_graphs_runtime, learner, config=config)
    elif ns.runtime == "torch":
        initial = _load_eval_params(ROLE, ns.checkpoint_dir)

    def make_bus(num_agents: int, rounds: int) -> Bus:
        return Bus(
            agent,
            num_agents,
            addressing,
            config=config.bus,
            seed=config.seed,
            rounds=rounds,
            max_frame_bytes=config.runtime.max_message_bytes,
            trace_path=ns.bus_trace,
            faults=LinkFaults.from_config(config.faults),
        )

    expected = process.env_default(ROLE, contract.NUM_AGENTS)
    try:
        node = AgentNode(
            config,
            agent,
            env,
            make_bus,
            learner,
            initial_params=initial,
            deterministic=(ns.mode == "eval" or ns.runtime == "onnx") and config.eval.deterministic,
            make_runtime=make_runtime,
        )
    except (ValueError, PluginError, RuntimeError) as exc:
        process.fail(ROLE, str(exc))
    if expected is not None and int(expected) != node.spec.num_agents:
        node.close()
        process.fail(
            ROLE,
            f"{contract.NUM_AGENTS.name}={expected} but the env at {ns.env_addr} has {node.spec.num_agents} agents; "
            "make the agent count (StatefulSet replicas) match the config's env",
        )
    if ns.runtime == "onnx":  # an exported policy's version
        node.counters.policy_version = node.runtime.policy_version
    server = start_server(
        host=host,
        port=ns.port,
        stop=stop,
        max_message_bytes=config.runtime.max_message_bytes,
        identity=Identity(
            "agent",
            agent,
            counters=lambda: {
                "steps": node.counters.steps,
                "policy_version": node.counters.policy_version,
                "weights_rejected": sum(node.counters.weights_rejected.values()),
                FINISHED: float(node.finished),
            },
        ),
        register=lambda s: None,
        tls_identity=tls_identity,
        token=token,
    )
    bound = {ports.GRPC: server.port, ports.METRICS: start_metrics(ns.metrics_port, host, tls_identity)}
    if node.bus is not None and node.bus.bound_port is not None:
        bound[ports.BUS] = node.bus.bound_port
    ports.write_port_file(ns.port_file, bound)
    started = process.start_figures()
    log.info(
        "agent %d up in %.2fs (mode %s, channel %s, B=%d, control %s:%d)%s",
        agent,
        started["start_s"],
        ns.mode,
        node.channel.name,
        node.num_envs,
        host,
        server.port,
        process.security_note(tls_identity, curve=node.bus is not None and config.bus.security.curve),
    )
    code = 0
    try:
        if node.bus is not None and not addressing.dialable:
            peers = ports.wait_peer_table(
                Path(str(addressing.peer_table)), node.spec.num_agents, config.runtime.startup_timeout_s, stop
            )
            if peers is not None:  # None: stopped while waiting
                node.bus.dial_peers(peers)
        if learner is not None and not stop.is_set():
            node.wait_for_weights(config.runtime.startup_timeout_s)

        def on_step(n: AgentNode) -> None:
            STEPS.inc()
            VERSION.set(n.counters.policy_version)
            if n.counters.steps % 500 == 0:
                log.info("step %d, version %d", n.counters.steps, n.counters.policy_version)

        node.run(stop, on_step)
        if node.finished:  # lockstep: idle at the final tick until the launcher has seen every agent finish
            stop.wait()
    except (TimeoutError, ConnectionError, MeshError) as exc:
        log.error("%s", exc)
        code = 3
    finally:
        node.close()
        server.stop(grace=0.5)
        process.write_json(
            ns.stats_file,
            {
                "role": "agent",
                "agent_id": agent,
                "pid": os.getpid(),
                "runtime": "onnx" if isinstance(node.runtime, OnnxRuntime) else "torch",
                "graph_engine": getattr(node.runtime, "engine", None),
                "torch_imported": "torch" in sys.modules,
                "start": "fork" if os.environ.get(contract.FORKED_BY.name) else "exec",
                **started,
                **process.memory_figures(),
                **node.summary(),
            },
        )
    log.info("agent %d stopped after %d steps", agent, node.counters.steps)
    return code


def run() -> None:
    """The process: :func:`main` with its exposure errors as one-line exits, ended without interpreter teardown.

    ``python -m agent_service`` calls it, and so does a launcher's fork server
    (:mod:`marlmesh.launch.forkserver`) in an interpreter that has this module imported already.
    """
    process.exit_promptly(process.run(ROLE, main))


if __name__ == "__main__":
    run()
