"""The mesh launcher's end-of-run check in lockstep (see :mod:`marlmesh.lockstep`)."""

from __future__ import annotations

import grpc

from marlmesh.lockstep import FINISHED
from marlmesh.v1 import control_pb2, control_pb2_grpc


class LockstepEnd:
    """The launcher's end-of-run check in lockstep: every agent says it reached the final tick.

    Args:
        open_channel: Opens a client channel to ``host:port`` (the mesh's, so mTLS applies).
        addresses: ``host:port`` of every agent's gRPC server (Control service).
        timeout_s: Deadline of each ``GetInfo``.
    """

    def __init__(self, open_channel, addresses: list[str], timeout_s: float) -> None:  # noqa: ANN001
        self._channels = [open_channel(a) for a in addresses]
        self._stubs = [control_pb2_grpc.ControlStub(c) for c in self._channels]
        self._timeout = timeout_s

    def reached(self) -> bool:
        """True when every agent reports ``finished`` (an unreachable agent counts as not finished)."""
        for stub in self._stubs:
            try:
                info = stub.GetInfo(control_pb2.InfoRequest(), timeout=self._timeout)
            except grpc.RpcError:
                return False
            if info.counters.get(FINISHED, 0.0) < 1.0:
                return False
        return True

    def close(self) -> None:
        """Close the channels."""
        for c in self._channels:
            c.close()
