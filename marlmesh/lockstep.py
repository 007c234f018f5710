"""Lockstep (reproducible) training: where the run ends and whether a finished run was reproducible.

With ``train.weight_sync: lockstep`` an agent trains synchronous on-policy PPO (see
:mod:`agent_service.weight_sync`) and stops at an exact env tick, :func:`final_tick`, after its last fragment
was trained. The launcher then ends the run when every agent reports :data:`FINISHED` in its
``Control.GetInfo`` counters (:class:`marlmesh.launch.lockstep_end.LockstepEnd`), not at the first progress
poll past the budget.
"""

from __future__ import annotations

from marlmesh.config import Config

FINISHED = "finished"
"""Agent ``Control.GetInfo`` counter: 1 once the agent reached :func:`final_tick` and stopped stepping."""


def final_tick(total_env_steps: int, num_envs: int, rollout_steps: int) -> int:
    """The env tick at which lockstep agents stop: ``total_env_steps / num_envs`` rounded up to whole fragments.

    At that tick every agent pushes its last fragment, waits for the weights trained on it and acts no more,
    so the run has stepped exactly ``final_tick * num_envs`` env steps.

    Raises:
        ValueError: If a count is not positive.
    """
    if min(total_env_steps, num_envs, rollout_steps) < 1:
        raise ValueError(
            f"final_tick needs positive counts, got total_env_steps={total_env_steps}, "
            f"num_envs={num_envs}, rollout_steps={rollout_steps}"
        )
    per_fragment = num_envs * rollout_steps
    fragments = -(-total_env_steps // per_fragment)
    return fragments * rollout_steps


def uses_lockstep(config: Config) -> bool:
    """Whether the run trains in lockstep (``train.weight_sync: lockstep``)."""
    return config.train.weight_sync == "lockstep"


def reproducibility(
    config: Config,
    *,
    round_timeouts: int,
    default_actions: int,
    fragments_lost: int,
    restarts: int,
    stopped_early: bool,
) -> dict[str, object]:
    """Whether a finished run is a function of its config and seed, and if not, what made it depend on timing.

    Args:
        config: The run's config.
        round_timeouts: Bus rounds that went on without a peer after the wall-clock safety deadline.
        default_actions: Actions the env filled in after ``env.step_deadline_ms``.
        fragments_lost: Rollout fragments dropped on the agents' side (never trained).
        restarts: Process restarts (crashes and kill faults).
        stopped_early: The run stopped before its final tick (``train.max_wall_seconds``, an interruption).

    Returns:
        ``{"exact": bool, "broken_by": [reasons]}`` for ``summary.json``.
    """
    reasons = []
    if config.train.weight_sync != "lockstep":
        reasons.append("train.weight_sync=async (agents take up weights whenever they arrive)")
    if config.bus.clock != "sim":
        reasons.append("bus.clock=wall (real delays and deadlines)")
    if round_timeouts:
        reasons.append(f"{round_timeouts} bus round(s) went on without a peer after bus.round_timeout_ms")
    if default_actions:
        reasons.append(f"{default_actions} default action(s) after env.step_deadline_ms")
    if fragments_lost:
        reasons.append(f"{fragments_lost} rollout fragment(s) dropped before training")
    if restarts:
        reasons.append(f"{restarts} process restart(s)")
    if stopped_early:
        reasons.append("stopped before the final tick (wall-clock budget or interruption)")
    return {"exact": not reasons, "broken_by": reasons}
