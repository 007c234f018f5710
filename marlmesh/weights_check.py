"""Checks on a weights version before an agent acts with it (torch-free: the edge install imports it too).

Weights travel as :func:`learner_service.node.policy_params` arrays: every key of the policy's state dict, as
float32. A received version is refused unless it has exactly the policy's keys and shapes, float32 values and
no NaN/inf; the agent then keeps acting with its current version.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from marlmesh.errors import RefusedInput

WEIGHTS_REJECT_CAUSES = ("undecodable", "wrong_agent", "bad_keys", "bad_shape", "bad_dtype", "non_finite")
"""Why an agent refuses a weights version: ``undecodable`` (the tensors do not decode), ``wrong_agent`` (the
message is for another agent), ``bad_keys`` (missing or unexpected parameter names), ``bad_shape`` / ``bad_dtype``
(a parameter differs from the agent's policy; weights are float32), ``non_finite`` (NaN or inf)."""


class WeightsError(RefusedInput):
    """A weights version that must not be loaded (``cause``: one of :data:`WEIGHTS_REJECT_CAUSES`)."""


def check_weights(params: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse weights that do not fit a policy whose parameters have ``shapes`` (name -> shape), or are not finite.

    Raises:
        WeightsError: Naming the first offending parameter and the cause.
    """
    missing = sorted(set(shapes) - set(params))
    extra = sorted(set(params) - set(shapes))
    if missing or extra:
        raise WeightsError("bad_keys", f"weights: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, want in shapes.items():
        arr = np.asarray(params[name])
        if tuple(arr.shape) != tuple(want):
            raise WeightsError("bad_shape", f"weights {name!r}: shape {list(arr.shape)}, the policy has {list(want)}")
        if arr.dtype != np.float32:
            raise WeightsError("bad_dtype", f"weights {name!r}: dtype {arr.dtype}, expected float32")
        if not np.isfinite(arr).all():
            raise WeightsError("non_finite", f"weights {name!r}: non-finite values")
