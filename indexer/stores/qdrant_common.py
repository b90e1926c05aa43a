"""What the two Qdrant stores (embedded engine and server) share: the storage contract.

A batch (:data:`~indexer.schema.Columns`) becomes points with

* id: ``schema.POINT_ID`` (uuid5 of the chunk id, see :func:`indexer.ids.point_id`);
* payload ``{"id", "hash", "metadata" (parsed JSON object), "title"}`` (the text lives in the text store);
* named vector ``dense``: float32 with Cosine for ``quantization=none``; uint8 codes with Euclid for
  ``int8``/``uint8``; for ``binary`` the packed bits are unpacked to a 0/1 uint8 vector of ``dim``
  values, so Euclid distance is sqrt(Hamming distance);
* named vector ``dense_rescore`` (uint8 codes, Euclid, cold and not HNSW-indexed) when ``spec.rescore``;
* named sparse vector ``sparse`` when ``spec.sparse`` (IDF modifier when ``spec.sparse_idf``).

Scores returned by the stores are "higher is better": Euclid distances are negated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import schema
from ..ids import point_id
from ..quantize import pack_binary
from ..schema import Columns, Hit, VectorSpec

DENSE = "dense"
DENSE_RESCORE = "dense_rescore"
SPARSE = "sparse"
QUANTIZATIONS = ("none", "int8", "uint8", "binary")


def check_spec(spec: VectorSpec) -> None:
    """Refuse a spec the stores can't lay out (caught on the driver, before any write)."""
    if spec.quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown dense quantization {spec.quantization!r}; expected one of {QUANTIZATIONS}")
    if spec.dim < 1:
        raise ValueError(f"dense dimension must be positive, got {spec.dim}")


def is_euclid(spec: VectorSpec) -> bool:
    """uint8 codes and 0/1 bits are compared with Euclid distance (smaller is closer)."""
    return spec.quantization != "none"


def packed_width(dim: int) -> int:
    return (dim + 7) // 8


def dense_matrix(spec: VectorSpec, dense: np.ndarray) -> np.ndarray:
    """The ``schema.DENSE`` column as the (N, dim) C-contiguous matrix the engine stores.

    float32 for ``none``, uint8 codes for ``int8``/``uint8``, 0/1 uint8 (unpacked big-endian bits,
    like :func:`numpy.packbits`) for ``binary``. Raises ``ValueError`` when the shape does not
    match the spec (a configuration error: no row of such a batch can be stored).
    """
    a = np.asarray(dense) if not (isinstance(dense, np.ndarray) and dense.dtype == object) else np.stack(dense)
    if a.ndim != 2:
        raise ValueError(f"dense column must be 2-D (rows, values), got shape {a.shape}")
    q = spec.quantization
    if q == "binary":
        want = packed_width(spec.dim)
        if a.shape[1] != want:
            raise ValueError(f"binary dense column must hold {want} packed bytes per row for dim={spec.dim}, "
                             f"got {a.shape[1]}")
        return np.ascontiguousarray(np.unpackbits(a.astype(np.uint8, copy=False), axis=1)[:, : spec.dim])
    if a.shape[1] != spec.dim:
        raise ValueError(f"dense column has {a.shape[1]} values per row, the collection expects dim={spec.dim} "
                         f"({q}); was the index built with another dense.dim?")
    if q == "none":
        return np.ascontiguousarray(a, dtype=np.float32)
    return np.ascontiguousarray(as_codes(a, f"{q} dense column"))


def rescore_matrix(spec: VectorSpec, batch: Columns) -> np.ndarray | None:
    """``schema.DENSE_RESCORE`` as an (N, dim) uint8 matrix, or None when the spec has no rescore vector."""
    if not spec.rescore:
        return None
    if schema.DENSE_RESCORE not in batch:
        raise ValueError(f"the collection keeps rescoring vectors (spec.rescore) but the batch has no "
                         f"{schema.DENSE_RESCORE!r} column")
    r = batch[schema.DENSE_RESCORE]
    a = np.stack(r) if isinstance(r, np.ndarray) and r.dtype == object else np.asarray(r)
    if a.ndim != 2 or a.shape[1] != spec.dim:
        raise ValueError(f"rescore column must be (rows, {spec.dim}) uint8 codes, got shape {a.shape}")
    return np.ascontiguousarray(as_codes(a, "rescore column"))


