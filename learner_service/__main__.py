"""Entry point: ``python -m learner_service --config C --agent-id I --env-addr HOST:PORT [--checkpoint-dir D]``.

``--tensorboard-dir T`` writes every update's statistics as TensorBoard scalars into ``T``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from learner_service.gossip_addressing import gossip_addressing
from learner_service.node import LearnerNode
from learner_service.servicer import LearnerServicer
from marlmesh import contract, ports, process
from marlmesh.config import Config
from marlmesh.errors import MeshError
from marlmesh.ledger import FragmentLedger
from marlmesh.plugins import PluginError
from marlmesh.policy_spec import policy_spec_for
from marlmesh.serving import Identity, install_signal_handlers, setup_logging, start_metrics, start_server
from marlmesh.tensorboard import ScalarLog
from marlmesh.v1 import learner_pb2_grpc

if TYPE_CHECKING:
    from learner_service.gossip import Gossip

ROLE = "learner_service"
log = logging.getLogger(ROLE)


def _gossip(config: Config, agent: int, num_agents: int) -> Gossip | None:
    """The gossip endpoint when ``algo.dgmappo.gossip.enabled`` (ports from ``MARLMESH_GOSSIP_BASE_PORT``).

    Raises:
        ValueError: If a gossip address variable is malformed.
        RuntimeError: If the gossip port cannot be bound.
    """
    cfg = config.algo.dgmappo.gossip
    if not cfg.enabled:
        return None
    from learner_service.gossip import Gossip

    return Gossip(cfg, config.bus, agent, num_agents, gossip_addressing(), seed=config.seed)


def _fragment_counts(node: LearnerNode) -> dict[str, object]:
    """The learner's fragment ledger: received, trained and dropped by cause (refusals included)."""
    status = node.status()
    return {k: status[k] for k in ("fragments_received", "fragments_trained", "fragments_dropped", "version")}


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m learner_service`` (defaults from the ``MARLMESH_*`` variables)."""
    p = process.base_parser(ROLE, "The learner of one agent (decentralized PPO, local critic).", contract.LEARNER_PORT)
    process.agent_id_arg(p, ROLE)
    process.env_addr_arg(p, ROLE)
    process.variable_arg(
        p,
        ROLE,
        contract.CHECKPOINT_DIR,
        "checkpoint folder of this agent; resumes from the newest valid one",
        type=Path,
    )
    process.variable_arg(
        p,
        ROLE,
        contract.TENSORBOARD_DIR,
        "TensorBoard folder of this learner (update statistics by update); default: none written",
        type=Path,
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one agent's learner until SIGTERM/SIGINT."""
    ns = parser().parse_args(argv)
    process.exit_with_parent()
    config = process.load_or_fail(ROLE, ns)
    agent = process.parse_agent_id(ROLE, ns.agent_id)
    setup_logging("learner", agent)
    tls_identity, token = process.security_or_fail(ROLE, ns, config, f"learner-{agent}", agent)
    import torch

    torch.set_num_threads(config.train.torch_threads)
    host = ns.host or config.runtime.host
    env_spec = process.fetch_env_spec(
        ROLE, ns.env_addr, config.runtime.startup_timeout_s, config.runtime.max_message_bytes, tls_identity
    )
    try:
        spec = policy_spec_for(env_spec, agent, config)
        gossip = _gossip(config, agent, spec.num_agents)
        scalars = None if ns.tensorboard_dir is None else ScalarLog(ns.tensorboard_dir)
        node = LearnerNode(config, spec, ns.checkpoint_dir, gossip=gossip, scalars=scalars)
    except (ValueError, PluginError, RuntimeError) as exc:
        process.fail(ROLE, str(exc))
    stop = threading.Event()
    install_signal_handlers(stop)
    ledger = FragmentLedger(ns.stats_file, lambda: _fragment_counts(node))
    servicer = LearnerServicer(node, stop, on_fragment=ledger.write)
    if config.train.agent_runtime == "onnx":  # before the port file: the agents start after it and ask at once
        servicer.export_graphs()
    server = start_server(
        host=host,
        port=ns.port,
        stop=stop,
        max_message_bytes=config.runtime.max_message_bytes,
        identity=Identity(
            "learner",
            agent,
            counters=lambda: {
                "version": node.version,
                "updates": node.updates,
                "checkpoints_corrupt": node.checkpoints_corrupt,
                "rejected_requests": sum(servicer.rejected.values()),
                "watch_streams": servicer.watch_streams,
            },
        ),
        register=lambda s: learner_pb2_grpc.add_LearnerServiceServicer_to_server(servicer, s),
        tls_identity=tls_identity,
        token=token,
    )
    bound = {ports.GRPC: server.port, ports.METRICS: start_metrics(ns.metrics_port, host, tls_identity)}
    if gossip is not None and gossip.bus.bound_port is not None:
        bound[ports.GOSSIP] = gossip.bus.bound_port
    ports.write_port_file(ns.port_file, bound)
    started = process.start_figures()
    log.info(
        "learner of agent %d listening on %s:%d%s (version %d, resumed from %d, %d corrupt checkpoint(s) skipped)",
        agent,
        host,
        server.port,
        process.security_note(tls_identity, curve=gossip is not None and config.bus.security.curve),
        node.version,
        node.resumed_from_version,
        node.checkpoints_corrupt,
    )

    def train_loop() -> None:
        while not stop.is_set():
            try:
                node.train_next(timeout=0.5)
                ledger.write()  # trained, or dropped by a rolled-back update
            except Exception:  # a bad update must not take the process down silently
                log.exception("update failed; stopping")
                stop.set()

    code = 0
    if gossip is not None and not gossip.bus.addressing.dialable:
        try:
            peers = ports.wait_peer_table(
                Path(str(gossip.bus.addressing.peer_table)), spec.num_agents, config.runtime.startup_timeout_s, stop
            )
        except MeshError as exc:
            log.error("%s", exc)
            code, peers = 3, None
            stop.set()
        if peers is not None:  # None: stopped while waiting
            gossip.bus.dial_peers(peers)
    trainer = threading.Thread(target=train_loop, name="trainer", daemon=True)
    trainer.start()
    stop.wait()
    node.close()
    trainer.join(timeout=30)
    ledger.write()
    if gossip is not None and not trainer.is_alive():  # zmq sockets: closed by the thread that is done with them
        gossip.close()
    if scalars is not None:
        scalars.close()
    server.stop(grace=1.0)
    if node.updates:
        node.save_checkpoint()
    process.write_json(
        ns.stats_file,
        {
            "role": "learner",
            "agent_id": agent,
            "pid": os.getpid(),
            **started,
            **process.memory_figures(),
            **node.status(),
            "rejected_requests": dict(servicer.rejected),
            "internal_errors": dict(servicer.internal_errors),
        },
    )
    log.info("learner of agent %d stopped at version %d", agent, node.version)
    return code


if __name__ == "__main__":
    process.exit_promptly(process.run(ROLE, main))
