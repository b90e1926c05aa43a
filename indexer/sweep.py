"""Evaluation sweeps over dense storage settings and fusion settings from one encode pass.

``indexer eval CONFIG --queries Q --qrels R --sweep dims=384,256 --sweep quantization=none,int8 --out DIR``
answers "what would nDCG be with 256-d int8 vectors, or with another fusion?" without re-indexing:

1. Full-dimension float document vectors are fetched once: read back from the live index when it
   stores float vectors at the model's dimension, otherwise the corpus is encoded once (and cached
   under ``index.dir/cache``).
2. Each dense setting (dimension x quantization x oversample) is derived in numpy exactly as the
   pipeline would store it (:mod:`indexer.quantize`: Matryoshka truncation, re-normalisation,
   calibration on a corpus sample, codes) and searched exactly in memory the way the vector store
   does: cosine for float; Euclid on codes then oversampled rescoring with the float query for
   int8/uint8; Hamming on bits for binary, optionally oversampled and rescored with int8 codes or
   float vectors (``binary+int8``, ``binary+float``).
3. BM25 and sparse hit lists come from the live index once per query; each fusion setting
   (fusion x rrf_k x fused modes x weights x candidates) fuses them with each dense setting.

Results: one row per (mode, setting) with nDCG@k, recall@100, MRR@k, bytes per vector (stored,
and searched in RAM) and per-query latency p50/p95, written as ``sweep.json``, ``sweep.md`` and
``sweep.png`` (quality against bytes per vector).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .config import FusionKind, Quantization
from .eval import Qrels, evaluate, percentile
from .quantize import Calibration, asymmetric_scores, bytes_per_vector, calibrate, quantize_scalar, truncate_normalize
from .search import Searcher, Settings, fuse
from .sinks.base import Hit

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------------
# Exact in-memory dense search, mirroring the vector store
# ------------------------------------------------------------------------------------------

class MemoryDenseIndex:
    """Document vectors in one storage form, searched exactly like the vector store searches them.

    ``docs`` are the full-dimension float vectors. Calibration (int8/uint8 ranges) comes from the
    first ``calibration_sample`` vectors after truncation, as in the pipeline, and the same
    calibration quantizes the queries.
    """

    def __init__(self, docs: np.ndarray, setting: DenseSetting, calibration_sample: int = 10_000,
                 calibration_quantile: float = 0.999):
        self.s = setting
        x = truncate_normalize(docs, setting.dim)
        self.calibration: Calibration | None = None
        self.float: np.ndarray | None = None
        self.codes: np.ndarray | None = None
        self.bits: np.ndarray | None = None
        kind = setting.first_stage if setting.first_stage in ("int8", "uint8") else setting.rescore_with
        if kind in ("int8", "uint8"):
            self.calibration = calibrate(x[:calibration_sample], kind, calibration_quantile)
            codes = quantize_scalar(x, self.calibration)
            self.codes = codes
            self._codes_f = codes.astype(np.float32)
            self._codes_sq = (self._codes_f ** 2).sum(axis=1)
        if setting.first_stage == "none" or setting.rescore_with == "float":
            self.float = x
        if setting.first_stage == "binary":
            self.bits = np.packbits(x > 0, axis=1)

    def search(self, query: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and scores (higher is better) of the best ``depth`` documents."""
        s = self.s
        q = truncate_normalize(query[None, :], s.dim)[0]
        n = len(self.float if self.float is not None else self.codes if self.codes is not None else self.bits)
        if s.first_stage == "none":
            return _top(self.float @ q, depth)
        over = min(n, max(depth, int(depth * (s.oversample or 1.0))) if s.rescore_with else depth)
        if s.first_stage in ("int8", "uint8"):
            qc = quantize_scalar(q[None, :], self.calibration)[0].astype(np.float32)
            first = -(self._codes_sq - 2.0 * (self._codes_f @ qc))  # -(squared Euclid) + const
        else:
            qb = np.packbits(q[None, :] > 0, axis=1)[0]
            first = -np.sqrt(np.bitwise_count(np.bitwise_xor(self.bits, qb)).sum(axis=1).astype(np.float32))
        idx, scores = _top(first, over)
        if s.rescore_with is None:
            return idx[:depth], scores[:depth]
        if s.rescore_with == "float":
            rescored = self.float[idx] @ q
        else:
            rescored = asymmetric_scores(q, self.codes[idx], self.calibration)
        order = np.argsort(-rescored, kind="stable")[:depth]
        return idx[order], rescored[order]


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


