"""``indexer compare``: candidate models side by side on the user's own corpus, one encode pass each.

For each model, every dimension (up to the model's own) and quantization is derived from the one
set of full-dimension vectors and searched in memory exactly as the vector store would
(:class:`indexer.sweep.memory.MemoryDenseIndex`), alone and fused with BM25 (and model-vocabulary
sparse) under the config's fusion settings. Beside quality, each row carries the model's encode
tokens/s measured on this machine (``indexer bench``'s code path), the projected full-corpus encode
hours and cost (``indexer estimate``'s code path, for that model), bytes per vector and index RAM,
and query latency.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import JobConfig, SparseKind
from ..eval import Qrels, evaluate, percentile
from ..schema import Hit
from ..search import Settings, fuse, query_empty_modes, vocab_coverage
from ..sweep.axes import DENSE_QUANTIZATIONS, DenseSetting
from ..sweep.memory import MemoryDenseIndex
from .corpus import CompareError, EvalCorpus, judged_documents, load_eval_corpus
from .lexical import MemorySparseBM25, TempBM25
from .pseudo import PseudoQueries, make_pseudo_queries
from .report import add_pareto, recommend
from .vectors import document_vectors

log = logging.getLogger(__name__)

QUERY_BATCH = 64
DEFAULT_TOLERANCE = 0.01
"""nDCG@10 points below the best within which the cheapest setting is recommended."""


@dataclass
class CompareOptions:
    """What to compare: models, dense storage settings, documents, queries and the recommendation's tolerance."""

    models: list[str]
    dims: list[int] | None = None  # None: each model's own dimension and the config's dense.dim
    quantizations: list[str] | None = None  # None: the config's dense.quantization
    sample_docs: int | None = None
    pseudo_queries: int | None = None
    seed: int = 0
    k: int = 10
    tolerance: float = DEFAULT_TOLERANCE
    bench_seconds: float = 10.0
    bench_rows: int = 256
    remove_pseudo_sentence: bool = True

    def check(self) -> None:
        if not self.models:
            raise CompareError("give at least one --model")
        if len(set(self.models)) != len(self.models):
            raise CompareError(f"--model given twice: {self.models}")
        bad = [q for q in self.quantizations or [] if q not in DENSE_QUANTIZATIONS]
        if bad:
            raise CompareError(f"--quantization {bad}: allowed {', '.join(DENSE_QUANTIZATIONS)}")
        if any(d < 8 for d in self.dims or []):
            raise CompareError(f"--dims {self.dims}: every dimension must be at least 8")
        if self.sample_docs is not None and self.sample_docs < 1:
            raise CompareError(f"--sample-docs must be positive, got {self.sample_docs}")
        if self.pseudo_queries is not None and self.pseudo_queries < 1:
            raise CompareError(f"--pseudo-queries must be positive, got {self.pseudo_queries}")
        if self.tolerance < 0:
            raise CompareError(f"--tolerance must be >= 0, got {self.tolerance}")


def model_config(cfg: JobConfig, model_ref: str, profile_path: str) -> JobConfig:
    """The config as it would be with ``model_ref`` at its own dimension (``dense.dim`` never caps a model)."""
    m = cfg.model_copy(deep=True)
    m.dense.model = model_ref
    m.dense.dim = None
    m.cost.profile_path = profile_path
    return m


def model_dims(requested: Sequence[int] | None, cfg_dim: int | None, full_dim: int) -> tuple[list[int], list[int]]:
    """(dims to compare, dims skipped because they exceed the model's ``full_dim``)."""
    if requested:
        return [d for d in requested if d <= full_dim], [d for d in requested if d > full_dim]
    dims = [full_dim] + ([cfg_dim] if cfg_dim and cfg_dim < full_dim else [])
    return dims, []


def _run(hits: dict[str, list[Hit]]) -> dict[str, dict[str, float]]:
    return {q: {h.id: float(len(hs) - i) for i, h in enumerate(hs)} for q, hs in hits.items()}


def _lat(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * percentile(values, 50), 3), "p95_ms": round(1000 * percentile(values, 95), 3)}