def as_codes(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 codes; integer arrays within 0..255 are accepted and cast, anything else is refused."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu" and (a.size == 0 or (a.min() >= 0 and a.max() <= 255)):
        return a.astype(np.uint8)
    raise ValueError(f"{what} must hold uint8 codes (0..255), got dtype {a.dtype}")


def query_vector(spec: VectorSpec, vector: np.ndarray) -> np.ndarray:
    """A query in storage form (float32, uint8 codes, or packed bits) as the 1-D vector the engine compares."""
    v = np.asarray(vector)
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    return dense_matrix(spec, v[None, :])[0]


def storage_form(spec: VectorSpec, name: str, values: Sequence[float]) -> np.ndarray:
    """A vector read back from the engine, in the form it was written.

    ``dense``: float32 (``none``; unit length, the engine normalises for Cosine), uint8 codes
    (``int8``/``uint8``), or packed bits (``binary``: the 0/1 vector packed again, so it can be
    passed back to ``search_dense``). ``dense_rescore``: uint8 codes.
    """
    a = np.asarray(values, dtype=np.float32)
    if name == DENSE and spec.quantization == "none":
        return a
    codes = np.rint(a).clip(0, 255).astype(np.uint8)
    if name == DENSE and spec.quantization == "binary":
        return pack_binary(codes[None, :])[0]
    return codes


def similarity(spec: VectorSpec, score: float) -> float:
    """Engine score of the dense vector as "higher is better" (negated Euclid distance)."""
    return -float(score) if is_euclid(spec) else float(score)


@dataclass
class Rows:
    """The storable rows of a batch, column by column (Python objects the clients convert cheaply)."""

    chunk_ids: list[str]
    point_ids: list[str]
    payloads: list[dict[str, Any]]
    dense: np.ndarray  # (N, dim) engine form, see dense_matrix
    rescore: np.ndarray | None  # (N, dim) uint8
    sparse: list[tuple[list[int], list[float]] | None] | None  # None: the spec has no sparse vector
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.point_ids)


def _str_list(col: np.ndarray | Sequence[Any]) -> list[Any]:
    return col.tolist() if isinstance(col, np.ndarray) else list(col)


def _parse_metadata(values: list[Any]) -> list[Any]:
    """Parse JSON objects; one ``json.loads`` for the whole column when every row is clean."""
    texts = [v if v else "{}" for v in values]
    if all(isinstance(t, str) for t in texts):
        try:
            out = json.loads("[" + ",".join(texts) + "]")
            if len(out) == len(texts) and all(isinstance(o, dict) for o in out):
                return out
        except ValueError:
            pass
    parsed: list[Any] = []
    for t in texts:
        try:
            o = json.loads(t)
        except (ValueError, TypeError) as e:
            parsed.append(ValueError(f"metadata is not valid JSON: {e}"))
            continue
        parsed.append(o if isinstance(o, dict) else ValueError(f"metadata must be a JSON object, got {type(o).__name__}"))
    return parsed


