"""Payload quantization on the wire: fp32 (as is), fp16, or int8 with a per-row scale.

Only floating-point tensors are quantized; other dtypes travel unchanged. A quantized int8 tensor ``x``
(rows ``[B, ...]``) travels as ``x`` (int8, ``round(x / scale)``) plus ``x:scale`` (float32 ``[B]``,
``max|x_row| / 127``). Error bounds after :func:`dequantize`:

- fp16: relative error <= 2**-11 for values of magnitude in [6.1e-5, 65504] (larger ones saturate to inf and
  are rejected by the receiver's finiteness check; keep messages bounded, e.g. tanh);
- int8: absolute error <= ``max|x_row| / 254`` per row.

Bytes cut: fp16 halves, int8 quarters the payload (plus 4 bytes of scale per row).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SCALE_SUFFIX = ":scale"
MODES = ("fp32", "fp16", "int8")


class QuantizationError(ValueError):
    """A received payload's quantized tensors do not fit together."""


def quantize(payload: Mapping[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """Encode float tensors of ``payload`` for the wire (rows along the first axis)."""
    if mode not in MODES:
        raise ValueError(f"quantization {mode!r}: expected one of {MODES}")
    out: dict[str, np.ndarray] = {}
    for name, arr in payload.items():
        a = np.asarray(arr)
        if mode == "fp32" or a.dtype.kind != "f":
            out[name] = a
        elif mode == "fp16":
            out[name] = a.astype(np.float16)
        else:
            rows = a.reshape(a.shape[0], -1).astype(np.float32) if a.ndim else a.reshape(1, 1).astype(np.float32)
            scale = np.abs(rows).max(axis=1) / 127.0 if rows.size else np.zeros(rows.shape[0], np.float32)
            safe = np.where(scale > 0, scale, 1.0)
            q = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
            out[name] = q.reshape(a.shape)
            out[name + SCALE_SUFFIX] = scale.astype(np.float32)
    return out


def dequantize(payload: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decode a received payload back to float32 (fp16 and int8+scale); other tensors pass through.

    Raises:
        QuantizationError: A scale without its tensor, or of the wrong shape.
    """
    out: dict[str, np.ndarray] = {}
    for name, arr in payload.items():
        if name.endswith(SCALE_SUFFIX):
            if name[: -len(SCALE_SUFFIX)] not in payload:
                raise QuantizationError(f"{name!r} without its tensor")
            continue
        scale = payload.get(name + SCALE_SUFFIX)
        if scale is not None:
            if arr.dtype != np.int8 or arr.ndim == 0 or scale.shape != (arr.shape[0],) or scale.dtype.kind != "f":
                raise QuantizationError(f"{name!r}: int8 rows with a [rows] float scale expected")
            out[name] = (arr.reshape(arr.shape[0], -1).astype(np.float32) * scale[:, None]).reshape(arr.shape)
        elif arr.dtype == np.float16:
            out[name] = arr.astype(np.float32)
        else:
            out[name] = arr
    return out


def row_bytes(payload: Mapping[str, np.ndarray], batch: int) -> int:
    """Bytes of one row of a (quantized) payload: what one env copy's message costs on a link."""
    total = 0
    for arr in payload.values():
        total += arr.nbytes // batch if batch and arr.ndim and arr.shape[0] == batch else arr.nbytes
    return int(total)
