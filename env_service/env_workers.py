"""The env service's B env copies stepped by ``env.workers`` worker processes (contiguous blocks).

Stepping the copies is pure Python per copy (mpe2) and holds one core; while the env steps, the agents wait
for their observations, so a second core is idle. With ``env.workers = W > 1`` the service splits copies
``[0, B)`` into W contiguous blocks (sizes differ by at most one), each hosted by an
:class:`~env_service.copies.EnvCopies` in its own process (``spawn``: no fork of the gRPC threads). Per step
the service sends each worker its rows of the joint action over a pipe and gathers the blocks' arrays.
Copy ``b`` is seeded ``seed + b`` whatever W is, and each copy keeps its own RNG, so the observations,
rewards and episodes are the same for every W (tested).

A worker that dies or fails makes :meth:`EnvWorkers.step` raise :class:`EnvWorkerError` with the worker's
error; the env service then stops (its supervisor restarts it).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import traceback
from multiprocessing.connection import Connection

import numpy as np

from env_service.copies import CopyArrays, EnvCopies
from marlmesh.config import EnvConfig

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""Longest wait for a worker to build and reset its copies (imports included)."""
STEP_TIMEOUT_S = 60.0
"""Longest wait for a worker to step its copies once."""


class EnvWorkerError(RuntimeError):
    """An env worker process failed, died or did not answer in time."""


def blocks(num_envs: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges splitting ``num_envs`` copies over ``workers`` (sizes differ by <= 1).

    Raises:
        ValueError: If ``workers`` is not in ``1..num_envs``.
    """
    if not 1 <= workers <= num_envs:
        raise ValueError(f"env.workers must be in 1..env.num_envs ({num_envs}), got {workers}")
    base, extra = divmod(num_envs, workers)
    out, lo = [], 0
    for w in range(workers):
        hi = lo + base + (1 if w < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _serve(conn: Connection, config_json: str, seed: int, lo: int, hi: int) -> None:
    """Worker process: host copies ``[lo, hi)`` and answer ``("step", actions)`` / ``("close",)``."""
    try:
        copies = EnvCopies(EnvConfig.model_validate_json(config_json), seed, lo, hi)
        conn.send(("ok", copies.reset()))
    except BaseException:  # report anything (import errors too) to the service instead of dying silently
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            try:
                conn.send(("ok", copies.step(msg[1])))
            except Exception:
                conn.send(("error", traceback.format_exc()))
                break
    except (EOFError, KeyboardInterrupt):  # the service went away or the process group got SIGINT
        pass
    finally:
        copies.close()


class EnvWorkers:
    """W worker processes stepping the B copies in blocks; the same interface as one :class:`EnvCopies`.

    Args:
        config: The ``env`` section (``num_envs`` copies, ``workers`` processes).
        seed: Copy ``b`` is first reset with ``seed + b``.
        num_envs: B (defaults to ``config.num_envs``).

    Raises:
        ValueError: If ``config.workers`` is not in ``1..B``.
        EnvWorkerError: If a worker cannot build its copies.
    """

    def __init__(self, config: EnvConfig, seed: int, num_envs: int | None = None) -> None:
        self.num_envs = int(num_envs or config.num_envs)
        self.ranges = blocks(self.num_envs, config.workers)
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[mp.process.BaseProcess] = []
        payload = config.model_dump_json()
        for w, (lo, hi) in enumerate(self.ranges):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, payload, seed, lo, hi), name=f"env-worker-{w}", daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            self._first = self._gather(START_TIMEOUT_S)
        except EnvWorkerError:
            self.close()
            raise
        log.info("env copies stepped by %d worker processes: blocks %s", len(self.ranges), self.ranges)

    def reset(self) -> CopyArrays:
        """The copies' first observations (reset at start)."""
        return self._first

    def step(self, actions: list[np.ndarray]) -> CopyArrays:
        """Send each worker its rows of ``actions`` (per agent ``[B, ...]``) and gather the stepped arrays.

        Raises:
            EnvWorkerError: If a worker failed, died or timed out.
        """
        for w, (conn, (lo, hi)) in enumerate(zip(self._conns, self.ranges, strict=True)):
            try:
                conn.send(("step", [a[lo:hi] for a in actions]))
            except OSError:  # BrokenPipeError: the worker is gone
                self._procs[w].join(1.0)
                raise EnvWorkerError(f"{self._where(w)} died (exit code {self._procs[w].exitcode})") from None
        return self._gather(STEP_TIMEOUT_S)

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for conn in self._conns:
            try:
                conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
        for conn in self._conns:
            conn.close()

    def _gather(self, timeout_s: float) -> CopyArrays:
        parts = []
        for w, (conn, proc) in enumerate(zip(self._conns, self._procs, strict=True)):
            where = self._where(w)
            try:
                if not conn.poll(timeout_s):
                    raise EnvWorkerError(f"{where} did not answer within {timeout_s:g}s")
                status, value = conn.recv()
            except (EOFError, OSError):
                raise EnvWorkerError(f"{where} died (exit code {proc.exitcode})") from None
            if status != "ok":
                raise EnvWorkerError(f"{where} failed:\n{value}")
            parts.append(value)
        return _concat(parts)

    def _where(self, w: int) -> str:
        lo, hi = self.ranges[w]
        return f"env worker {self._procs[w].name} (copies [{lo}, {hi}), pid {self._procs[w].pid})"


def _concat(parts: list[CopyArrays]) -> CopyArrays:
    """One :class:`CopyArrays` of the blocks in order (copy axis: 0 for per-agent lists, 1 for ``[N, b]``)."""
    first = parts[0]
    return CopyArrays(
        obs=[np.concatenate([p.obs[a] for p in parts]) for a in range(len(first.obs))],
        final=[np.concatenate([p.final[a] for p in parts]) for a in range(len(first.final))],
        reward=np.concatenate([p.reward for p in parts], axis=1),
        terminated=np.concatenate([p.terminated for p in parts], axis=1),
        truncated=np.concatenate([p.truncated for p in parts], axis=1),
        cost=np.concatenate([p.cost for p in parts], axis=1),
        positions=None if first.positions is None else np.concatenate([p.positions for p in parts], axis=1),
        ended=np.concatenate([p.ended for p in parts]),
    )
