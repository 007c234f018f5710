"""Vectorized MPE environments: B copies of a task stepped in one numpy call (no PettingZoo in the hot path).

- :mod:`~marlmesh.envs.vector.physics`: the batched MPE world (mpe2's physics).
- :mod:`~marlmesh.envs.vector.base`: the :class:`~marlmesh.envs.vector.base.VectorEnv` interface every
  vectorized task implements.
"""
