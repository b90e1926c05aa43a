"""Dense CPU backends side by side on one corpus: a bare ``SentenceTransformer.encode`` (fp32), a
fastembed encode (what a Qdrant user would pick on CPU), the encode stage's own loop in torch fp32,
and OpenVINO fp32 / bf16 / int8.

    .venv/bin/python benchmarks/cpu_backends.py [--dataset scifact] [--limit N] [--threads 2]

Every setting encodes the same texts with the same threads; the encode stage's settings run its
code path (pre-tokenized ids, token-budget batches of ``encode.batch_tokens`` on CPU, the run's
post-processing), timed after a warm-up batch. OpenVINO exports are made before (their time is
reported apart, ``export_s``; 0 when the cache already had it) into a temporary cache; int8
calibrates on 300 corpus texts like a run does. fastembed (``benchmarks/fastembed_ref.py``: its own
venv ``.venv-fastembed``, the same model exported to ONNX, ``TextEmbedding.embed`` with its default
batch of 256 texts, the same threads, timed after the same 32-text warm-up as the bare encode; its
ONNX export is ``export_s``, its model load is in ``fastembed.load_s``) is skipped, with a line
saying so, when that venv is missing. Cosines are against the torch fp32 vectors; dense
nDCG@10 (when the dataset has qrels) ranks the whole corpus by exact cosine with torch fp32 query
vectors, as ``indexer search`` encodes queries. ``--busy-share S`` runs every encode beside one
process that keeps one core busy a share S of each 10 ms (what a read, tokenize or write task does to
an encoder in a run on a small node). Prints a markdown table and writes
``benchmarks/results/cpu_backends.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import beir_texts, data_dir, machine, markdown_table, write_result  # noqa: E402
from benchmarks.fastembed_ref import BATCH_SIZE, FastembedUnavailable, fastembed_run  # noqa: E402

MODEL = "packaged:all-MiniLM-L6-v2"


def bare_encode(texts: list[str], threads: int) -> tuple[np.ndarray, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    from indexer.encoders.models import resolve_model

    torch.set_num_threads(threads)
    model = SentenceTransformer(resolve_model(MODEL), device="cpu")
    model.encode(texts[:32], show_progress_bar=False)
    t0 = time.perf_counter()
    vecs = model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vecs, np.float32), time.perf_counter() - t0


def stage_encode(texts: list[str], ids: list[np.ndarray], threads: int, batch_tokens: int, backend: str,
                 precision: str, cache: str) -> tuple[np.ndarray, float, float, str]:
    from indexer.encoders.dense import DenseModel, Postprocess

    calibration = random.Random(0).sample(texts, min(300, len(texts))) if precision == "int8" else None
    t0 = time.perf_counter()
    model = DenseModel(MODEL, "cpu", "auto", None, threads, backend=backend, precision=precision,
                       cache_dir=cache, calibration_texts=calibration)
    export = time.perf_counter() - t0 if getattr(model, "exported", False) else 0.0
    post = Postprocess(None, "none", None)
    model.encode_ids(ids[:64], batch_tokens, post)  # warm-up
    t0 = time.perf_counter()
    vecs = model.encode_ids(ids, batch_tokens, post)[0]
    return vecs, time.perf_counter() - t0, export, model.setting.label


def dense_ndcg(dataset: str, doc_ids: list[str], vecs: np.ndarray, queries: dict[str, np.ndarray],
               qrels: dict[str, dict[str, int]]) -> float:
    import pytrec_eval

    qids = sorted(queries)
    q = np.stack([queries[k] for k in qids])
    scores = q @ vecs.T
    run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i])[:100]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    res = ev.evaluate(run)
    return round(float(np.mean([r["ndcg_cut_10"] for r in res.values()])), 4)


def load_qrels(dataset: str, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    root = data_dir() / dataset
    qrels: dict[str, dict[str, int]] = {}
    path = root / "qrels" / f"{split}.tsv"
    if not path.exists():
        return {}, {}
    for line in path.read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")[:3]
        qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    for line in (root / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        if q["_id"] in qrels:
            queries[q["_id"]] = q["text"]
    return queries, qrels


def _burn(stop, share: float) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.01 * share:
            pass
        time.sleep(0.01 * (1.0 - share))


@contextlib.contextmanager
def busy(share: float):
    """Meanwhile, one process keeps one core busy ``share`` of the time (nothing when 0)."""
    if share <= 0:
        yield
        return
    stop = multiprocessing.Event()
    proc = multiprocessing.Process(target=_burn, args=(stop, share), daemon=True)
    proc.start()
    try:
        yield
    finally:
        stop.set()
        proc.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N documents only (no nDCG then)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--fastembed-batch-size", type=int, default=BATCH_SIZE, help="texts per fastembed batch")
    ap.add_argument("--busy-share", type=float, default=0.0,
                    help="share of one core another process keeps busy during the encodes (0: none)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from indexer.encoders.dense import DenseModel
    from indexer.encoders.openvino import cpu_flags, native_bf16
    from indexer.encoders.tokens import tokenize_texts

    texts = beir_texts(args.dataset, args.limit)
    doc_ids = [json.loads(line)["_id"] for line in (data_dir() / args.dataset / "corpus.jsonl").read_text()
               .splitlines()[:len(texts)]]
    ids, _, _, _ = tokenize_texts(texts, MODEL)
    queries, qrels = ({}, {}) if args.limit else load_qrels(args.dataset, args.split)
    qvecs = {}
    if queries:
        qm = DenseModel(MODEL, "cpu", "float32", None, args.threads)  # as search encodes queries
        qids = sorted(queries)
        qv = qm.encode_texts([queries[k] for k in qids]).numpy()
        qvecs = dict(zip(qids, qv))

    with busy(args.busy_share):
        try:  # first: a broken fastembed venv fails before the long encodes, not after
            fe_vecs, fe_info = fastembed_run(texts, args.threads, args.fastembed_batch_size, warmup=32)
        except FastembedUnavailable as e:
            print(e)
            fe_vecs, fe_info = None, {"skipped": str(e)}

        with tempfile.TemporaryDirectory() as cache:
            settings = [("torch", "auto"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
            results = {}
            for backend, precision in settings:
                results[(backend, precision)] = stage_encode(texts, ids, args.threads, args.batch_tokens, backend,
                                                             precision, cache)
            bare_vecs, bare_s = bare_encode(texts, args.threads)
    rows, ref = [], None
    ref = results[("torch", "auto")][0]

    def row(name: str, vecs: np.ndarray, seconds: float, export: float) -> dict:
        cos = (vecs * ref).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(ref, axis=1)
        r = {"setting": name, "encode_s": round(seconds, 2), "docs_per_s": round(len(texts) / seconds, 1),
             "speedup_vs_bare_st": round(bare_s / seconds, 2), "cos_mean": round(float(cos.mean()), 5),
             "cos_min": round(float(cos.min()), 5), "export_s": round(export, 1)}
        if qvecs:
            r["dense_ndcg@10"] = dense_ndcg(args.dataset, doc_ids, vecs, qvecs, qrels)
        return r

    rows.append(row("sentence-transformers encode (fp32, bare)", bare_vecs, bare_s, 0.0))
    if fe_vecs is not None:
        rows.append(row(f"fastembed {fe_info['fastembed']} (onnxruntime fp32, batch {fe_info['batch_size']})",
                        fe_vecs, fe_info["encode_s"], fe_info["export_s"]))
    for (backend, precision), (vecs, seconds, export, label) in results.items():
        name = "encode stage, torch fp32" if backend == "torch" else f"encode stage, {label}"
        rows.append(row(name, vecs, seconds, export))
    print(markdown_table(rows, list(rows[0])))
    info = {"docs": len(texts), "threads": args.threads, "batch_tokens": args.batch_tokens,
            "busy_share": args.busy_share,
            "native_bf16": native_bf16(cpu_flags()), "machine": machine(), "dataset": args.dataset,
            "split": args.split if qvecs else None, "fastembed": fe_info}
    path = write_result("cpu_backends", {"rows": rows, **info}, args.out)
    path.with_suffix(".md").write_text(markdown_table(rows, list(rows[0])) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
