"""The sweep itself: query lists from the live index once, every dense setting searched in memory,
each fused with the index's BM25 and sparse lists under every fusion setting."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from ..config import FusionKind, Quantization
from ..encoders.query import encode_queries
from ..eval import Qrels, evaluate, percentile
from ..schema import Hit
from ..search import Searcher, fuse
from .axes import dense_settings, fusion_key, fusion_settings
from .memory import MemoryDenseIndex, document_vectors

log = logging.getLogger(__name__)


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
    found = encode_queries(searcher, queries, qids, lexical, depth, dense_dim=full_dim)
    qvecs = {q: eq.dense for q, eq in found.encoded.items()}
    coverage = {q: eq.coverage for q, eq in found.encoded.items()}
    empty = {q: eq.empty for q, eq in found.encoded.items()}
    hits, lat, encode_s = found.hits, found.seconds, found.encode_seconds
    say(f"{len(qids)} queries encoded; {', '.join(lexical)} lists from the index")

    rows: list[dict[str, Any]] = []
    for m in lexical:
        rows.append({"mode": m, **evaluate(_run(hits[m]), qrels, k), **_lat(list(lat[m].values()))})

    for ds in dsets:
        t = time.perf_counter()
        mem = MemoryDenseIndex(docs, ds, cfg.dense.calibration_sample, cfg.dense.calibration_quantile)
        build_s = time.perf_counter() - t
        dense_hits, dense_lat = mem.search_timed([qvecs[q] for q in qids], qids, doc_ids, depth)
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
                fused[qid] = fuse(per_mode, depth, fs, coverage[qid], empty[qid])
                used = fs.fused_modes(coverage[qid], empty[qid])
                fl.append(time.perf_counter() - t + (dense_lat[qid] if "dense" in used else 0.0)
                          + sum(lat[m][qid] for m in lexical if m in used))
            low = sum(1 for q in qids if fs.fused_modes(coverage[q], empty[q]) != fs.modes)
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


def _add_retained(rows: list[dict[str, Any]], k: int) -> None:
    """``retained``: nDCG@k relative to the largest-dimension float row of the same mode and fusion."""
    metric = f"ndcg@{k}"
    refs: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("quantization") == "none":
            key = fusion_key(r)
            if key not in refs or r["dim"] > refs[key]["dim"]:
                refs[key] = r
    for r in rows:
        ref = refs.get(fusion_key(r)) if "dim" in r else None
        if ref and ref[metric]:
            r["retained"] = round(r[metric] / ref[metric], 4)