# ------------------------------------------------------------------------------------------
# Document vectors: from the index, or one encode pass
# ------------------------------------------------------------------------------------------

def corpus_rows(searcher: Searcher) -> tuple[list[str], list[str]]:
    """(ids, texts as encoded) of the corpus's valid rows, read from ``corpus.path``."""
    from .encoders.tokenize import document_texts
    from .sources.parquet import plan, read_fragment
    from .validate import row_reason

    cfg = searcher.cfg
    ids: list[str] = []
    texts: list[str] = []
    for frag in plan(cfg.corpus).fragments:
        b = read_fragment(frag, cfg.corpus)
        ok = [i for i in range(len(b["id"]))
              if not b["_reject_reason"][i] and not row_reason(b["id"][i], b["text"][i], bool(b["_duplicate"][i]))]
        sub = {k: v[ok] for k, v in b.items()}
        ids.extend(str(x) for x in sub["id"])
        texts.extend(document_texts(sub, cfg.dense.document_prefix))
    return ids, texts


def document_vectors(searcher: Searcher, encode_batch_tokens: int = 16384,
                     progress: Callable[[str], None] | None = None) -> tuple[list[str], np.ndarray, str]:
    """Full-dimension float vectors of every indexed chunk: (ids, matrix, source).

    ``source`` is ``index`` when they were read back from a float index at the model's dimension,
    ``cache`` or ``encoded`` otherwise (the encode is cached under ``index.dir/cache/``).
    """
    full_dim = int(searcher.version["model"]["dim"])
    ids, texts = corpus_rows(searcher)
    if searcher.quantization == "none" and searcher.dim == full_dim:
        try:
            got: dict[str, np.ndarray] = {}
            for lo in range(0, len(ids), 1000):
                got.update(searcher.vectors.fetch_vectors(searcher.collection, ids[lo:lo + 1000], "dense"))
            have = [i for i in ids if i in got]
            if have:
                if len(have) < len(ids):
                    log.warning("%d corpus rows are not in the index; the sweep uses the %d indexed ones",
                                len(ids) - len(have), len(have))
                return have, np.stack([got[i] for i in have]).astype(np.float32), "index"
        except NotImplementedError:
            pass
    cache = None
    if not searcher.cfg.index.dir.startswith("s3://"):
        cache = Path(searcher.cfg.index.dir) / "cache" / f"{searcher.collection}-dense-{full_dim}.npz"
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            if list(z["ids"]) == ids:
                return ids, z["vectors"], "cache"
    if progress:
        progress(f"encoding {len(ids)} documents at {full_dim} dimensions (once; cached)")
    import torch

    from .encoders.tokenize import tokenize_texts

    model = searcher.dense_model
    tok_ids, _, _, _ = tokenize_texts(texts, model.model_ref, model.info.max_seq_length)
    out = []
    for lo in range(0, len(tok_ids), 2048):
        emb = model.embed_ids(tok_ids[lo:lo + 2048], encode_batch_tokens)
        out.append(torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy())
    vecs = np.concatenate(out) if out else np.zeros((0, full_dim), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.asarray(ids), vectors=vecs)
    return ids, vecs, "encoded"


# ------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------

