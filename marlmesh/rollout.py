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
) -> tuple[int, int]:
    """Check a received fragment's columns; return ``(T, B)``.

    Raises:
        ValueError: Naming the first missing, extra or mis-shaped column.
    """
    if "obs" not in cols or cols["obs"].ndim < 2:
        raise ValueError("column 'obs' missing or without [T, B] leading dims")
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
    for k in range(rounds):
        for prefix, lead in (("", (t, b)), (BOOT, (b,))):
            mk, kk = inbox_keys(k, prefix)
            want[mk] = ((*lead, num_agents, message_dim), "f")
            want[kk] = ((*lead, num_agents), "f")
    missing = sorted(set(want) - set(cols))
    extra = sorted(set(cols) - set(want))
    if missing or extra:
        raise ValueError(f"fragment columns: missing {missing}, unexpected {extra}")
    for name, (shape, kind) in want.items():
        arr = cols[name]
        if tuple(arr.shape) != shape or arr.dtype != COLUMN_DTYPES[kind]:
            raise ValueError(
                f"column {name!r}: got {arr.dtype}{list(arr.shape)}, expected {COLUMN_DTYPES[kind]}{list(shape)}"
            )
        if kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"column {name!r}: non-finite values")
    if t == 0 or b == 0:
        raise ValueError("empty fragment")
    action = cols["action"]
    if action_space.kind == "discrete" and (action.min() < 0 or action.max() >= action_space.n):
        raise ValueError(
            f"column 'action': discrete actions must be in [0, {action_space.n}), got {action.min()}..{action.max()}"
        )
    if cols["policy_version"].min() < 0:
        raise ValueError("column 'policy_version': versions must be >= 0")
    return t, b
