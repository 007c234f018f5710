"""Action and observation spaces as plain data, independent of gymnasium and of the wire format.

Two kinds cover the PettingZoo environments marlmesh hosts: ``discrete`` (``n`` actions, int64 rows)
and ``box`` (a float tensor of ``shape`` between ``low`` and ``high``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marlmesh.v1 import env_pb2


@dataclass(frozen=True)
class SpaceSpec:
    """One space.

    Attributes:
        kind: ``"discrete"`` or ``"box"``.
        n: Number of actions (discrete).
        shape: Shape of one element (box; ``()`` for discrete).
        low: Flattened lower bounds (box).
        high: Flattened upper bounds (box).
    """

    kind: str
    n: int = 0
    shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "box"):
            raise ValueError(f"space kind must be 'discrete' or 'box', got {self.kind!r}")
        if self.kind == "discrete" and self.n < 1:
            raise ValueError(f"a discrete space needs n >= 1, got {self.n}")
        if self.kind == "box":
            size = int(np.prod(self.shape)) if self.shape else 1
            for name, bound in (("low", self.low), ("high", self.high)):
                if bound and len(bound) != size:
                    raise ValueError(f"box {name} has {len(bound)} values for shape {self.shape} ({size} elements)")

    @property
    def flat_dim(self) -> int:
        """Elements in one flattened sample (1 for discrete)."""
        return 1 if self.kind == "discrete" else (int(np.prod(self.shape)) if self.shape else 1)

    # -- conversions -------------------------------------------------------------------------------
    @classmethod
    def from_gym(cls, space: object) -> SpaceSpec:
        """Convert a gymnasium ``Discrete`` or ``Box``.

        Raises:
            ValueError: For any other space type (named in the message).
        """
        from gymnasium import spaces

        if isinstance(space, spaces.Discrete):
            if int(space.start) != 0:
                raise ValueError(f"Discrete spaces must start at 0, got start={space.start}")
            return cls(kind="discrete", n=int(space.n))
        if isinstance(space, spaces.Box):
            return cls(
                kind="box",
                shape=tuple(int(s) for s in space.shape),
                low=tuple(float(x) for x in np.asarray(space.low, np.float64).ravel()),
                high=tuple(float(x) for x in np.asarray(space.high, np.float64).ravel()),
            )
        raise ValueError(f"unsupported space {type(space).__name__}: marlmesh supports Discrete and Box")

    def to_proto(self) -> env_pb2.Space:
        """Wire form."""
        if self.kind == "discrete":
            return env_pb2.Space(kind=env_pb2.Space.DISCRETE, n=self.n, dtype="int64")
        return env_pb2.Space(
            kind=env_pb2.Space.BOX, shape=list(self.shape), low=list(self.low), high=list(self.high), dtype="float32"
        )

    @classmethod
    def from_proto(cls, msg: env_pb2.Space) -> SpaceSpec:
        """Parse the wire form.

        Raises:
            ValueError: If the kind is unspecified or the fields are inconsistent.
        """
        if msg.kind == env_pb2.Space.DISCRETE:
            return cls(kind="discrete", n=int(msg.n))
        if msg.kind == env_pb2.Space.BOX:
            return cls(kind="box", shape=tuple(msg.shape), low=tuple(msg.low), high=tuple(msg.high))
        raise ValueError("space kind is unspecified")

    # -- batches -----------------------------------------------------------------------------------
    def default_action(self, batch: int) -> np.ndarray:
        """The action given to an agent that missed the barrier.

        0 for discrete spaces (a no-op in MPE), zeros clipped into the box otherwise (a no-op for MPE's
        continuous actions).
        """
        if self.kind == "discrete":
            return np.zeros(batch, np.int64)
        zero = np.zeros(self.flat_dim, np.float32)
        if self.low:
            zero = np.clip(zero, np.asarray(self.low, np.float32), np.asarray(self.high, np.float32))
        return np.broadcast_to(zero.reshape(self.shape), (batch, *self.shape)).astype(np.float32)

    def validate_action(self, action: np.ndarray, batch: int) -> np.ndarray:
        """Check a batch of actions and return it in canonical dtype (box actions are clipped to bounds).

        Raises:
            ValueError: Naming the wrong shape, dtype or value.
        """
        if self.kind == "discrete":
            if action.shape != (batch,):
                raise ValueError(f"discrete action batch must have shape [{batch}], got {list(action.shape)}")
            if action.dtype.kind not in "iu":
                raise ValueError(f"discrete actions must be integers, got {action.dtype}")
            if action.size and (action.min() < 0 or action.max() >= self.n):
                raise ValueError(f"discrete actions must be in [0, {self.n}), got {action.min()}..{action.max()}")
            return action.astype(np.int64, copy=False)
        if action.shape != (batch, *self.shape):
            raise ValueError(f"box action batch must have shape {[batch, *self.shape]}, got {list(action.shape)}")
        if action.dtype.kind != "f":
            raise ValueError(f"box actions must be floats, got {action.dtype}")
        if not np.all(np.isfinite(action)):
            raise ValueError("box actions contain NaN or infinity")
        out = action.astype(np.float32, copy=False)
        if self.low:
            lo = np.asarray(self.low, np.float32).reshape(self.shape)
            hi = np.asarray(self.high, np.float32).reshape(self.shape)
            out = np.clip(out, lo, hi)
        return out
