"""Message-fate traces: one fixed-size record per message (one env copy's row on one directed link).

Every agent's bus appends the fates it decided as a sender (delivered at ``visible_at``, or dropped with a
cause, ``expired`` for a row the receiver could not read within the lifespan) to its own file; the
receive-side events (rows aged out or ``superseded`` before they were read) are counted, not traced. The
launcher merges the files into ``RUN_DIR/bus_trace.bin`` sorted by (tick, round, src, dst, env).

File format (little-endian): the 8 bytes ``MMTRACE1``, a 4-byte header length, a JSON header
(``{"dtype": [...], "records": n, "causes": {...}, ...}``), then ``n`` records of :data:`RECORD`:

=============  ======  ==============================================================================
``tick``       uint32  batched env step
``round``      uint8   communication round inside the step
``cause``      uint8   0 delivered, 1 out_of_range, 2 loss, 3 queue_full, 4 not_sent, 5 partition, 6 expired
``src``        uint16  sender
``dst``        uint16  receiver
``env``        uint16  env copy (row)
``bytes``      uint32  bytes of the message on the link (payload row + header)
``sent_at``    float64 bus-clock send time (seconds)
``visible_at`` float64 bus-clock time the receiver can see it; NaN when dropped
=============  ======  ==============================================================================

Under the sim clock the merged file is a pure function of the config and seed: the same run reproduces it
byte for byte. :func:`read_trace` loads a file as a numpy structured array.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from comm_bus.link_emulation import CAUSES, Fates

MAGIC = b"MMTRACE1"
RECORD = np.dtype(
    [
        ("tick", "<u4"),
        ("round", "u1"),
        ("cause", "u1"),
        ("src", "<u2"),
        ("dst", "<u2"),
        ("env", "<u2"),
        ("bytes", "<u4"),
        ("sent_at", "<f8"),
        ("visible_at", "<f8"),
    ]
)
SORT_KEYS = ("tick", "round", "src", "dst", "env")


class TraceWriter:
    """Appends one sender's fate records to a raw file (records only, no header), up to a cap.

    Args:
        path: Output file (truncated on open).
        max_records: Records written at most; later ones are only counted.
    """

    def __init__(self, path: Path, max_records: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.max_records = max_records
        self.written = 0
        self.seen = 0

    def record(self, tick: int, round: int, src: int, sent_at: float, fates: Fates) -> None:
        """Append the fates of one round's message to every receiver."""
        d, b = fates.cause.shape
        n = d * b
        self.seen += n
        room = self.max_records - self.written
        if room <= 0 or n == 0:
            return
        rec = np.empty(n, RECORD)
        rec["tick"] = tick
        rec["round"] = round
        rec["src"] = src
        rec["dst"] = np.repeat(np.asarray(fates.dsts, np.uint16), b)
        rec["env"] = np.tile(np.arange(b, dtype=np.uint16), d)
        rec["cause"] = fates.cause.reshape(-1)
        rec["bytes"] = fates.row_bytes
        rec["sent_at"] = sent_at
        rec["visible_at"] = fates.visible_at.reshape(-1)
        rec = rec[:room]
        self._fh.write(rec.tobytes())
        self.written += len(rec)

    @property
    def truncated(self) -> bool:
        """Whether records were left out because of the cap."""
        return self.seen > self.written

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()


def write_trace(path: Path, records: np.ndarray, meta: dict[str, object] | None = None) -> None:
    """Write records (sorted by :data:`SORT_KEYS`) as a trace file with its header."""
    order = np.lexsort(tuple(records[k] for k in reversed(SORT_KEYS)))
    records = records[order]
    header = json.dumps(
        {
            "dtype": [[name, records.dtype[name].str] for name in records.dtype.names],
            "records": int(len(records)),
            "causes": {str(k): v for k, v in CAUSES.items()},
            "sort": list(SORT_KEYS),
            **(meta or {}),
        },
        sort_keys=True,
    ).encode()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(header)) + header)
        fh.write(records.astype(RECORD, copy=False).tobytes())
    tmp.replace(path)


def merge_traces(parts: list[Path], out: Path, meta: dict[str, object] | None = None) -> int:
    """Merge per-agent raw record files into one sorted trace file; returns the number of records.

    Trailing partial records (a process killed mid-write) are ignored.
    """
    chunks = []
    for part in parts:
        raw = part.read_bytes()
        usable = len(raw) - len(raw) % RECORD.itemsize
        chunks.append(np.frombuffer(raw[:usable], RECORD))
    records = np.concatenate(chunks) if chunks else np.zeros(0, RECORD)
    write_trace(out, records, meta)
    return int(len(records))


def read_trace(path: str | Path) -> np.ndarray:
    """Load a trace file written by :func:`write_trace` as a structured array.

    Raises:
        ValueError: If the file is not a marlmesh trace.
    """
    raw = Path(path).read_bytes()
    if raw[:8] != MAGIC or len(raw) < 12:
        raise ValueError(f"{path}: not a marlmesh bus trace (bad magic)")
    (hlen,) = struct.unpack("<I", raw[8:12])
    header = json.loads(raw[12 : 12 + hlen])
    dtype = np.dtype([(name, code) for name, code in header["dtype"]])
    body = raw[12 + hlen :]
    if len(body) != header["records"] * dtype.itemsize:
        raise ValueError(f"{path}: {len(body)} bytes of records, header says {header['records']}")
    return np.frombuffer(body, dtype)
