"""Rollout fragments: the column layout an agent records and its learner trains on (torch-free).

A fragment holds T consecutive steps over B env copies of **one** agent. Columns (leading dims ``[T, B]``):

============================  ==========================================================================
``obs``                       the agent's own observation
``inbox.{k}.msg`` / ``.mask``  messages received in round k (``[T, B, N, M]`` / ``[T, B, N]``), recorded as
                              inputs: no gradient crosses a process boundary
``action``                    int64 ``[T, B]`` or float32 ``[T, B, *shape]``
``logp`` / ``value``          behaviour log-probability and value when the action was taken
``reward``                    float32, received for the action
``cost``                      float32, the env's cost signal for the action (MPE: agent-agent collisions; 0 elsewhere)
``terminated``/``truncated``  bool
``final_obs``                 last observation of an episode that ended at that step (bootstrap on truncation)
``policy_version``            int64 ``[T]``: weights version that acted
``boot.obs``, ``boot.inbox.*`` inputs of the step after the last one (leading dim ``[B]``), for bootstrapping
============================  ==========================================================================
"""

from __future__ import annotations

import numpy as np

from marlmesh.errors import RefusedInput
from marlmesh.spaces import SpaceSpec

BOOT = "boot."


def inbox_keys(k: int, prefix: str = "") -> tuple[str, str]:
    """Column names of round ``k``'s messages and mask."""
    return f"{prefix}inbox.{k}.msg", f"{prefix}inbox.{k}.mask"


