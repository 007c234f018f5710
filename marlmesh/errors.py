"""Errors shared across the core and the launchers."""

from __future__ import annotations


class MeshError(RuntimeError):
    """A process of the mesh failed to start or died (or could not be given its ports)."""


class RefusedInput(ValueError):
    """An input refused before use (a rollout fragment, a weights version), with the cause it is counted under.

    Args:
        cause: The counter label of the refusal (e.g. ``non_finite``).
        message: What is wrong, naming the offending part.
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
