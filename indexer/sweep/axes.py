"""Sweep axes: the ``--sweep axis=v1,v2`` flags parsed and typed, and the grids of dense storage
settings and fusion settings they span."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import FusionKind
from ..quantize import bytes_per_vector
from ..search import Settings

DENSE_QUANTIZATIONS = ("none", "int8", "uint8", "binary", "binary+int8", "binary+float")
"""Storage forms a sweep can derive: the index's own, plus binary rescored with int8 codes or floats."""

AXES: dict[str, str] = {
    "dims": "Matryoshka dimensions (<= the model's), e.g. dims=384,256,128",
    "quantization": "dense storage: " + ", ".join(DENSE_QUANTIZATIONS),
    "oversample": "candidate multiplier before rescoring (int8, uint8, binary+int8, binary+float)",
    "fusion": "hybrid fusion: " + ", ".join(f.value for f in FusionKind),
    "rrf_k": "RRF constant",
    "hybrid": "modes fused by hybrid, '+'-joined, e.g. hybrid=dense+sparse+bm25,dense+bm25",
    "w_dense": "weight of dense in weighted_rrf, dbsf and minmax",
    "w_sparse": "weight of sparse",
    "w_bm25": "weight of bm25",
    "candidates": "hits taken from each mode before fusion",
}


class SweepError(ValueError):
    """A sweep flag is malformed; the message names the axis and what is allowed."""


def parse_sweep(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["dims=384,256", "fusion=rrf,dbsf"]`` -> ``{"dims": [384, 256], "fusion": [rrf, dbsf]}``.

    Values are typed and checked per axis; an axis given twice keeps the union in order.
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise SweepError(f"--sweep {item!r} must look like axis=v1,v2 (axes: {', '.join(AXES)})")
        key, raw = (x.strip() for x in item.split("=", 1))
        if key not in AXES:
            raise SweepError(f"--sweep {item!r}: unknown axis {key!r}; allowed: {', '.join(AXES)}")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise SweepError(f"--sweep {item!r}: no values")
        try:
            parsed = [_parse_value(key, v) for v in values]
        except ValueError as e:
            raise SweepError(f"--sweep {item!r}: {e}") from None
        acc = out.setdefault(key, [])
        acc.extend(v for v in parsed if v not in acc)
    return out


def _parse_value(axis: str, v: str) -> Any:
    if axis in ("dims", "rrf_k", "candidates"):
        n = int(v)
        if n < 1:
            raise ValueError(f"{axis} must be positive, got {n}")
        return n
    if axis in ("oversample", "w_dense", "w_sparse", "w_bm25"):
        x = float(v)
        if x < 0 or (axis == "oversample" and x < 1):
            raise ValueError(f"{axis} out of range: {x}")
        return x
    if axis == "quantization":
        if v not in DENSE_QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(DENSE_QUANTIZATIONS)}, got {v!r}")
        return v
    if axis == "fusion":
        try:
            return FusionKind(v)
        except ValueError:
            raise ValueError(f"fusion must be one of {', '.join(f.value for f in FusionKind)}, got {v!r}") from None
    if axis == "hybrid":
        modes = tuple(m.strip() for m in v.split("+") if m.strip())
        bad = [m for m in modes if m not in ("dense", "sparse", "bm25")]
        if bad or not modes:
            raise ValueError(f"hybrid takes '+'-joined modes from dense, sparse, bm25, got {v!r}")
        return modes
    raise ValueError(f"unknown axis {axis}")


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DenseSetting:
    """One storage form of the dense vectors."""

    dim: int
    quantization: str
    oversample: float | None = None  # None: no rescoring stage

    @property
    def label(self) -> str:
        base = f"{self.dim}/{self.quantization}"
        return base + (f" x{self.oversample:g}" if self.oversample else "")

    @property
    def first_stage(self) -> str:
        return "binary" if self.quantization.startswith("binary") else self.quantization

    @property
    def rescore_with(self) -> str | None:
        if self.quantization in ("int8", "uint8"):
            return self.quantization
        if "+" in self.quantization:
            return self.quantization.split("+", 1)[1]
        return None

    def bytes_stored(self) -> int:
        """Bytes per vector on disk: first-stage vector plus any rescoring vector."""
        b = bytes_per_vector(self.dim, self.first_stage)
        extra = {None: 0, "int8": self.dim, "uint8": 0, "float": 4 * self.dim}[self.rescore_with]
        return b + (extra if self.first_stage == "binary" else 0)

    def bytes_ram(self) -> int:
        """Bytes per vector searched in memory (rescoring vectors are read for candidates only)."""
        return bytes_per_vector(self.dim, self.first_stage)


def dense_settings(axes: dict[str, list[Any]], default_dim: int, default_quantization: str,
                   default_oversample: float, full_dim: int) -> list[DenseSetting]:
    dims = axes.get("dims", [default_dim])
    bad = [d for d in dims if d > full_dim]
    if bad:
        raise SweepError(f"dims {bad} exceed the model's dimension {full_dim}")
    out: list[DenseSetting] = []
    for dim, qz, over in itertools.product(dims, axes.get("quantization", [default_quantization]),
                                           axes.get("oversample", [default_oversample])):
        s = DenseSetting(dim, qz, over if qz not in ("none", "binary") else None)
        if s not in out:
            out.append(s)
    return out


def fusion_settings(axes: dict[str, list[Any]], base: Settings) -> list[Settings]:
    """The grid of fusion settings; weight axes only matter to weighted fusions, so plain RRF
    rows are not repeated per weight."""
    out: list[Settings] = []
    seen: set[str] = set()
    for fusion, k, modes, wd, ws, wb, cand in itertools.product(
            axes.get("fusion", [base.fusion]), axes.get("rrf_k", [base.rrf_k]), axes.get("hybrid", [base.modes]),
            axes.get("w_dense", [base.weights.get("dense", 1.0)]), axes.get("w_sparse", [base.weights.get("sparse", 1.0)]),
            axes.get("w_bm25", [base.weights.get("bm25", 1.0)]), axes.get("candidates", [base.candidates])):
        weights = {"dense": wd, "sparse": ws, "bm25": wb}
        if fusion == FusionKind.rrf:
            weights = {m: 1.0 for m in weights}
        if fusion in (FusionKind.dbsf, FusionKind.minmax):
            k = base.rrf_k
        s = Settings(fusion, k, weights, tuple(modes), cand, base.min_coverage)
        key = json.dumps({**s.describe(), "weights": {m: s.weights[m] for m in s.modes}}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def fusion_key(r: dict[str, Any]) -> str:
    """Identity of a result row's mode and fusion setting (rows differing only in dense storage share it)."""
    return json.dumps({c: r.get(c) for c in ("mode", "fusion", "rrf_k", "weights", "fused", "candidates")},
                      sort_keys=True, default=str)