class RolloutRecorder:
    """Preallocated buffers for T steps of one agent; :meth:`finish` returns the fragment's columns.

    Args:
        steps: T.
        batch: B.
        obs_shape: Shape of one observation.
        action_space: The agent's action space.
        rounds: Communication rounds per step.
        num_agents: N.
        message_dim: M.
    """

    def __init__(
        self,
        steps: int,
        batch: int,
        obs_shape: tuple[int, ...],
        action_space: SpaceSpec,
        rounds: int,
        num_agents: int,
        message_dim: int,
    ) -> None:
        self.steps, self.batch, self.rounds = steps, batch, rounds
        self.num_agents, self.message_dim = num_agents, message_dim
        t, b = steps, batch
        act_shape = () if action_space.kind == "discrete" else tuple(action_space.shape)
        act_dtype = np.int64 if action_space.kind == "discrete" else np.float32
        self._cols: dict[str, np.ndarray] = {
            "obs": np.zeros((t, b, *obs_shape), np.float32),
            "action": np.zeros((t, b, *act_shape), act_dtype),
            "logp": np.zeros((t, b), np.float32),
            "value": np.zeros((t, b), np.float32),
            "reward": np.zeros((t, b), np.float32),
            "cost": np.zeros((t, b), np.float32),
            "terminated": np.zeros((t, b), bool),
            "truncated": np.zeros((t, b), bool),
            "final_obs": np.zeros((t, b, *obs_shape), np.float32),
            "policy_version": np.zeros((t,), np.int64),
        }
        for k in range(rounds):
            msg, mask = inbox_keys(k)
            self._cols[msg] = np.zeros((t, b, num_agents, message_dim), np.float32)
            self._cols[mask] = np.zeros((t, b, num_agents), np.float32)
        self.size = 0

    @property
    def full(self) -> bool:
        """True when T steps are recorded."""
        return self.size >= self.steps

    def add_decision(
        self,
        obs: np.ndarray,
        inboxes: list[tuple[np.ndarray, np.ndarray]],
        action: np.ndarray,
        logp: np.ndarray,
        value: np.ndarray,
        version: int,
    ) -> None:
        """Record what the agent saw and did at the current step."""
        t = self.size
        c = self._cols
        c["obs"][t] = obs
        for k, (msgs, mask) in enumerate(inboxes):
            mk, kk = inbox_keys(k)
            c[mk][t] = msgs
            c[kk][t] = mask
        c["action"][t] = action
        c["logp"][t] = logp
        c["value"][t] = value
        c["policy_version"][t] = version

    def add_outcome(
        self,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        final_obs: np.ndarray,
        cost: np.ndarray | None = None,
    ) -> None:
        """Record the env's answer to the current step's action and advance (``cost`` None = no cost signal)."""
        t = self.size
        c = self._cols
        c["reward"][t] = reward
        c["cost"][t] = 0.0 if cost is None else cost
        c["terminated"][t] = terminated
        c["truncated"][t] = truncated
        done = terminated | truncated
        c["final_obs"][t] = 0.0
        if done.any():
            c["final_obs"][t][done] = final_obs[done]
        self.size += 1

    def finish(self, boot_obs: np.ndarray, boot_inboxes: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """Return the fragment's columns (copies) with the bootstrap inputs, and reset the recorder."""
        if not self.full:
            raise RuntimeError(f"fragment has {self.size} of {self.steps} steps")
        out = {k: v.copy() for k, v in self._cols.items()}
        out[BOOT + "obs"] = np.asarray(boot_obs, np.float32).copy()
        for k, (msgs, mask) in enumerate(boot_inboxes):
            mk, kk = inbox_keys(k, BOOT)
            out[mk] = msgs.copy()
            out[kk] = mask.copy()
        self.size = 0
        return out


FRAGMENT_REJECT_CAUSES = (
    "bad_columns",
    "bad_shape",
    "bad_dtype",
    "non_finite",
    "action_out_of_range",
    "mask_out_of_range",
    "bad_version",
)
"""Why :func:`validate_columns` refuses a fragment (:attr:`FragmentError.cause`).

``bad_columns``: a column is missing or unexpected (e.g. another channel's round count); ``bad_shape``: a
column's shape differs from the spec (obs shape, message_dim, N, T/B disagreeing between columns or with the
header, an empty fragment); ``bad_dtype``: a column's dtype is not exactly the one the agent's recorder writes
(float32, int64, bool); ``non_finite``: NaN or inf in a float column; ``action_out_of_range``: a discrete action
outside ``[0, n)``; ``mask_out_of_range``: an inbox mask value outside ``[0, 1]``; ``bad_version``: a negative
policy version, versions that decrease within the fragment, or a header version range the columns contradict.

Box actions are not range-checked: the Gaussian policy samples outside the box (the env clips what it
applies) and PPO needs the sampled, unclipped action to recompute its log-probability."""


class FragmentError(RefusedInput):
    """A fragment that must not be trained on (``cause``: one of :data:`FRAGMENT_REJECT_CAUSES`)."""


COLUMN_DTYPES = {"f": np.dtype(np.float32), "i": np.dtype(np.int64), "b": np.dtype(bool)}
"""The exact dtype of each column kind (what :class:`RolloutRecorder` writes): a float16 or float64 column
would reach the optimizer and fail there, taking the learner down."""


def validate_columns(
    cols: dict[str, np.ndarray],
    *,
    obs_shape: tuple[int, ...],
    action_space: SpaceSpec,
    rounds: int,
    num_agents: int,
    message_dim: int,
    num_steps: int | None = None,
    version_range: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Check a received fragment's columns; return ``(T, B)``.

    Args:
        cols: The decoded columns.
        obs_shape: Shape of one observation.
        action_space: The agent's action space.
        rounds: Communication rounds of the channel.
        num_agents: N.
        message_dim: M.
        num_steps: T as a header states it (checked when given).
        version_range: ``(min, max)`` policy version as a header states it (checked when given).

    Raises:
        FragmentError: Naming the first missing, extra, mis-shaped, mis-typed or out-of-range column, with
            its cause (:data:`FRAGMENT_REJECT_CAUSES`).
    """
    if "obs" not in cols:
        raise FragmentError("bad_columns", "column 'obs' missing")
    if cols["obs"].ndim < 2:
        raise FragmentError("bad_shape", "column 'obs' without [T, B] leading dims")
    t, b = cols["obs"].shape[:2]
    act_shape = () if action_space.kind == "discrete" else tuple(action_space.shape)
    want: dict[str, tuple[tuple[int, ...], str]] = {
        "obs": ((t, b, *obs_shape), "f"),
        "action": ((t, b, *act_shape), "i" if action_space.kind == "discrete" else "f"),
        "logp": ((t, b), "f"),
        "value": ((t, b), "f"),
        "reward": ((t, b), "f"),
        "cost": ((t, b), "f"),
        "terminated": ((t, b), "b"),
        "truncated": ((t, b), "b"),
        "final_obs": ((t, b, *obs_shape), "f"),
        "policy_version": ((t,), "i"),
        BOOT + "obs": ((b, *obs_shape), "f"),
    }
    masks = []
    for k in range(rounds):
        for prefix, lead in (("", (t, b)), (BOOT, (b,))):
            mk, kk = inbox_keys(k, prefix)
            want[mk] = ((*lead, num_agents, message_dim), "f")
            want[kk] = ((*lead, num_agents), "f")
            masks.append(kk)
    missing = sorted(set(want) - set(cols))
    extra = sorted(set(cols) - set(want))
    if missing or extra:
        raise FragmentError("bad_columns", f"fragment columns: missing {missing}, unexpected {extra}")
    for name, (shape, kind) in want.items():
        arr = cols[name]
        if tuple(arr.shape) != shape:
            raise FragmentError("bad_shape", f"column {name!r}: got shape {list(arr.shape)}, expected {list(shape)}")
        if arr.dtype != COLUMN_DTYPES[kind]:
            raise FragmentError("bad_dtype", f"column {name!r}: got dtype {arr.dtype}, expected {COLUMN_DTYPES[kind]}")
    if t == 0 or b == 0:
        raise FragmentError("bad_shape", "empty fragment")
    if num_steps is not None and num_steps != t:
        raise FragmentError("bad_shape", f"num_steps {num_steps} does not match the columns' {t} steps")
    for name, (_, kind) in want.items():
        if kind == "f" and not np.isfinite(cols[name]).all():
            raise FragmentError("non_finite", f"column {name!r}: non-finite values")
    action = cols["action"]
    if action_space.kind == "discrete" and (action.min() < 0 or action.max() >= action_space.n):
        raise FragmentError(
            "action_out_of_range",
            f"column 'action': discrete actions must be in [0, {action_space.n}), got {action.min()}..{action.max()}",
        )
    for name in masks:
        mask = cols[name]
        if mask.size and (mask.min() < 0.0 or mask.max() > 1.0):
            raise FragmentError("mask_out_of_range", f"column {name!r}: mask values must be in [0, 1]")
    versions = cols["policy_version"]
    if versions.min() < 0:
        raise FragmentError("bad_version", "column 'policy_version': versions must be >= 0")
    if (np.diff(versions) < 0).any():
        raise FragmentError("bad_version", "column 'policy_version': versions decrease within the fragment")
    if version_range is not None and tuple(version_range) != (int(versions.min()), int(versions.max())):
        raise FragmentError(
            "bad_version",
            f"policy versions {list(version_range)} in the header do not match the columns' "
            f"{[int(versions.min()), int(versions.max())]}",
        )
    return t, b
