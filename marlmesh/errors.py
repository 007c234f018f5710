"""Errors shared by the launcher modules."""

from __future__ import annotations


class MeshError(RuntimeError):
    """A process of the mesh failed to start or died (or could not be given its ports)."""
