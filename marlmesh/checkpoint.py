"""Atomic, checksummed per-agent checkpoints.

File ``ckpt-{version:010d}.pt`` = ``MAGIC`` + sha256 hex digest + newline + ``torch.save`` payload. Written
to a temporary file in the same folder, fsynced, renamed, and the folder fsynced: a reader sees a whole
checkpoint or none. A checkpoint whose checksum fails is reported and skipped in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
MAGIC = b"MMCKPT1\n"
_NAME = re.compile(r"^ckpt-(\d{10})\.pt$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file is truncated, tampered with or not a marlmesh checkpoint."""


def checkpoint_path(directory: Path, version: int) -> Path:
    """Path of the checkpoint of ``version``."""
    return directory / f"ckpt-{version:010d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(version, path)`` of every checkpoint in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(directory: Path, version: int, payload: dict[str, Any], keep: int) -> Path:
    """Write a checkpoint atomically and delete all but the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    final = checkpoint_path(directory, version)
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint.

    Raises:
        CorruptCheckpoint: If the header or checksum does not match.
    """
    data = path.read_bytes()
    head = len(MAGIC) + 64 + 1
    if not data.startswith(MAGIC) or len(data) < head:
        raise CorruptCheckpoint(f"{path}: not a marlmesh checkpoint (bad header)")
    digest, body = data[len(MAGIC) : head - 1].decode(errors="replace"), data[head:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path}: checksum mismatch (truncated or modified)")
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)


def load_latest(
    directory: Path, on_corrupt: Callable[[Path, str], None] | None = None
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that verifies, or None; corrupt ones are logged and skipped.

    Args:
        directory: The checkpoint folder.
        on_corrupt: Called with the path and the reason of every checkpoint skipped on the way.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(path), path
        except (CorruptCheckpoint, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("skipping checkpoint: %s", exc)
            if on_corrupt is not None:
                on_corrupt(path, str(exc))
    return None


def quarantine(path: Path) -> Path | None:
    """Rename a corrupt checkpoint to ``<name>.corrupt`` (kept for inspection, no longer listed)."""
    target = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, target)
    except OSError as exc:
        log.warning("cannot move corrupt checkpoint %s aside: %s", path, exc)
        return None
    return target


def remove_partial_writes(directory: Path) -> list[Path]:
    """Delete temporary files left by a writer that died mid-write (``.ckpt-*.tmp-<pid>``); return them.

    Call only when no other process writes into ``directory`` (a learner at start).
    """
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(".ckpt-") and ".tmp-" in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