def _one_blas_thread():
    """Single-threaded BLAS while timing one query at a time: a query's matrix-vector product is
    memory-bound, and BLAS threads fighting over a few shared cores only add noise (15 ms instead
    of 0.3 ms for 5k x 384 on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: timings are noisier without it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _run(lists: dict[str, list[Hit]]) -> dict[str, dict[str, float]]:
    return {q: {h.id: float(len(hs) - i) for i, h in enumerate(hs)} for q, hs in lists.items()}


def _lat(values: list[float]) -> dict[str, float]:
    return {"latency_ms_p50": round(1000 * percentile(values, 50), 3),
            "latency_ms_p95": round(1000 * percentile(values, 95), 3)}


def run_sweep(searcher: Searcher, queries: dict[str, str], qrels: Qrels, axes: dict[str, list[Any]],
              k: int = 10, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every dense setting alone and fused with the index's BM25/sparse lists."""
    say = progress or (lambda msg: log.info(msg))
    cfg = searcher.cfg
    full_dim = int(searcher.version["model"]["dim"])
    dsets = dense_settings(axes, cfg.dense.dim or full_dim, _index_quantization(searcher), cfg.dense.oversample,
                           full_dim)
    fsets = fusion_settings(axes, searcher.settings)
    depth = max([100, k] + [s.candidates for s in fsets])
    qids = [q for q in qrels if q in queries]
    qrels = {q: qrels[q] for q in qids}

    t0 = time.perf_counter()
    doc_ids, docs, source = document_vectors(searcher, progress=say)
    say(f"{len(doc_ids)} document vectors from {source} in {time.perf_counter() - t0:.1f}s")

    lexical = [m for m in ("sparse", "bm25") if m != "sparse" or searcher.version["sparse"]["kind"] != "none"]
    qvecs: dict[str, np.ndarray] = {}
    coverage: dict[str, float] = {}
    hits: dict[str, dict[str, list[Hit]]] = {m: {} for m in lexical}
    lat: dict[str, dict[str, float]] = {m: {} for m in lexical}
    encode_s = []
    for lo in range(0, len(qids), 64):
        chunk = qids[lo:lo + 64]
        t = time.perf_counter()
        enc = searcher.encode([queries[q] for q in chunk], dense_dim=full_dim)
        encode_s.append((time.perf_counter() - t) / len(chunk))
        for qid, eq in zip(chunk, enc):
            qvecs[qid] = eq.dense
            coverage[qid] = eq.coverage
            for m in lexical:
                t = time.perf_counter()
                hits[m][qid] = searcher.mode_hits(eq, depth, [m]).get(m, [])
                lat[m][qid] = time.perf_counter() - t
    say(f"{len(qids)} queries encoded; {', '.join(lexical)} lists from the index")

    rows: list[dict[str, Any]] = []
    for m in lexical:
        rows.append({"mode": m, **evaluate(_run(hits[m]), qrels, k), **_lat(list(lat[m].values()))})

    for ds in dsets:
        t = time.perf_counter()
        mem = MemoryDenseIndex(docs, ds, cfg.dense.calibration_sample, cfg.dense.calibration_quantile)
        build_s = time.perf_counter() - t
        dense_hits: dict[str, list[Hit]] = {}
        dense_lat: dict[str, float] = {}
        with _one_blas_thread():
            for qid in qids:
                t = time.perf_counter()
                idx, scores = mem.search(qvecs[qid], depth)
                dense_lat[qid] = time.perf_counter() - t
                dense_hits[qid] = [Hit(doc_ids[i], float(s)) for i, s in zip(idx, scores)]
        common = {"dim": ds.dim, "quantization": ds.quantization, "oversample": ds.oversample,
                  "bytes_per_vector": ds.bytes_stored(), "ram_bytes_per_vector": ds.bytes_ram()}
        rows.append({"mode": "dense", **common, **evaluate(_run(dense_hits), qrels, k),
                     **_lat(list(dense_lat.values())), "build_s": round(build_s, 3)})
        for fs in fsets:
            fused: dict[str, list[Hit]] = {}
            fl: list[float] = []
            for qid in qids:
                per_mode = {"dense": dense_hits[qid], **{m: hits[m][qid] for m in lexical}}
                t = time.perf_counter()
                fused[qid] = fuse(per_mode, depth, fs, coverage[qid])
                used = fs.fused_modes(coverage[qid])
                fl.append(time.perf_counter() - t + (dense_lat[qid] if "dense" in used else 0.0)
                          + sum(lat[m][qid] for m in lexical if m in used))
            low = sum(1 for q in qids if fs.fused_modes(coverage[q]) != fs.modes)
            rows.append({"mode": "hybrid", **common, **fs.describe(), **evaluate(_run(fused), qrels, k), **_lat(fl),
                         "low_coverage_queries": low})
        say(f"dense {ds.label}: done")
    _add_retained(rows, k)
    return {
        "collection": searcher.collection, "queries": len(qids), "documents": len(doc_ids), "k": k,
        "vectors_from": source, "model": searcher.version["model"]["ref"], "full_dim": full_dim,
        "axes": {a: [_jsonable(v) for v in vs] for a, vs in axes.items()},
        "defaults": searcher.settings.describe(), "oversample": cfg.dense.oversample,
        "query_encode_ms_mean": round(1000 * float(np.mean(encode_s)), 3) if encode_s else 0.0,
        "latency_note": "dense: exact in-memory numpy search of one query; hybrid: dense + the fused modes' "
                        "index searches + fusion",
        "rows": rows,
    }


