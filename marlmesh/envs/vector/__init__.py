"""Vectorized MPE environments: B copies of a task stepped in one numpy call (no PettingZoo in the hot path).

- :mod:`~marlmesh.envs.vector.physics`: the batched MPE world (mpe2's physics).
- :mod:`~marlmesh.envs.vector.base`: the :class:`~marlmesh.envs.vector.base.VectorEnv` interface every
  vectorized task implements, with the env service's autoreset semantics.
- :mod:`~marlmesh.envs.vector.mpe_env`: what every vectorized MPE task shares (spaces, actions, horizon,
  collisions, positions).
- :mod:`~marlmesh.envs.vector.spread`: simple_spread (``marlmesh.simple_spread``).
- :mod:`~marlmesh.envs.vector.time_obs`: ``env.time_feature`` for a vectorized env.
- :mod:`~marlmesh.envs.vector.parallel`: the one-copy PettingZoo view :func:`marlmesh.envs.make_env` returns.
"""