def _queries(cfg: JobConfig, opts: CompareOptions, queries: dict[str, str] | None, qrels: Qrels | None
             ) -> tuple[EvalCorpus, dict[str, str], Qrels, dict[str, Any]]:
    """The documents and the queries: given qrels (judged documents always kept) or pseudo-queries."""
    if opts.pseudo_queries:
        corpus = load_eval_corpus(cfg, None, opts.sample_docs, opts.seed)
        pq: PseudoQueries = make_pseudo_queries(corpus.ids, corpus.texts, opts.pseudo_queries, opts.seed,
                                                remove=opts.remove_pseudo_sentence)
        if not pq.queries:
            raise CompareError(f"corpus.path {cfg.corpus.path}: no chunk has two sentences of 30+ characters, "
                               "so no pseudo-query can be made; give --queries and --qrels")
        return corpus.with_texts(pq.edited), pq.queries, pq.qrels, {"source": "pseudo", "pseudo": pq.describe(),
                                                                     "generated": pq}
    assert queries is not None and qrels is not None
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise CompareError("no query id of the qrels file is in the queries file")
    qrels = {q: qrels[q] for q in qids}
    corpus = load_eval_corpus(cfg, judged_documents(qrels), opts.sample_docs, opts.seed)
    missing = judged_documents(qrels) - set(corpus.ids)
    if len(missing) == len(judged_documents(qrels)):
        raise CompareError(f"none of the qrels' {len(missing)} relevant documents is a valid row of "
                           f"{cfg.corpus.path}: are the qrels for this corpus?")
    return corpus, {q: queries[q] for q in qids}, qrels, {"source": "qrels", "missing_judged_documents": len(missing)}