def _index_quantization(searcher: Searcher) -> str:
    q = searcher.cfg.dense.quantization
    if q == Quantization.binary and searcher.cfg.dense.rescore:
        return "binary+int8"
    return q.value


def _jsonable(v: Any) -> Any:
    if isinstance(v, FusionKind):
        return v.value
    if isinstance(v, tuple):
        return "+".join(v)
    return v


def _fusion_key(r: dict[str, Any]) -> str:
    return json.dumps({c: r.get(c) for c in ("mode", "fusion", "rrf_k", "weights", "fused", "candidates")},
                      sort_keys=True, default=str)


def _add_retained(rows: list[dict[str, Any]], k: int) -> None:
    """``retained``: nDCG@k relative to the largest-dimension float row of the same mode and fusion."""
    metric = f"ndcg@{k}"
    refs: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("quantization") == "none":
            key = _fusion_key(r)
            if key not in refs or r["dim"] > refs[key]["dim"]:
                refs[key] = r
    for r in rows:
        ref = refs.get(_fusion_key(r)) if "dim" in r else None
        if ref and ref[metric]:
            r["retained"] = round(r[metric] / ref[metric], 4)


# ------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------

def _weights_str(r: dict[str, Any]) -> str:
    if r.get("mode") != "hybrid" or r.get("fusion") == "rrf":
        return ""
    return " ".join(f"{m}:{r['weights'][m]:g}" for m in r.get("fused", []))