def prepare_rows(spec: VectorSpec, batch: Columns) -> Rows:
    """Validate a batch and turn it into :class:`Rows`.

    A malformed column (wrong dense shape, missing rescore vectors) raises ``ValueError``: no row of
    such a batch could be stored. A malformed row (metadata that is not a JSON object, sparse
    indices and values of different lengths) is left out and reported in ``Rows.rejects``.
    """
    ids = _str_list(batch[schema.ID])
    n = len(ids)
    dense = dense_matrix(spec, batch[schema.DENSE]) if n else np.zeros((0, spec.dim), np.float32)
    if dense.shape[0] != n:
        raise ValueError(f"dense column has {dense.shape[0]} rows for {n} ids")
    rescore = rescore_matrix(spec, batch) if n else None
    pids = _str_list(batch[schema.POINT_ID]) if schema.POINT_ID in batch else [point_id(i) for i in ids]
    hashes = _str_list(batch[schema.HASH])
    titles = _str_list(batch[schema.TITLE]) if schema.TITLE in batch else [""] * n
    metas = _parse_metadata(_str_list(batch[schema.METADATA])) if schema.METADATA in batch else [{}] * n

    sparse: list[tuple[list[int], list[float]] | None] | None = None
    bad: dict[int, str] = {}
    if spec.sparse:
        sparse = [None] * n
        if schema.SPARSE_INDICES in batch:
            for i, (idx, val) in enumerate(zip(batch[schema.SPARSE_INDICES], batch[schema.SPARSE_VALUES])):
                if idx is None or len(idx) == 0:
                    continue
                il = np.asarray(idx).tolist()
                vl = np.asarray(val, dtype=np.float32).tolist() if val is not None else []
                if len(il) != len(vl):
                    bad[i] = f"sparse vector has {len(il)} indices but {len(vl)} values"
                    continue
                sparse[i] = (il, vl)

    payloads = []
    for i in range(n):
        m = metas[i]
        if isinstance(m, Exception):
            bad.setdefault(i, str(m))
        payloads.append({"id": ids[i], "hash": hashes[i], "metadata": m, "title": titles[i] or ""})

    rows = Rows(ids, pids, payloads, dense, rescore, sparse)
    if bad:
        keep = [i for i in range(n) if i not in bad]
        rows = Rows([ids[i] for i in keep], [pids[i] for i in keep], [payloads[i] for i in keep],
                    dense[keep], rescore[keep] if rescore is not None else None,
                    [sparse[i] for i in keep] if sparse is not None else None,
                    [(ids[i], reason) for i, reason in sorted(bad.items())])
    return rows


def to_hits(spec: VectorSpec, points, dense: bool, with_vectors: bool) -> list[Hit]:
    """Scored points of either client as :class:`Hit` (dense scores higher-is-better; vectors in storage form)."""
    hits = []
    for p in points:
        payload = dict(p.payload or {})
        vecs: dict[str, np.ndarray] = {}
        if with_vectors and isinstance(p.vector, dict):
            for name, values in p.vector.items():
                if name in (DENSE, DENSE_RESCORE):
                    vecs[name] = storage_form(spec, name, values)
        score = similarity(spec, p.score) if dense else float(p.score)
        hits.append(Hit(payload.get("id", str(p.id)), score, payload, vecs))
    return hits


def export_columns(spec: VectorSpec, records, order: Sequence[str]) -> Columns:
    """Points read back with payload and vectors (either client) as the batch ``prepare_rows`` takes,
    in the order of ``order`` (chunk ids; those not stored are left out). Vectors come back in
    storage form, so upserting the batch writes the same points again."""
    by_id = {r.payload["id"]: r for r in records if r.payload}
    found = [by_id[i] for i in dict.fromkeys(str(i) for i in order) if i in by_id]
    n = len(found)
    width = packed_width(spec.dim) if spec.quantization == "binary" else spec.dim
    dtype = np.float32 if spec.quantization == "none" else np.uint8
    dense = np.zeros((n, width), dtype)
    for k, r in enumerate(found):
        dense[k] = storage_form(spec, DENSE, r.vector[DENSE])
    out: Columns = {
        schema.ID: np.array([r.payload["id"] for r in found], dtype=object),
        schema.POINT_ID: np.array([str(r.id) for r in found], dtype=object),
        schema.HASH: np.array([r.payload.get("hash") or "" for r in found], dtype=object),
        schema.TITLE: np.array([r.payload.get("title") or "" for r in found], dtype=object),
        schema.METADATA: np.array([json.dumps(r.payload.get("metadata") or {}, ensure_ascii=False, sort_keys=True)
                                   for r in found], dtype=object),
        schema.DENSE: dense,
    }
    if spec.rescore:
        out[schema.DENSE_RESCORE] = np.array([storage_form(spec, DENSE_RESCORE, r.vector[DENSE_RESCORE])
                                              for r in found], dtype=np.uint8).reshape(n, spec.dim)
    if spec.sparse:
        idx, val = [], []
        for r in found:
            sv = r.vector.get(SPARSE) if isinstance(r.vector, dict) else None
            idx.append(np.asarray(sv.indices if sv is not None else [], dtype=np.int32))
            val.append(np.asarray(sv.values if sv is not None else [], dtype=np.float32))
        out[schema.SPARSE_INDICES] = _object_array(idx)
        out[schema.SPARSE_VALUES] = _object_array(val)
    return out


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of per-row arrays (numpy would make a 2-D array of equal-length rows)."""
    out = np.empty(len(items), dtype=object)
    for k, a in enumerate(items):
        out[k] = a
    return out
