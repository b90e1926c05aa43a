"""Matryoshka truncation and scalar / binary quantization of dense vectors (pure numpy).

Storage forms, by :class:`indexer.config.Quantization`:

* ``none``: float32, unit length.
* ``uint8``: per-dimension range ``[lo_d, hi_d]`` (calibrated on a corpus sample) mapped to 0..255.
* ``int8``: per-dimension symmetric range ``[-a_d, a_d]`` mapped to -127..127, stored as uint8 codes
  (value + 128) because vector stores hold unsigned bytes.
* ``binary``: one bit per dimension (``x > 0``), packed big-endian with :func:`numpy.packbits`.

Queries are quantized with the same calibration (saved in the run manifest), and
:func:`asymmetric_scores` rescoring computes the float query's dot product with dequantized codes,
which is exact up to the codes' rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def truncate_normalize(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Keep the first ``dim`` dimensions (Matryoshka) and re-normalise rows to unit length."""
    v = np.asarray(vectors, dtype=np.float32)
    if dim is not None:
        if dim > v.shape[1]:
            raise ValueError(f"dense.dim={dim} is larger than the model's dimension {v.shape[1]}")
        v = v[:, :dim]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)


@dataclass
class Calibration:
    """Per-dimension affine map ``x = lo + code * scale`` (int8 codes are shifted by +128)."""

    kind: str  # int8 | uint8
    lo: list[float]
    scale: list[float]
    sample_size: int
    quantile: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        return cls(**d)

    @property
    def lo_arr(self) -> np.ndarray:
        return np.asarray(self.lo, dtype=np.float32)

    @property
    def scale_arr(self) -> np.ndarray:
        return np.asarray(self.scale, dtype=np.float32)


def calibrate(sample: np.ndarray, kind: str, quantile: float = 0.999) -> Calibration:
    """Per-dimension ranges from a sample of (already truncated, normalised) vectors.

    ``quantile`` clips outliers: 1.0 uses the exact min/max. For ``int8`` the range is symmetric,
    ``[-a, a]`` with ``a`` the quantile of ``|x|``; for ``uint8`` it is ``[q(1-quantile), q(quantile)]``.
    """
    x = np.asarray(sample, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("calibration needs a non-empty (n, dim) sample")
    if kind == "int8":
        a = np.quantile(np.abs(x), quantile, axis=0).astype(np.float32)
        a[a <= 0] = 1e-6
        lo = -a * (128.0 / 127.0)  # code 0 <-> -128/127*a so that code 128 <-> 0.0 exactly
        scale = a / 127.0
    elif kind == "uint8":
        lo = np.quantile(x, 1.0 - quantile, axis=0).astype(np.float32)
        hi = np.quantile(x, quantile, axis=0).astype(np.float32)
        span = hi - lo
        span[span <= 0] = 1e-6
        scale = span / 255.0
    else:
        raise ValueError(f"no calibration for quantization {kind!r}")
    return Calibration(kind=kind, lo=[float(v) for v in lo], scale=[float(v) for v in scale],
                       sample_size=int(len(x)), quantile=float(quantile))


def quantize_scalar(vectors: np.ndarray, cal: Calibration) -> np.ndarray:
    """Float vectors -> uint8 codes with the calibration's per-dimension ranges (clipped)."""
    codes = np.rint((np.asarray(vectors, dtype=np.float32) - cal.lo_arr) / cal.scale_arr)
    return np.clip(codes, 0, 255).astype(np.uint8)


def dequantize_scalar(codes: np.ndarray, cal: Calibration) -> np.ndarray:
    """uint8 codes -> approximate float vectors."""
    return cal.lo_arr + np.asarray(codes, dtype=np.float32) * cal.scale_arr


def pack_binary(vectors: np.ndarray) -> np.ndarray:
    """Sign bits (``x > 0``) packed 8 per byte, big-endian: (n, dim) -> (n, ceil(dim / 8)) uint8."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def unpack_binary(packed: np.ndarray, dim: int) -> np.ndarray:
    """Packed bits -> (n, dim) 0/1 uint8."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1)[:, :dim]


def asymmetric_scores(query: np.ndarray, codes: np.ndarray, cal: Calibration) -> np.ndarray:
    """Dot products of one float query with dequantized codes, for rescoring candidates."""
    return dequantize_scalar(codes, cal) @ np.asarray(query, dtype=np.float32)


def bytes_per_vector(dim: int, quantization: str, rescore: bool = False) -> int:
    """Stored dense bytes per vector (without index links)."""
    if quantization == "none":
        return 4 * dim
    if quantization in ("int8", "uint8"):
        return dim
    if quantization == "binary":
        return (dim + 7) // 8 + (dim if rescore else 0)
    raise ValueError(f"unknown quantization {quantization!r}")