def run_compare(cfg: JobConfig, opts: CompareOptions, queries: dict[str, str] | None = None,
                qrels: Qrels | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compare ``opts.models`` on the config's corpus; see the module docstring. Returns the result dict."""
    opts.check()
    _check_models(opts.models)
    say = progress or (lambda msg: log.info(msg))
    k = opts.k
    corpus, queries, qrels, qinfo = _queries(cfg, opts, queries, qrels)
    generated = qinfo.pop("generated", None)
    qids = list(qrels)
    texts = [queries[q] for q in qids]
    settings = Settings.from_config(cfg)
    depth = max(100, k, settings.candidates)
    quants = opts.quantizations or [cfg.dense.quantization.value if cfg.dense.quantization.value != "binary"
                                    or not cfg.dense.rescore else "binary+int8"]
    say(f"{corpus.note}; {len(qids)} queries ({qinfo['source']})")

    bm25 = TempBM25(corpus, cfg.text_store)
    try:
        bm25_hits, bm25_lat = {}, {}
        for q, t in zip(qids, texts):
            bm25_hits[q], bm25_lat[q] = bm25.search(t, depth)
    finally:
        bm25.close()
    baselines = [{"mode": "bm25", **_metrics(evaluate(_run(bm25_hits), qrels, k), k),
                  **_lat(list(bm25_lat.values()))}]
    edited = set(generated.edited) if generated is not None else set()
    corpus_own = [d not in edited for d in corpus.ids]
    encoded_texts = corpus.encoded_texts(cfg.dense.document_prefix)

    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    shared = _Shared(corpus, encoded_texts, corpus_own, qids, texts, qrels, settings, depth, k,
                     {"bm25": (bm25_hits, bm25_lat)})
    with tempfile.TemporaryDirectory(prefix="indexer-compare-profiles-") as tmp:
        for ref in opts.models:
            info, model_rows, sparse_row = _compare_model(cfg, opts, ref, str(Path(tmp) / "profiles.json"), shared,
                                                          quants, say)
            models.append(info)
            rows += model_rows
            if sparse_row:
                baselines.append(sparse_row)
    rows = [_ordered(r, k) for r in rows]
    result: dict[str, Any] = {
        "config_corpus": cfg.corpus.path, "k": k, "corpus": corpus.describe(),
        "queries": {"count": len(qids), **qinfo}, "models": models, "baselines": baselines,
        "fusion": settings.describe(), "tolerance": opts.tolerance, "rows": rows,
        "latency_note": "dense: exact in-memory numpy search of one query; hybrid: dense + BM25 (+ sparse) "
                        "searches + fusion; the index's HNSW search differs",
        "index_ram_note": "index_ram_bytes: dense vectors searched in RAM plus HNSW links, for the whole corpus",
    }
    add_pareto(result)
    result["recommendation"] = recommend(result, opts.tolerance)
    if generated is not None:
        result["pseudo_set"] = generated  # written as BEIR files by write_outputs; left out of the JSON
    return result


@dataclass
class _Shared:
    """What every model of a comparison is evaluated on: documents, queries and the BM25 lists."""

    corpus: EvalCorpus
    encoded_texts: list[str]
    corpus_own: list[bool]
    qids: list[str]
    texts: list[str]
    qrels: Qrels
    settings: Settings
    depth: int
    k: int
    lexical: dict[str, tuple[dict, dict]]


def _compare_model(cfg: JobConfig, opts: CompareOptions, ref: str, profile_path: str, sh: _Shared,
                   quants: list[str], say: Callable[[str], None]
                   ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """One model: its vectors (one encode pass), sparse lists, throughput, estimate, and its rows."""
    from ..encoders.dense import DenseModel
    from ..estimate import bench_throughput, estimate, save_profile
    from ..estimate.dry_run import hnsw_link_bytes

    mcfg = model_config(cfg, ref, profile_path)
    say(f"{ref}: loading")
    model = DenseModel(ref, cfg.encode.device, cfg.dense.dtype, cfg.dense.max_seq_length)
    full_dim = int(model.full_dim)
    dims, skipped = model_dims(opts.dims, cfg.dense.dim, full_dim)
    if skipped:
        say(f"{ref}: dims {skipped} skipped (above the model's {full_dim})")
    dv = document_vectors(cfg, model, sh.corpus.ids, sh.encoded_texts, sh.corpus_own, progress=say)
    qvecs, q_encode_s = _encode_queries(model, sh.texts, cfg.dense.query_prefix)
    del model
    gc.collect()
    coverage = dict(zip(sh.qids, vocab_coverage(ref, sh.texts)))
    lexical = dict(sh.lexical)
    sparse_row = None
    empty = _empty_modes(cfg, ref, sh.qids, sh.texts)
    if cfg.sparse.kind == SparseKind.bm25:
        sp = MemorySparseBM25(ref, sh.encoded_texts, sh.corpus.ids, cfg.sparse.k1, cfg.sparse.b, cfg.sparse.avg_len)
        hits, lat = {}, {}
        for q, t in zip(sh.qids, sh.texts):
            hits[q], lat[q] = sp.search(t, sh.depth)
        lexical["sparse"] = (hits, lat)
        sparse_row = {"mode": "sparse", "model": ref, **_metrics(evaluate(_run(hits), sh.qrels, sh.k), sh.k),
                      **_lat(list(lat.values()))}
    say(f"{ref}: measuring encode throughput ({opts.bench_seconds:g} s, `indexer bench`)")
    prof = bench_throughput(mcfg, rows=opts.bench_rows, seconds=opts.bench_seconds)
    save_profile(mcfg, prof)
    est = estimate(mcfg, full=True)
    info = {"model": ref, "full_dim": full_dim, "dims": dims, "skipped_dims": skipped,
            "vectors_from": dv.sources, "document_encode_s": round(dv.encode_seconds, 2),
            "query_encode_ms_mean": round(1000 * q_encode_s, 3),
            "tokens_per_s": round(float(prof["tokens_per_s"]), 1), "bench_device": prof.get("device"),
            "estimate": {x: est.get(x) for x in ("chunks", "tokens_encoded", "device", "throughput_tokens_per_s",
                                                 "throughput_basis", "gpu_hours", "wall_hours", "cost_usd",
                                                 "gpu_hour_usd", "gpu_hour_source")}}
    chunks = int(est.get("chunks") or sh.corpus.corpus_rows)
    links = hnsw_link_bytes(cfg.vector_store.edge.hnsw_m)
    rows: list[dict[str, Any]] = []
    for dim in dims:
        for qz in quants:
            ds = DenseSetting(dim, qz, cfg.dense.oversample if qz not in ("none", "binary") else None)
            for r in _setting_rows(ds, dv.vectors, sh.corpus.ids, sh.qids, qvecs, lexical, coverage, empty, sh.qrels,
                                   sh.settings, sh.depth, sh.k, cfg):
                r.update({"model": ref, "tokens_per_s": info["tokens_per_s"], "encode_hours": est.get("gpu_hours"),
                          "cost_usd": est.get("cost_usd"), "gpu_hour_source": est.get("gpu_hour_source"),
                          "index_ram_bytes": int(chunks * (r["ram_bytes_per_vector"] + links))})
                rows.append(r)
    say(f"{ref}: {len(dims) * len(quants)} settings done")
    return info, rows, sparse_row


def _empty_modes(cfg: JobConfig, ref: str, qids: Sequence[str], texts: Sequence[str]) -> dict[str, frozenset[str]]:
    """Per query, the modes whose analysis of it came out empty (kept out of the coverage fallback)."""
    from ..encoders.sparse import bm25_query

    bm25 = cfg.sparse.kind == SparseKind.bm25
    return {q: query_empty_modes(t, cfg.text_store.analyzer.value, bm25_query(t, ref) if bm25 else None)
            for q, t in zip(qids, texts)}


def _check_models(refs: Sequence[str]) -> None:
    """Every model's tokenizer loads (a wrong path or an uncached hub name fails here, in one line)."""
    from ..encoders.models import ModelError, tokenizer_info

    for ref in refs:
        try:
            tokenizer_info(ref)
        except (ModelError, OSError, ValueError) as e:
            raise CompareError(f"--model {ref}: {e}") from None


def _metrics(ev: dict[str, float], k: int) -> dict[str, float]:
    return {f"ndcg@{k}": ev[f"ndcg@{k}"], "recall@100": ev["recall@100"], f"mrr@{k}": ev[f"mrr@{k}"]}


def _ordered(r: dict[str, Any], k: int) -> dict[str, Any]:
    """Rows with the documented keys first, in the documented order."""
    head = ["model", "dim", "quantization", "mode", f"ndcg@{k}", "recall@100", f"mrr@{k}", "tokens_per_s",
            "encode_hours", "cost_usd", "bytes_per_vector", "p50_ms"]
    return {**{c: r.get(c) for c in head}, **{c: v for c, v in r.items() if c not in head}}


def _encode_queries(model, texts: list[str], prefix: str) -> tuple[dict[int, np.ndarray], float]:
    """Full-dimension normalised query vectors (by position) and the mean encode seconds per query."""
    import torch

    out: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    for lo in range(0, len(texts), QUERY_BATCH):
        emb = model.encode_texts(texts[lo:lo + QUERY_BATCH], prefix=prefix)
        x = torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy()
        for i, v in enumerate(x):
            out[lo + i] = v
    return out, (time.perf_counter() - t0) / max(1, len(texts))


def _setting_rows(ds: DenseSetting, docs: np.ndarray, doc_ids: list[str], qids: list[str],
                  qvecs: dict[int, np.ndarray], lexical: dict[str, tuple[dict, dict]], coverage: dict[str, float],
                  empty: dict[str, frozenset[str]], qrels: Qrels, settings: Settings, depth: int, k: int, cfg: JobConfig) -> list[dict[str, Any]]:
    """The dense row and the hybrid row of one storage setting."""
    mem = MemoryDenseIndex(docs, ds, cfg.dense.calibration_sample, cfg.dense.calibration_quantile)
    dense_hits, dense_lat = mem.search_timed([qvecs[i] for i in range(len(qids))], qids, doc_ids, depth)
    common = {"dim": ds.dim, "quantization": ds.quantization, "oversample": ds.oversample,
              "bytes_per_vector": ds.bytes_stored(), "ram_bytes_per_vector": ds.bytes_ram()}
    fused: dict[str, list[Hit]] = {}
    fl: list[float] = []
    for q in qids:
        per_mode = {"dense": dense_hits[q], **{m: h[q] for m, (h, _) in lexical.items()}}
        t = time.perf_counter()
        fused[q] = fuse(per_mode, depth, settings, coverage[q], empty[q])
        used = settings.fused_modes(coverage[q], empty[q])
        fl.append(time.perf_counter() - t + (dense_lat[q] if "dense" in used else 0.0)
                  + sum(lat[q] for m, (_, lat) in lexical.items() if m in used))
    low = sum(1 for q in qids if settings.fused_modes(coverage[q], empty[q]) != settings.modes)
    return [{"mode": "dense", **common, **_metrics(evaluate(_run(dense_hits), qrels, k), k),
             **_lat(list(dense_lat.values()))},
            {"mode": "hybrid", **common, **_metrics(evaluate(_run(fused), qrels, k), k), **_lat(fl),
             "fused": [m for m in settings.modes if m == "dense" or m in lexical], "low_coverage_queries": low}]