def markdown(result: dict[str, Any]) -> str:
    """The sweep table as markdown (one row per mode and setting)."""
    k = result["k"]
    cols = ["mode", "dim", "quantization", "oversample", "fusion", "rrf_k", "fused", "weights", "candidates",
            f"ndcg@{k}", "retained", "recall@100", f"mrr@{k}", "bytes/vector", "RAM bytes/vector", "p50 ms", "p95 ms"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in result["rows"]:
        vals = [r["mode"], r.get("dim", ""), r.get("quantization", ""), _g(r.get("oversample")), r.get("fusion", ""),
                r.get("rrf_k", "") if r.get("fusion") in ("rrf", "weighted_rrf") else "",
                "+".join(r.get("fused", [])), _weights_str(r), r.get("candidates", ""),
                f"{r[f'ndcg@{k}']:.4f}", f"{r['retained']:.3f}" if "retained" in r else "",
                f"{r['recall@100']:.4f}", f"{r[f'mrr@{k}']:.4f}", r.get("bytes_per_vector", ""),
                r.get("ram_bytes_per_vector", ""), f"{r['latency_ms_p50']:.2f}", f"{r['latency_ms_p95']:.2f}"]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    head = (f"{result['collection']}: {result['queries']} queries, {result['documents']} documents, "
            f"model {result['model']} ({result['full_dim']} d), vectors from {result['vectors_from']}.")
    return head + "\n\n" + "\n".join(lines) + "\n"


def _g(v: Any) -> str:
    return "" if v is None else f"{v:g}"


def plot(result: dict[str, Any], path: Path) -> Path:
    """nDCG@k against bytes per vector searched in RAM (log scale): one line per quantization
    through the dimensions, dense dashed and hybrid solid, each point labelled with its dimension.

    Hybrid lines use the first fusion setting of the grid and rescoring settings the index's
    oversample (or the first swept one); BM25 and sparse are horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    k = result["k"]
    metric = f"ndcg@{k}"
    rows = result["rows"]
    if len({(r["dim"], r["quantization"], r.get("oversample")) for r in rows if r["mode"] == "dense"}) == 1:
        return _plot_fusion(result, path)
    overs = [r["oversample"] for r in rows if r.get("oversample")]
    keep_over = result.get("oversample") if result.get("oversample") in overs else (overs[0] if overs else None)
    rows = [r for r in rows if r.get("oversample") in (None, keep_over)]
    hyb = [r for r in rows if r["mode"] == "hybrid"]
    ref = _fusion_key(hyb[0]) if hyb else None
    quants = list(dict.fromkeys(r["quantization"] for r in rows if "quantization" in r))
    colors = dict(zip(DENSE_QUANTIZATIONS, ("tab:blue", "tab:green", "tab:olive", "tab:red", "tab:purple", "tab:orange")))
    markers = dict(zip(DENSE_QUANTIZATIONS, ("o", "s", "D", "v", "^", "P")))
    fig, ax = plt.subplots(figsize=(10.5, 6))
    for mode, style in (("dense", "--"), ("hybrid", "-")):
        for q in quants:
            pts = sorted((r for r in rows if r["mode"] == mode and r.get("quantization") == q
                          and (mode == "dense" or _fusion_key(r) == ref)), key=lambda r: r["ram_bytes_per_vector"])
            if not pts:
                continue
            xs, ys = [r["ram_bytes_per_vector"] for r in pts], [r[metric] for r in pts]
            ax.plot(xs, ys, linestyle=style, marker=markers.get(q, "o"), color=colors.get(q, "black"), markersize=5)
            for r in pts:
                ax.annotate(str(r["dim"]), (r["ram_bytes_per_vector"], r[metric]), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, color=colors.get(q, "black"))
    for r, style in zip([r for r in rows if r["mode"] in ("bm25", "sparse")], (":", "-.")):
        ax.axhline(r[metric], color="gray", linestyle=style, linewidth=1)
    handles = [Line2D([], [], color=colors.get(q, "black"), marker=markers.get(q, "o"), linestyle="none", label=q)
               for q in quants]
    fusion = f" ({hyb[0]['fusion']}, {'+'.join(hyb[0]['fused'])})" if hyb else ""
    handles += [Line2D([], [], color="black", linestyle="--", label="dense"),
                Line2D([], [], color="black", linestyle="-", label="hybrid" + fusion)]
    handles += [Line2D([], [], color="gray", linestyle=st, label=r["mode"])
                for r, st in zip([r for r in rows if r["mode"] in ("bm25", "sparse")], (":", "-."))]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xscale("log", base=2)
    over = f", x{keep_over:g} oversample" if keep_over else ""
    ax.set_xlabel("bytes per vector searched in RAM (point labels: dimension)")
    ax.set_ylabel(f"nDCG@{k}")
    ax.set_title(f"{result['collection']}: quality vs bytes per vector ({result['queries']} queries)\n"
                 f"rescoring (+int8, +float{over}) reads its vectors for the candidates only", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fusion_label(r: dict[str, Any]) -> str:
    parts = [r["fusion"], "+".join(r["fused"])]
    if r["fusion"] in ("rrf", "weighted_rrf"):
        parts.append(f"k={r['rrf_k']}")
    w = _weights_str(r)
    if w:
        parts.append(w)
    parts.append(f"c={r['candidates']}")
    return " ".join(parts)


def _plot_fusion(result: dict[str, Any], path: Path, top: int = 30) -> Path:
    """A fusion grid (one dense setting): the best ``top`` settings as bars, single modes as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = f"ndcg@{result['k']}"
    hyb = sorted((r for r in result["rows"] if r["mode"] == "hybrid"), key=lambda r: -r[metric])[:top]
    fig, ax = plt.subplots(figsize=(10.5, 0.28 * len(hyb) + 1.8))
    colors = {"rrf": "tab:blue", "weighted_rrf": "tab:cyan", "dbsf": "tab:green", "minmax": "tab:red"}
    ax.barh(range(len(hyb)), [r[metric] for r in hyb], color=[colors.get(r["fusion"], "gray") for r in hyb])
    ax.set_yticks(range(len(hyb)), [_fusion_label(r) for r in hyb], fontsize=7)
    ax.invert_yaxis()
    singles = [r for r in result["rows"] if r["mode"] != "hybrid"]
    for r, style in zip(singles, (":", "-.", "--")):
        ax.axvline(r[metric], color="black", linestyle=style, linewidth=1, label=f"{r['mode']} {r[metric]:.4f}")
    lo = min([r[metric] for r in hyb] + [r[metric] for r in singles])
    ax.set_xlim(max(0.0, lo - 0.02), max(r[metric] for r in hyb) + 0.01)
    ax.set_xlabel(f"nDCG@{result['k']}")
    ax.set_title(f"{result['collection']}: best {len(hyb)} fusion settings ({result['queries']} queries)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path, name: str = "sweep") -> dict[str, str]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(result, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return {kind: str(p) for kind, p in paths.items()}
