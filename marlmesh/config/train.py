"""``train``: the training budget, rollouts, checkpoints and weight sync."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from marlmesh.config.base import StrictModel


class TrainConfig(StrictModel):
    """Training budget and cadence."""

    total_env_steps: int = Field(1_000_000, ge=1)
    """Stop after this many env steps (single-env steps summed over the B copies)."""
    rollout_steps: int = Field(100, ge=1)
    """T: batched steps per rollout fragment sent to the learner (a fragment holds T x B samples)."""
    max_wall_seconds: float | None = Field(None, gt=0)
    """Optional wall-clock budget; training stops at whichever limit comes first."""
    checkpoint_keep: int = Field(3, ge=1)
    """Checkpoints kept per agent (older ones are deleted)."""
    torch_threads: int = Field(1, ge=1)
    """torch intra-op threads per process (many processes share few cores); also onnxruntime's in agents."""
    agent_runtime: Literal["torch", "onnx"] = "onnx"
    """What a training agent acts with. ``onnx`` (the default): its learner's ONNX graphs of that policy
    (exported once, on the agent's first ``GetPolicyGraphs``) with every weights version fed in as graph inputs;
    evaluated by ``graph_engine``, so the agent process never imports torch (less memory, faster start and step).
    ``torch``: the channel's torch policy, each weights version loaded into it. Learners keep torch. Both
    runtimes sample with the same numpy sampler and seed, so on the same weights and inputs they act alike (up
    to float rounding); the in-process launcher acts with the same runtime as the mesh's agents."""
    graph_engine: Literal["numpy", "onnxruntime"] = "numpy"
    """What evaluates the ONNX graphs of an agent acting with ``agent_runtime: onnx`` (and of ``agent_service
    --runtime onnx``, the edge). ``numpy`` (the default): a small interpreter of the operators the exported
    graphs use, numpy only, so the agent process loads no onnxruntime (about 35 MiB less peak RSS per agent and
    a faster start; a graph with another operator is refused at the agent's start, naming it). ``onnxruntime``:
    onnxruntime's CPU provider. Both act alike on the same weights and inputs (up to float rounding)."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``RUN_DIR/tensorboard/``: each learner's update statistics by update
    (``learner-<i>/``) and the team's return and evaluation by env step (``team/``); ``tensorboard --logdir
    runs/`` shows them. ``false``: none are written."""
    weight_sync: Literal["async", "lockstep"] = "async"
    """How an agent picks up its learner's weights. ``async``: the newest version that has arrived, between
    steps, never waiting (learners and agents overlap; runs are not repeatable). ``lockstep``: synchronous
    on-policy PPO, reproducible under ``bus.clock=sim``: after pushing rollout fragment k the agent waits for
    the version its learner trained on fragments 1..k and acts with it; the run ends at an exact tick
    (``total_env_steps / num_envs`` rounded up to whole fragments) instead of at a progress poll.
    ``marlmesh sweep`` runs its training cells in lockstep."""
    lockstep_timeout_s: float = Field(300.0, gt=0)
    """Lockstep: longest wait for the learner's version after a fragment; past it the agent fails with an
    error naming the version it waited for."""
