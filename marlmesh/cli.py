"""The ``marlmesh`` command line.

Errors a user can fix (bad config, unknown plugin, failed process) end with exit code 2 (or 1 for a run
that failed) and one line ``marlmesh: error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from marlmesh.config import ConfigError, load_config
from marlmesh.plugins import GROUPS, PluginError, installed

#: Commands named in the contract that later work delivers; they fail with a clear message until then.
PLANNED: dict[str, str] = {}


def _error(message: str, code: int = 2) -> int:
    print(f"marlmesh: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def cmd_train(ns: argparse.Namespace) -> int:
    """``marlmesh train``."""
    from marlmesh.exposure import check_launcher
    from marlmesh.launch.faults import check_supported
    from marlmesh.launch.inprocess import check_inprocess, train_inprocess
    from marlmesh.launch.mesh import MeshError
    from marlmesh.launch.train import check_plugins, default_run_dir, train
    from marlmesh.tls import check_tls

    try:
        config = load_config(ns.config, ns.set)
        check_plugins(config)
        check_supported(config)
        check_tls(config)
        check_launcher(config)
        if ns.launcher == "inprocess":
            check_inprocess(config)
    except (ConfigError, PluginError) as exc:
        return _error(str(exc))
    run_dir = Path(ns.run_dir) if ns.run_dir else default_run_dir(config)
    launch = train_inprocess if ns.launcher == "inprocess" else train
    try:
        summary = launch(config, run_dir, evaluate=not ns.no_eval)
    except MeshError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 1
    if summary["status"] == "interrupted":  # shell convention: 128 + signal number
        return 128 + int(getattr(signal.Signals, str(summary.get("signal") or "SIGINT")))
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    """``marlmesh eval RUN_DIR``."""
    from marlmesh.exposure import check_launcher
    from marlmesh.launch.evaluate import evaluate_run, format_eval_table
    from marlmesh.launch.mesh import MeshError

    run_dir = Path(ns.run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return _error(f"{config_path} not found: RUN_DIR must be a directory written by 'marlmesh train'")
    if not (run_dir / "checkpoints").is_dir():
        return _error(f"{run_dir / 'checkpoints'} not found: the run saved no policy")
    try:
        config = load_config(config_path)
        check_launcher(config)
    except ConfigError as exc:
        return _error(str(exc))
    episodes = ns.episodes or config.eval.episodes
    try:
        result = evaluate_run(
            config,
            config_path,
            run_dir,
            episodes=episodes,
            num_envs=min(config.eval.num_envs, episodes),
            seed=config.seed + config.eval.seed_offset,
            tag="cli-eval",
        )
    except MeshError as exc:
        print(f"marlmesh: error: {exc}", file=sys.stderr)
        return 1
    print(format_eval_table(result))
    if ns.json:
        print(json.dumps(result))
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    """``marlmesh plot RUN_DIR``."""
    from marlmesh.launch.plotting import plot_run

    try:
        for path in plot_run(Path(ns.run_dir)):
            print(path)
    except FileNotFoundError as exc:
        return _error(str(exc))
    return 0


def cmd_plugins(ns: argparse.Namespace) -> int:
    """``marlmesh plugins``."""
    for kind, group in GROUPS.items():
        print(f"{kind} ({group}):")
        for name, target in installed(kind).items():
            print(f"  {name:<36} {target}")
    print("envs also accept any 'module:factory' that returns a PettingZoo ParallelEnv")
    return 0


def cmd_keys(ns: argparse.Namespace) -> int:
    """``marlmesh keys gen DIR --agents N``."""
    from marlmesh.deploy import keys

    try:
        return keys.main(ns)
    except (ValueError, OSError) as exc:
        return _error(str(exc))


def cmd_sweep(ns: argparse.Namespace) -> int:
    """``marlmesh sweep -c SWEEP.yaml [--out DIR] [--parallel K]`` (logic in :mod:`marlmesh.experiments.sweep`)."""
    from marlmesh.experiments.sweep_cli import run_sweep_command

    return run_sweep_command(ns, _error)


def cmd_report(ns: argparse.Namespace) -> int:
    """``marlmesh report SWEEP_DIR`` (logic in :mod:`marlmesh.experiments.report`)."""
    from marlmesh.experiments.sweep_cli import run_report_command

    return run_report_command(ns, _error)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="marlmesh", description="Decentralized multi-agent RL over an emulated comm bus.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train: env + N agents + N learners as processes, then evaluate")
    t.add_argument("-c", "--config", default=None, help="YAML config (default: built-in defaults)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--run-dir", default=None, help="run directory (default: runs/<time>-<env>-<algo>-<channel>)")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    t.add_argument(
        "--launcher",
        choices=("mesh", "inprocess"),
        default="mesh",
        help="mesh: one OS process per env, agent and learner (default); inprocess: all of them in this process, "
        "the same links emulated, weights taken up in lockstep (for experiments)",
    )
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate the saved policies of a run (deterministic actions)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=None)
    e.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    e.set_defaults(func=cmd_eval)
    pl = sub.add_parser("plot", help="write learning-curve PNGs into RUN_DIR/plots")
    pl.add_argument("run_dir")
    pl.set_defaults(func=cmd_plot)
    sub.add_parser("plugins", help="list installed plugins").set_defaults(func=cmd_plugins)
    from marlmesh import bench
    from marlmesh.deploy import export, k8s
    from marlmesh.launch import top

    bench.add_parser(sub)
    top.add_parser(sub)
    k8s.add_parser(sub)
    export.add_parser(sub)
    k = sub.add_parser("keys", help="bus CURVE keys, gRPC mTLS certificates, control token")
    from marlmesh.deploy import keys as keys_cmd

    keys_cmd.add_arguments(k.add_subparsers(dest="action", required=True).add_parser("gen", help="generate key pairs"))
    k.set_defaults(func=cmd_keys)
    from marlmesh.experiments.sweep_cli import add_report_parser, add_sweep_parser

    add_sweep_parser(sub).set_defaults(func=cmd_sweep)
    add_report_parser(sub).set_defaults(func=cmd_report)
    for name, what in PLANNED.items():
        sp = sub.add_parser(name, help=f"{what} (not in this version yet)")
        sp.add_argument("args", nargs=argparse.REMAINDER)
        sp.set_defaults(
            func=lambda ns, what=what: _error(
                f"'marlmesh {ns.command}' ({what}) is not implemented in this version yet"
            )
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marlmesh`` console script."""
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
