"""Retrieval evaluation on BEIR-format queries and qrels (nDCG@k, recall@100, MRR@k).

Metrics come from ``pytrec_eval`` (the trec_eval implementation BEIR and MTEB use), so numbers
are comparable with published ones. Only queries that have qrels are evaluated.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .encoders.query import encode_queries
from .search import MODES, Searcher, Settings

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def load_queries(path: str | Path) -> dict[str, str]:
    """BEIR queries.jsonl: one object per line with ``_id`` and ``text``."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out[str(obj["_id"])] = obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with _id and text ({e})") from e
    return out


def load_qrels(path: str | Path) -> Qrels:
    """BEIR qrels TSV with a header: ``query-id  corpus-id  score``."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or len(header) < 3:
            raise ValueError(f"{path}: expected a header 'query-id corpus-id score'")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated columns, got {row}")
            try:
                score = int(float(row[2]))
            except ValueError:
                raise ValueError(f"{path}:{n}: the score column must be a number, got {row[2]!r}") from None
            qrels.setdefault(str(row[0]), {})[str(row[1])] = score
    return qrels


def judged_not_indexed(searcher: Searcher, qrels: Qrels) -> list[str]:
    """Documents the qrels judge that the live index does not hold (sorted): no mode can find
    them, so every score is lower than the corpus deserves; usually qrels of another corpus."""
    judged = sorted({d for docs in qrels.values() for d in docs})
    found = searcher.text.retrieve(searcher.collection, judged) if judged else {}
    return [d for d in judged if d not in found]


def evaluate(run: Run, qrels: Qrels, k: int = 10) -> dict[str, float]:
    """Mean nDCG@k, recall@100 and MRR@k over the queries that have qrels."""
    import pytrec_eval

    qids = [q for q in qrels if q in run]
    if not qids:
        return {f"ndcg@{k}": 0.0, "recall@100": 0.0, f"mrr@{k}": 0.0, "queries": 0}
    sub_qrels = {q: qrels[q] for q in qids}
    full = {q: {d: float(s) for d, s in run[q].items()} for q in qids}
    ev = pytrec_eval.RelevanceEvaluator(sub_qrels, {f"ndcg_cut.{k}", "recall.100"})
    res = ev.evaluate(full)
    top = {q: dict(sorted(full[q].items(), key=lambda kv: -kv[1])[:k]) for q in qids}
    rr = pytrec_eval.RelevanceEvaluator(sub_qrels, {"recip_rank"}).evaluate(top)
    n = len(qids)
    # Queries with no results count as zero.
    missing = [q for q in qrels if q not in run]
    n_all = n + len(missing)
    return {
        f"ndcg@{k}": round(sum(res.get(q, {}).get(f"ndcg_cut_{k}", 0.0) for q in qids) / n_all, 5),
        "recall@100": round(sum(res.get(q, {}).get("recall_100", 0.0) for q in qids) / n_all, 5),
        f"mrr@{k}": round(sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qids) / n_all, 5),
        "queries": n_all,
    }


def as_run(hits_by_query: Mapping[str, Iterable]) -> Run:
    out: Run = {}
    for qid, hits in hits_by_query.items():
        hits = list(hits)
        # Scores from rank so ties and score scales never reorder what the engine returned.
        out[qid] = {h.id: float(len(hits) - i) for i, h in enumerate(hits)}
    return out


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    idx = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[idx]


def run_eval(searcher: Searcher, queries: dict[str, str], qrels: Qrels, k: int = 10,
             modes: Iterable[str] = MODES, settings: list[tuple[str, Settings]] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate every mode; hybrid variants (``settings``) fuse the same per-mode candidate lists."""
    qids = [q for q in qrels if q in queries]
    qrels = {q: qrels[q] for q in qids}
    modes = list(modes)
    variants = settings if settings is not None else ([("hybrid", searcher.settings)] if "hybrid" in modes else [])
    depth = max([100, k] + [s.candidates for _, s in variants])
    base = [m for m in ("dense", "sparse", "bm25") if m in modes or "hybrid" in modes]
    if searcher.version["sparse"]["kind"] == "none":
        base = [m for m in base if m != "sparse"]
    found = encode_queries(searcher, queries, qids, base, depth, progress=progress)
    per_mode = found.hits
    latency = {m: [found.seconds[m][q] for q in qids] for m in base}
    coverage = {q: eq.coverage for q, eq in found.encoded.items()}
    empty = {q: eq.empty for q, eq in found.encoded.items()}
    encode_s = found.encode_seconds
    results: dict[str, Any] = {"modes": {}, "queries": len(qids), "k": k}
    for m in base:
        if m in modes:
            results["modes"][m] = evaluate(as_run(per_mode[m]), qrels, k) | {
                "latency_ms_p50": round(1000 * percentile(latency[m], 50), 3),
                "latency_ms_p95": round(1000 * percentile(latency[m], 95), 3),
            }
    for name, s in variants:
        fused = {}
        for qid in qids:
            fused[qid] = searcher.fuse({m: per_mode[m][qid] for m in base if m in s.modes}, depth, s, coverage[qid],
                                       empty[qid])
        lat = [sum(latency[m][i] for m in base if m in s.fused_modes(coverage[q], empty[q])) for i, q in enumerate(qids)]
        results["modes"][name] = evaluate(as_run(fused), qrels, k) | {
            "latency_ms_p50": round(1000 * percentile(lat, 50), 3),
            "latency_ms_p95": round(1000 * percentile(lat, 95), 3),
            **s.describe(),
            "low_coverage_queries": sum(1 for q in qids if s.fused_modes(coverage[q], empty[q]) != s.modes),
        }
    results["query_encode_ms_mean"] = round(1000 * statistics.mean(encode_s), 3) if encode_s else 0.0
    return results
