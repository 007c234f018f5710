"""The process contract: every ``MARLMESH_*`` environment variable and default port, declared once.

env_service, agent_service and learner_service take their identity, addresses and ports from flags or from the
variables below; the local launcher (``marlmesh train``/``eval``), the edge runner (``marlmesh bench edge``) and
the Kubernetes manifests (``k8s/``, ``marlmesh k8s render``) set them. Every other module names a variable
through its entry here (``contract.ENV_ADDR.name``) and reads it with :meth:`Variable.value` or
:meth:`Variable.integer`, which apply the default and reject a bad value with an error naming the variable.

Rules every process follows: a flag beats its variable, a variable beats the config, and an empty value counts
as unset. The reference table in ``docs/services.md`` is generated from this module::

    python -m marlmesh.contract --markdown                   # print the generated block
    python -m marlmesh.contract --update docs/services.md    # rewrite the block between the markers

The module uses the standard library only, so every process (including the torch-free edge agent) can import it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PREFIX = "MARLMESH_"
"""Every variable of the contract starts with this."""

DEFAULT_ENV_PORT = 50051
"""gRPC port of env_service."""
DEFAULT_LEARNER_PORT = 50061
"""gRPC port of a learner (one per agent; on Kubernetes in the agent's pod)."""
DEFAULT_AGENT_PORT = 50071
"""gRPC control port of an agent."""
DEFAULT_BUS_BASE_PORT = 47000
"""Bus port of agent 0; agent ``i`` binds ``DEFAULT_BUS_BASE_PORT + i``."""
DEFAULT_GOSSIP_BASE_PORT = 48000
"""Gossip port of learner 0 (``algo.dgmappo.gossip``); learner ``i`` binds ``DEFAULT_GOSSIP_BASE_PORT + i``."""
LOCAL_HOST = "127.0.0.1"
"""Where a process looks for its peers and servers when nothing else is configured."""
LOCAL_ENDPOINT_PATTERN = f"tcp://{LOCAL_HOST}:{{port}}"
"""Default ZeroMQ address template of the bus and the gossip sockets (``{port}`` is base port + id)."""
AUTO_PORT = "auto"
"""``MARLMESH_METRICS_PORT`` value for a port the OS assigns (reported in the ``--port-file``)."""

BEGIN_MARKER = "<!-- contract:begin -->"
"""Line that opens the generated block in a Markdown page."""
END_MARKER = "<!-- contract:end -->"
"""Line that closes the generated block."""
REGENERATE = "python -m marlmesh.contract --update docs/services.md"
"""The command that rewrites the generated block of the reference page."""


class ContractError(ValueError):
    """A contract variable holds a value its readers cannot use; the message names the variable."""


class Role(Enum):
    """A party to the contract: a service process that reads variables, or what starts the processes."""

    ENV = "env"
    """``python -m env_service``."""
    AGENT = "agent"
    """``python -m agent_service`` (also the edge agent with ``--runtime onnx``)."""
    LEARNER = "learner"
    """``python -m learner_service``."""
    LAUNCHER = "launcher"
    """``marlmesh train``/``eval``: one OS process per env, agent and learner on this machine."""
    EDGE = "edge"
    """The edge runner (``marlmesh bench edge``): env_service plus onnx agents, set up like the k8s pods."""
    K8S = "k8s"
    """The Kubernetes manifests in ``k8s/`` and ``marlmesh k8s render``."""


class Kind(Enum):
    """What a variable holds; ports, integers and choices are checked when read."""

    TEXT = "text"
    PATH = "path"
    PORT = "port"
    INTEGER = "integer"
    CHOICE = "choice"
    ADDRESS = "host:port"
    ENDPOINT = "endpoint template"


@dataclass(frozen=True)
class Variable:
    """One ``MARLMESH_*`` environment variable.

    Attributes:
        name: The variable, e.g. ``MARLMESH_ENV_ADDR``.
        meaning: What it sets, in one or two sentences (the docs table shows it).
        read_by: The processes that read it.
        set_by: Who sets it when starting those processes (users may set any variable themselves).
        default: The value a reader uses when it is unset or empty (None: no value).
        flag: The command-line flag that overrides it, if any.
        kind: What it holds.
        choices: The allowed values of a :attr:`Kind.CHOICE` variable; for a port, words accepted besides a
            number (``auto``).
    """

    name: str
    meaning: str
    read_by: frozenset[Role]
    set_by: frozenset[Role] = frozenset()
    default: str | None = None
    flag: str | None = None
    kind: Kind = Kind.TEXT
    choices: tuple[str, ...] = ()

    def value(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's value (its default when unset or empty), checked against its kind.

        Args:
            environ: Variables to read (default: the process environment).

        Raises:
            ContractError: If the value is not a port, an integer or one of the choices its kind needs (a port
                variable with choices also accepts those words, e.g. ``auto``).
        """
        env = os.environ if environ is None else environ
        raw = env.get(self.name) or self.default
        if raw is not None:
            self.check(raw)
        return raw

    def integer(self, environ: Mapping[str, str] | None = None) -> int | None:
        """The value of a port or integer variable as an int (None when unset without a default).

        Raises:
            ContractError: If the value is not an integer (or, for a port, not in 0..65535).
            TypeError: If the variable holds no number (a programming error).
        """
        if self.kind not in (Kind.PORT, Kind.INTEGER):
            raise TypeError(f"{self.name} holds a {self.kind.value}, not a number")
        raw = self.value(environ)
        return None if raw is None else int(raw)

    def check(self, raw: str) -> None:
        """Raise :class:`ContractError` naming this variable if ``raw`` is not a valid value of its kind."""
        if self.kind is Kind.CHOICE and raw not in self.choices:
            raise ContractError(f"{self.name}={raw!r}: expected one of {', '.join(self.choices)}")
        if self.kind in (Kind.PORT, Kind.INTEGER) and raw not in self.choices:
            try:
                number = int(raw)
            except ValueError:
                raise ContractError(f"{self.name}={raw!r}: not an integer") from None
            if self.kind is Kind.PORT and not 0 <= number <= 65535:
                raise ContractError(f"{self.name}={raw!r}: not a port number (0-65535)")


_SERVICES = frozenset({Role.ENV, Role.AGENT, Role.LEARNER})
_AGENT = frozenset({Role.AGENT})
_LEARNER = frozenset({Role.LEARNER})
_AGENT_AND_LEARNER = frozenset({Role.AGENT, Role.LEARNER})
_ALL_STARTERS = frozenset({Role.LAUNCHER, Role.EDGE, Role.K8S})

# -- every process ------------------------------------------------------------------------------------------
CONFIG = Variable(
    "MARLMESH_CONFIG",
    "YAML config of the run (unset: the built-in defaults).",
    read_by=_SERVICES,
    set_by=frozenset({Role.EDGE, Role.K8S}),
    flag="--config",
    kind=Kind.PATH,
)
HOST = Variable(
    "MARLMESH_HOST",
    "Address the gRPC server and the metrics endpoint bind (unset: `runtime.host` of the config).",
    read_by=_SERVICES,
    set_by=frozenset({Role.EDGE, Role.K8S}),
    flag="--host",
)
METRICS_PORT = Variable(
    "MARLMESH_METRICS_PORT",
    "Port of the Prometheus `/metrics` endpoint (HTTPS with a client certificate of the run's CA when "
    "`runtime.tls` is on); 0 = no endpoint; `auto` = a port the OS assigns, reported in the `--port-file` (the "
    "launcher's choice).",
    read_by=_SERVICES,
    set_by=frozenset({Role.K8S}),
    default="0",
    flag="--metrics-port",
    kind=Kind.PORT,
    choices=(AUTO_PORT,),
)
TLS_CA = Variable(
    "MARLMESH_TLS_CA",
    "PEM CA certificate for gRPC mutual TLS (`runtime.tls`); `{id}` becomes the agent index, `{name}` the "
    "identity. Beats `runtime.tls.ca_file` and `runtime.tls.keys_dir`.",
    read_by=_SERVICES,
    set_by=_ALL_STARTERS,
    flag="--tls-ca",
    kind=Kind.PATH,
)
TLS_CERT = Variable(
    "MARLMESH_TLS_CERT",
    "PEM certificate of this process (`runtime.tls`, same placeholders).",
    read_by=_SERVICES,
    set_by=_ALL_STARTERS,
    flag="--tls-cert",
    kind=Kind.PATH,
)
TLS_KEY = Variable(
    "MARLMESH_TLS_KEY",
    "PEM private key of this process (`runtime.tls`, same placeholders).",
    read_by=_SERVICES,
    set_by=_ALL_STARTERS,
    flag="--tls-key",
    kind=Kind.PATH,
)
CONTROL_TOKEN = Variable(
    "MARLMESH_CONTROL_TOKEN",
    "The token that authorizes `Control.Shutdown` (at least 16 characters); beats the token file. The launcher "
    "clears it in its children.",
    read_by=_SERVICES,
)
CONTROL_TOKEN_FILE = Variable(
    "MARLMESH_CONTROL_TOKEN_FILE",
    "File holding that token (the launcher writes a fresh one per run; `marlmesh keys gen` one for Kubernetes). "
    "Without a token a process refuses every remote shutdown unless mTLS authenticates the launcher.",
    read_by=_SERVICES,
    set_by=frozenset({Role.LAUNCHER, Role.K8S}),
    flag="--control-token-file",
    kind=Kind.PATH,
)
PARENT_PID = Variable(
    "MARLMESH_PARENT_PID",
    "PID of the launcher that started this process: the process ends when the launcher dies (Linux).",
    read_by=_SERVICES,
    set_by=frozenset({Role.LAUNCHER}),
    kind=Kind.INTEGER,
)
FORKED_BY = Variable(
    "MARLMESH_FORKED_BY",
    "PID of the launcher's fork server that forked this agent (`runtime.agent_start: fork`); it replaces "
    "`MARLMESH_PARENT_PID` as the parent the agent dies with. Unset: the agent was exec'd.",
    read_by=frozenset({Role.AGENT}),
    set_by=frozenset({Role.LAUNCHER}),
    kind=Kind.INTEGER,
)
LOG_LEVEL = Variable(
    "MARLMESH_LOG_LEVEL",
    "Python log level of the process (any case).",
    read_by=_SERVICES,
    default="INFO",
)

# -- env_service --------------------------------------------------------------------------------------------
ENV_PORT = Variable(
    "MARLMESH_ENV_PORT",
    "gRPC port env_service binds; 0 = a free one (`--port-file` reports it).",
    read_by=frozenset({Role.ENV}),
    set_by=frozenset({Role.K8S}),
    default=str(DEFAULT_ENV_PORT),
    flag="--port",
    kind=Kind.PORT,
)

# -- agents and learners ------------------------------------------------------------------------------------
AGENT_ID = Variable(
    "MARLMESH_AGENT_ID",
    "This process's agent index, 0..N-1; a pod name such as `agents-2` works too (the number after the last "
    "dash is the index).",
    read_by=_AGENT_AND_LEARNER,
    set_by=_ALL_STARTERS,
    flag="--agent-id",
)
ENV_ADDR = Variable(
    "MARLMESH_ENV_ADDR",
    "Address of env_service.",
    read_by=_AGENT_AND_LEARNER,
    set_by=frozenset({Role.EDGE, Role.K8S}),
    default=f"{LOCAL_HOST}:{DEFAULT_ENV_PORT}",
    flag="--env-addr",
    kind=Kind.ADDRESS,
)
CHECKPOINT_DIR = Variable(
    "MARLMESH_CHECKPOINT_DIR",
    "Checkpoint folder of this agent: the learner writes it and resumes from the newest valid checkpoint; an "
    "agent in eval mode acts with the newest one.",
    read_by=_AGENT_AND_LEARNER,
    set_by=frozenset({Role.K8S}),
    flag="--checkpoint-dir",
    kind=Kind.PATH,
)

# -- agent_service ------------------------------------------------------------------------------------------
AGENT_PORT = Variable(
    "MARLMESH_AGENT_PORT",
    "gRPC control port an agent binds; 0 = a free one.",
    read_by=_AGENT,
    set_by=frozenset({Role.EDGE, Role.K8S}),
    default=str(DEFAULT_AGENT_PORT),
    flag="--port",
    kind=Kind.PORT,
)
NUM_AGENTS = Variable(
    "MARLMESH_NUM_AGENTS",
    "N, the agent count the deployment expects: an agent exits with an error when the env has another count "
    "(unset: not checked).",
    read_by=_AGENT,
    set_by=_ALL_STARTERS,
    kind=Kind.INTEGER,
)
LEARNER_ADDR = Variable(
    "MARLMESH_LEARNER_ADDR",
    "Address of this agent's learner; `{id}` becomes the agent index.",
    read_by=_AGENT,
    set_by=frozenset({Role.K8S}),
    default=f"{LOCAL_HOST}:{DEFAULT_LEARNER_PORT}",
    flag="--learner-addr",
    kind=Kind.ADDRESS,
)
PEER_PATTERN = Variable(
    "MARLMESH_PEER_PATTERN",
    "ZeroMQ address of agent `{id}`'s bus socket; `{port}` is `MARLMESH_BUS_BASE_PORT` + id (on Kubernetes "
    "`tcp://agents-{id}.agents:{port}`), or agent `{id}`'s entry of `MARLMESH_PEER_TABLE` when that is set.",
    read_by=_AGENT,
    set_by=_ALL_STARTERS,
    default=LOCAL_ENDPOINT_PATTERN,
    kind=Kind.ENDPOINT,
)
BUS_BIND = Variable(
    "MARLMESH_BUS_BIND",
    "Address this agent's bus socket binds (same placeholders); port 0 (`tcp://127.0.0.1:0`) = a port the OS "
    "assigns, reported in the `--port-file`.",
    read_by=_AGENT,
    set_by=_ALL_STARTERS,
    default=LOCAL_ENDPOINT_PATTERN,
    kind=Kind.ENDPOINT,
)
BUS_BASE_PORT = Variable(
    "MARLMESH_BUS_BASE_PORT",
    "Bus port of agent 0; agent i uses base + i (fixed ports: Kubernetes; unused with `MARLMESH_PEER_TABLE`).",
    read_by=_AGENT,
    set_by=frozenset({Role.K8S}),
    default=str(DEFAULT_BUS_BASE_PORT),
    kind=Kind.PORT,
)
PEER_TABLE = Variable(
    "MARLMESH_PEER_TABLE",
    'File listing every agent\'s bound bus port (`{"ports": [p0, p1, ...]}`), written by the launcher once '
    "every agent reported its port: the agent binds, reports, waits for the file (up to "
    "`runtime.startup_timeout_s`) and dials peer `{id}` at `MARLMESH_PEER_PATTERN` with `{port}` from it "
    "(unset: fixed ports, base + id).",
    read_by=_AGENT,
    set_by=frozenset({Role.LAUNCHER, Role.EDGE}),
    kind=Kind.PATH,
)
BUS_TRACE = Variable(
    "MARLMESH_BUS_TRACE",
    "File for this agent's message-fate records (unset: no trace).",
    read_by=_AGENT,
    flag="--bus-trace",
    kind=Kind.PATH,
)
MODE = Variable(
    "MARLMESH_MODE",
    "`train`: act and send rollouts to the learner; `eval`: act with a saved or exported policy, no learner.",
    read_by=_AGENT,
    set_by=frozenset({Role.EDGE}),
    default="train",
    flag="--mode",
    kind=Kind.CHOICE,
    choices=("train", "eval"),
)
RUNTIME = Variable(
    "MARLMESH_RUNTIME",
    "Policy runtime: `torch`, or `onnx` from an exported policy (eval only; torch is never imported).",
    read_by=_AGENT,
    set_by=frozenset({Role.EDGE}),
    default="torch",
    flag="--runtime",
    kind=Kind.CHOICE,
    choices=("torch", "onnx"),
)
POLICY_DIR = Variable(
    "MARLMESH_POLICY_DIR",
    "Folder written by `marlmesh export` (the onnx runtime acts from it).",
    read_by=_AGENT,
    set_by=frozenset({Role.EDGE}),
    flag="--policy-dir",
    kind=Kind.PATH,
)

# -- learner_service ----------------------------------------------------------------------------------------
LEARNER_PORT = Variable(
    "MARLMESH_LEARNER_PORT",
    "gRPC port a learner binds; 0 = a free one.",
    read_by=_LEARNER,
    set_by=frozenset({Role.K8S}),
    default=str(DEFAULT_LEARNER_PORT),
    flag="--port",
    kind=Kind.PORT,
)
TENSORBOARD_DIR = Variable(
    "MARLMESH_TENSORBOARD_DIR",
    "TensorBoard folder of this learner: its update statistics are written there as event files by update "
    "(unset: none are written; `marlmesh train` passes `RUN_DIR/tensorboard/learner-<i>` when "
    "`train.tensorboard` is on).",
    read_by=_LEARNER,
    flag="--tensorboard-dir",
    kind=Kind.PATH,
)
GOSSIP_BASE_PORT = Variable(
    "MARLMESH_GOSSIP_BASE_PORT",
    "Gossip port of learner 0 (`algo.dgmappo.gossip`); learner i uses base + i (unused with "
    "`MARLMESH_GOSSIP_PEER_TABLE`).",
    read_by=_LEARNER,
    set_by=frozenset({Role.K8S}),
    default=str(DEFAULT_GOSSIP_BASE_PORT),
    kind=Kind.PORT,
)
GOSSIP_PATTERN = Variable(
    "MARLMESH_GOSSIP_PATTERN",
    "ZeroMQ address of learner `{id}`'s gossip socket; `{port}` is `MARLMESH_GOSSIP_BASE_PORT` + id, or "
    "learner `{id}`'s entry of `MARLMESH_GOSSIP_PEER_TABLE` when that is set.",
    read_by=_LEARNER,
    set_by=frozenset({Role.LAUNCHER, Role.K8S}),
    default=LOCAL_ENDPOINT_PATTERN,
    kind=Kind.ENDPOINT,
)
GOSSIP_BIND = Variable(
    "MARLMESH_GOSSIP_BIND",
    "Address this learner's gossip socket binds (same placeholders; port 0 = OS-assigned, reported in the "
    "`--port-file`).",
    read_by=_LEARNER,
    set_by=frozenset({Role.LAUNCHER, Role.K8S}),
    default=LOCAL_ENDPOINT_PATTERN,
    kind=Kind.ENDPOINT,
)
GOSSIP_PEER_TABLE = Variable(
    "MARLMESH_GOSSIP_PEER_TABLE",
    "Like `MARLMESH_PEER_TABLE`, for the learners' gossip sockets (the launcher writes it once every learner "
    "reported its gossip port).",
    read_by=_LEARNER,
    set_by=frozenset({Role.LAUNCHER}),
    kind=Kind.PATH,
)

VARIABLES: tuple[Variable, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Variable))
"""Every variable of the contract, in declaration order."""
PORTS: tuple[tuple[str, int, str], ...] = (
    ("DEFAULT_ENV_PORT", DEFAULT_ENV_PORT, "env_service gRPC"),
    ("DEFAULT_LEARNER_PORT", DEFAULT_LEARNER_PORT, "learner gRPC"),
    ("DEFAULT_AGENT_PORT", DEFAULT_AGENT_PORT, "agent gRPC (control)"),
    ("DEFAULT_BUS_BASE_PORT", DEFAULT_BUS_BASE_PORT, "bus socket of agent 0 (agent i: + i)"),
    ("DEFAULT_GOSSIP_BASE_PORT", DEFAULT_GOSSIP_BASE_PORT, "gossip socket of learner 0 (learner i: + i)"),
)
"""The default ports: constant name, number, what binds it."""


def by_name(name: str) -> Variable:
    """The declared variable called ``name``.

    Raises:
        KeyError: If the contract declares no such variable.
    """
    for var in VARIABLES:
        if var.name == name:
            return var
    raise KeyError(f"{name} is not a variable of the process contract (marlmesh/contract.py)")


def agent_index(raw: str) -> int | None:
    """The agent index that an ``--agent-id``/``MARLMESH_AGENT_ID`` value names, None if it names none.

    ``"2"`` and a StatefulSet pod name such as ``"agents-2"`` (the number after the last dash) both name agent 2.
    """
    tail = raw.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


# -- the generated reference table --------------------------------------------------------------------------
def _roles(roles: frozenset[Role]) -> str:
    return ", ".join(r.value for r in Role if r in roles) or "-"


def _code(text: str | None) -> str:
    return "-" if text is None else f"`{text}`"


def markdown() -> str:
    """The generated block of ``docs/services.md``: the default ports and every variable, between the markers."""
    lines = [
        BEGIN_MARKER,
        f"<!-- generated from marlmesh/contract.py by `{REGENERATE}`; do not edit by hand -->",
        "",
        "| Constant | Port | Bound by |",
        "|---|---|---|",
        *(f"| `{name}` | {port} | {what} |" for name, port, what in PORTS),
        "",
        "| Variable | Read by | Set by | Flag | Default | Kind | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in VARIABLES:
        kind = " \\| ".join([*([] if v.kind is Kind.CHOICE else [v.kind.value]), *(f"`{c}`" for c in v.choices)])
        lines.append(
            f"| `{v.name}` | {_roles(v.read_by)} | {_roles(v.set_by)} | {_code(v.flag)} | {_code(v.default)} "
            f"| {kind} | {v.meaning} |"
        )
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def _split(text: str, source: str) -> tuple[str, str, str]:
    """``(before, block, after)`` of a page around the generated block (markers included in ``block``)."""
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ContractError(f"{source}: no {BEGIN_MARKER} ... {END_MARKER} block to hold the generated table")
    end += len(END_MARKER)
    if text[end : end + 1] == "\n":
        end += 1
    return text[:start], text[start:end], text[end:]


def committed_block(path: Path) -> str:
    """The generated block as committed in the page at ``path`` (markers included).

    Raises:
        ContractError: If the page has no marker pair.
    """
    return _split(path.read_text(), str(path))[1]


def update_page(path: Path) -> bool:
    """Rewrite the generated block of the page at ``path``; True if the page changed.

    Raises:
        ContractError: If the page has no marker pair.
    """
    text = path.read_text()
    before, _, after = _split(text, str(path))
    new = before + markdown() + after
    if new == text:
        return False
    path.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m marlmesh.contract --markdown | --update PAGE``."""
    p = argparse.ArgumentParser(prog="python -m marlmesh.contract", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the generated block (ports and variables)")
    what.add_argument("--update", type=Path, metavar="PAGE", help="rewrite the block between the markers of PAGE")
    ns = p.parse_args(argv)
    if ns.markdown:
        sys.stdout.write(markdown())
        return 0
    try:
        changed = update_page(ns.update)
    except (OSError, ContractError) as exc:
        print(f"marlmesh.contract: error: {exc}", file=sys.stderr)
        return 2
    print(f"{ns.update}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
