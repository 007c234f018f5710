"""Entry point: ``python -m env_service --config C [--seed S] [--num-envs B] [--port P]``.

Hosts B copies of the configured env until SIGTERM/SIGINT. The port defaults to ``MARLMESH_ENV_PORT``
(see :mod:`marlmesh.contract`); ``--port 0`` picks a free one and ``--port-file`` reports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

from env_service.env_workers import EnvWorkerError
from env_service.metrics import export_metrics
from env_service.node import EnvNode
from env_service.servicer import EnvServicer
from marlmesh import contract, ports, process
from marlmesh.plugins import PluginError
from marlmesh.serving import Identity, install_signal_handlers, setup_logging, start_metrics, start_server
from marlmesh.v1 import env_pb2_grpc

ROLE = "env_service"
log = logging.getLogger(ROLE)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m env_service`` (defaults from the ``MARLMESH_*`` variables)."""
    p = process.base_parser(
        ROLE, "Hosts B copies of a PettingZoo ParallelEnv behind a step barrier.", port=contract.ENV_PORT
    )
    p.add_argument("--seed", type=int, default=None, help="env seed (default: the config's seed)")
    p.add_argument("--num-envs", type=int, default=None, help="B, env copies (default: env.num_envs)")
    p.add_argument(
        "--start-tick",
        type=int,
        default=0,
        help="first tick number (a restarted env continues above its previous ticks; default 0)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve the env until SIGTERM/SIGINT."""
    ns = parser().parse_args(argv)
    process.exit_with_parent()
    config = process.load_or_fail(ROLE, ns)
    setup_logging("env")
    tls_identity, token = process.security_or_fail(ROLE, ns, config, "env")
    if ns.num_envs is not None and ns.num_envs < 1:
        process.fail(ROLE, f"--num-envs must be >= 1, got {ns.num_envs}")
    seed = config.seed if ns.seed is None else ns.seed
    started = time.monotonic()
    stop = threading.Event()
    try:
        node = EnvNode(
            config.env,
            seed=seed,
            num_envs=ns.num_envs,
            start_tick=ns.start_tick,
            # lockstep: an agent still starting is not given default actions (they would change the run)
            start_deadline_s=config.runtime.startup_timeout_s if config.train.weight_sync == "lockstep" else None,
            on_failure=lambda _reason: stop.set(),
        )
    except (ValueError, PluginError, EnvWorkerError) as exc:
        process.fail(ROLE, str(exc))
    host = ns.host or config.runtime.host
    install_signal_handlers(stop)
    servicer = EnvServicer(node)
    try:
        server = start_server(
            host=host,
            port=ns.port,
            stop=stop,
            max_message_bytes=config.runtime.max_message_bytes,
            identity=Identity(
                "env",
                counters=lambda: {
                    "tick": node.tick,
                    "env_steps": node.env_steps,
                    "rejected_requests": sum(servicer.rejected.values()),
                },
            ),
            register=lambda s: env_pb2_grpc.add_EnvServiceServicer_to_server(servicer, s),
            workers=max(16, 2 * node.num_agents + 8),
            tls_identity=tls_identity,
            token=token,
        )
    except RuntimeError as exc:
        process.fail(ROLE, str(exc))
    metrics_port = start_metrics(ns.metrics_port, host, tls_identity)
    threading.Thread(target=export_metrics, args=(node, stop), name="metrics", daemon=True).start()
    ports.write_port_file(ns.port_file, {ports.GRPC: server.port, ports.METRICS: metrics_port})
    ready = process.start_figures()
    log.info(
        "env %s up on %s:%d%s: %d agents %s, B=%d, seed %d (built in %.1fs)",
        config.env.name,
        host,
        server.port,
        process.security_note(tls_identity),
        node.num_agents,
        node.agent_names,
        node.num_envs,
        seed,
        time.monotonic() - started,
    )
    stop.wait()
    server.set_serving(False)
    node.close()
    server.stop(grace=1.0)
    s = node.stats(episodes_from=1 << 62, max_episodes=0)
    process.write_json(
        ns.stats_file,
        {
            "role": "env",
            "agent_id": -1,
            "pid": os.getpid(),
            **ready,
            **process.memory_figures(),
            "tick": s.tick,
            "env_steps": s.env_steps,
            "episodes": s.episodes,
            "joins": node.joins,
            "rejoins": node.rejoins,
            "default_actions": {str(k): v for k, v in s.default_actions.items()},
            "late_actions": {str(k): v for k, v in s.late_actions.items()},
            "rejected_requests": dict(servicer.rejected),
            "internal_errors": dict(servicer.internal_errors),
            "start_tick": ns.start_tick,
        },
    )
    if node.failure:
        log.error("env stopped at tick %d after a failure of its env copies: %s", s.tick, node.failure)
        return 1
    log.info("env stopped at tick %d (%d env steps, %d episodes)", s.tick, s.env_steps, s.episodes)
    return 0


if __name__ == "__main__":
    raise SystemExit(process.run(ROLE, main))
