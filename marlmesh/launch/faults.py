"""The ``faults`` schedule of a run, driven by the launcher from the env-step counter it polls.

``kill`` (SIGKILL an agent, a learner or the env at ``at_env_steps``; optionally restart it
``restart_after_env_steps`` later) is driven here by the launcher. ``partition`` and ``degrade`` act on bus
links: every agent's bus applies them to its outgoing links from the same schedule in the config
(:mod:`comm_bus.faults`), at exact env steps (``tick * B``), so they need no launcher action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from marlmesh.config import Config, ConfigError, KillFault
from marlmesh.launch.mesh import Mesh, MeshError
from marlmesh.launch.supervise import Supervisor

IMPLEMENTED_KINDS = frozenset({"kill", "partition", "degrade"})


def check_supported(config: Config) -> None:
    """Fail before anything starts if the schedule uses a fault kind this version cannot apply.

    Raises:
        ConfigError: Naming the entry and its kind.
    """
    for i, fault in enumerate(config.faults):
        if fault.kind not in IMPLEMENTED_KINDS:
            raise ConfigError(
                f"config key 'faults.{i}': fault kind {fault.kind!r} is not implemented yet "
                f"(implemented: {', '.join(sorted(IMPLEMENTED_KINDS))}); remove the entry"
            )


def check_targets(config: Config, num_agents: int) -> None:
    """Check agent indices of the schedule against the env's agent count (known once the env is up).

    Raises:
        MeshError: Naming the entry with an agent index out of range.
    """
    for i, fault in enumerate(config.faults):
        if isinstance(fault, KillFault) and fault.agent is not None and fault.agent >= num_agents:
            raise MeshError(
                f"config key 'faults.{i}.agent': agent {fault.agent} out of range, the env has agents "
                f"0..{num_agents - 1}"
            )


@dataclass
class FaultSchedule:
    """Fires the kill faults of ``config.faults`` through a :class:`Supervisor`.

    Args:
        config: The run's config (``faults``).
        mesh: The started mesh.
        supervisor: Performs the kills and the scheduled restarts.
    """

    config: Config
    mesh: Mesh
    supervisor: Supervisor
    fired: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_supported(self.config)
        check_targets(self.config, self.mesh.num_agents)

    def step(self, env_steps: int) -> None:
        """Fire every kill fault whose ``at_env_steps`` has been reached (each fires once)."""
        for i, fault in enumerate(self.config.faults):
            if i in self.fired or not isinstance(fault, KillFault) or env_steps < fault.at_env_steps:
                continue
            self.fired.append(i)
            proc = self.mesh.find(fault.role, -1 if fault.agent is None else fault.agent)
            restart_at = None if fault.restart_after_env_steps is None else env_steps + fault.restart_after_env_steps
            self.supervisor.kill(proc, restart_at)

    def summary(self) -> list[dict[str, object]]:
        """Each scheduled fault and whether it fired, for ``summary.json``."""
        return [{**f.model_dump(mode="json"), "fired": i in self.fired} for i, f in enumerate(self.config.faults)]
