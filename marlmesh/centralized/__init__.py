"""``mappo-central``: the CENTRALIZED REFERENCE (the one place in marlmesh where a critic sees every agent).

Everything else in marlmesh is decentralized: one learner per agent with a local critic. This package is the
baseline those methods are compared against: one process steps B env copies, N actors (one per agent, each on
its own observation) and ONE central critic ``V(o_1, ..., o_N)`` trained together, CleanRL style. The actors
are saved in the same checkpoint format as the decentralized learners, so evaluation runs exactly like any
other run (env service + N agent processes acting on their own observations: centralized training,
decentralized execution).

Modules: :mod:`~marlmesh.centralized.plugin` (the ``marlmesh.algos`` entry point, torch-free),
:mod:`~marlmesh.centralized.joint_env` (B env copies driven for all agents from one process),
:mod:`~marlmesh.centralized.mappo` (central critic, rollout and PPO update). Its runner lives with the launchers:
:mod:`~marlmesh.launch.centralized` (``marlmesh train`` for this algorithm: run directory, summary, evaluation).
"""

CENTRALIZED_LABEL = "CENTRALIZED REFERENCE"
"""How this algorithm is labelled in CLI output, ``summary.json``, sweep method names and the README."""

BANNER = (
    f"*** {CENTRALIZED_LABEL}: mappo-central trains in ONE process with a central critic V(o_1..o_N) that sees "
    "the joint observation of all agents. It is NOT a decentralized method; it is the reference the "
    "decentralized methods are compared against. ***"
)
"""Printed when such a run starts and ends."""
