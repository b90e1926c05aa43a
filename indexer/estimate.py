"""Dry-run cost estimate: tokens, GPU-hours, wall time, dollars and storage, before spending any.

Reads Parquet footers (exact chunk counts) and a sample of rows; tokenizes the sample with the
model's tokenizer; never loads model weights, never writes to a store or to ``index.dir``.
Throughput comes from a profile measured by ``indexer bench`` on the target hardware, or from the
built-in defaults below (each with its source).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .config import JobConfig, SparseKind
from .encoders.models import embedding_dim, load_tokenizer, tokenizer_info
from .quantize import bytes_per_vector
from .sources.parquet import Plan, plan, read_fragment

log = logging.getLogger(__name__)

# Dense encode throughput (tokens/s per device, ~256-token chunks, bf16 on GPU) by model class.
# "measured": benchmarks/gpu_throughput.py / benchmarks/cpu_pipeline.py in this repository.
# Other GPUs are scaled from the H100 measurement by dense bf16 tensor TFLOP/s from NVIDIA's
# datasheets (H100 SXM 989, A100 312, L4 121, A10G 70 (A10: 125 at sparsity / 2 ~ 62.5), T4 65 fp16).
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 70.0, "T4": 65.0}
DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "H100": {"tokens_per_s": {"minilm-l6": 6.0e6, "bert-base": 2.5e6},
             "source": "benchmarks/gpu_throughput.py target numbers on one H100 (see README results)"},
    "cpu": {"tokens_per_s": {"minilm-l6": 9.0e3, "bert-base": 1.8e3},
            "source": "benchmarks/cpu_pipeline.py on a 2-core x86 VM (see README results)"},
}


def model_class(model_ref: str) -> str:
    """Coarse size class used to pick a default throughput when no profile matches the model."""
    try:
        from .encoders.models import resolve_model

        cfg = json.loads(Path(resolve_model(model_ref), "config.json").read_text())
        layers, hidden = cfg.get("num_hidden_layers", 12), cfg.get("hidden_size", 768)
    except Exception:  # noqa: BLE001 - hub names without a local copy
        return "bert-base"
    return "minilm-l6" if hidden <= 384 and layers <= 6 else "bert-base"


def default_throughput(gpu_type: str, model_ref: str) -> tuple[float, str]:
    cls = model_class(model_ref)
    if gpu_type in DEFAULT_PROFILES:
        p = DEFAULT_PROFILES[gpu_type]
        return p["tokens_per_s"][cls], p["source"]
    if gpu_type in DATASHEET_TFLOPS:
        h = DEFAULT_PROFILES["H100"]["tokens_per_s"][cls]
        scale = DATASHEET_TFLOPS[gpu_type] / DATASHEET_TFLOPS["H100"]
        return h * scale, f"H100 measurement scaled by datasheet bf16 TFLOP/s ({gpu_type}: x{scale:.3f})"
    raise KeyError(f"no throughput profile for gpu_type={gpu_type!r}: run `indexer bench` on that hardware "
                   f"or pick one of {sorted(set(DEFAULT_PROFILES) | set(DATASHEET_TFLOPS))}")


def profile_path(cfg: JobConfig) -> Path:
    return Path(cfg.cost.profile_path or ".indexer/profiles.json")


def load_profile(cfg: JobConfig) -> dict[str, Any] | None:
    """The measured profile for (gpu_type, model), if ``indexer bench`` saved one."""
    p = profile_path(cfg)
    if not p.exists():
        return None
    profiles = json.loads(p.read_text())
    return profiles.get(f"{cfg.cost.gpu_type}|{cfg.dense.model}")


def sample_rows(p: Plan, cfg: JobConfig, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A uniform random sample of valid rows: whole corpus read when small, random row groups else."""
    rng = random.Random(seed)
    total = sum(f.num_rows for f in p.fragments)
    frags = list(p.fragments)
    if total > 10 * n:
        rng.shuffle(frags)
        picked, have = [], 0
        for f in frags:
            picked.append(f)
            have += f.num_rows
            if have >= 4 * n:
                break
        frags = picked
    parts = []
    for f in frags:
        b = read_fragment(f, cfg.corpus)
        ok = np.array([not r and i is not None and t is not None and bool(t.strip())
                       for r, i, t in zip(b[schema.REJECT_REASON], b[schema.ID], b[schema.TEXT])], dtype=bool)
        parts.append({k: v[ok] for k, v in b.items()})
    if not parts:
        return {}
    rows = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
    m = len(rows[schema.ID])
    if m > n:
        idx = np.array(sorted(rng.sample(range(m), n)))
        rows = {k: v[idx] for k, v in rows.items()}
    return rows


def _text_index_bytes(sample: dict[str, np.ndarray], cfg: JobConfig) -> float:
    """Bytes per chunk of the BM25 index, measured by indexing the sample into a temp tantivy index."""
    try:
        from .sinks.tantivy_text import TantivyTextStore
    except ImportError:
        return float(np.mean([len((t or "").encode()) for t in sample[schema.TEXT]])) * 1.5
    with tempfile.TemporaryDirectory() as tmp:
        store = TantivyTextStore(tmp, cfg.text_store)
        try:
            store.ensure_collection("estimate")
            store.upsert("estimate", {**sample, schema.HASH: np.array(["0" * 32] * len(sample[schema.ID]), dtype=object)})
            store.finalize("estimate")
        finally:
            store.close()
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return size / max(1, len(sample[schema.ID]))


def storage_estimate(cfg: JobConfig, chunks: int, sample: dict[str, np.ndarray], sparse_nnz: float,
                     dim: int) -> dict[str, Any]:
    q = cfg.dense.quantization.value
    rescore = q == "binary" and cfg.dense.rescore
    dense = chunks * bytes_per_vector(dim, q, rescore)
    m = cfg.vector_store.edge.hnsw_m
    hnsw = chunks * (2 * m) * 4 * (1 + 1 / max(1, m - 1))  # layer 0 has 2m links of 4 bytes; upper layers ~1/m
    sparse = chunks * sparse_nnz * 8  # index (u32) + weight (f32) per non-zero
    payload = chunks * (np.mean([len(m_) for m_ in sample[schema.METADATA]]) + 120 if len(sample[schema.ID]) else 0)
    text_per_chunk = _text_index_bytes(sample, cfg) if len(sample[schema.ID]) else 0.0
    replicas = cfg.text_store.elasticsearch.replicas if cfg.text_store.kind.value == "elasticsearch" else 0
    text = chunks * text_per_chunk * (1 + replicas)
    vec_total = dense + hnsw + sparse + payload
    # Qdrant keeps quantized/float vectors and HNSW links in RAM; rescoring vectors and payload on disk.
    ram = (dense - (chunks * dim if rescore else 0)) + hnsw + sparse
    return {
        "vector_bytes": int(vec_total),
        "vector_breakdown": {"dense": int(dense), "hnsw_links": int(hnsw), "sparse": int(sparse), "payload": int(payload)},
        "vector_ram_bytes": int(ram),
        "vector_disk_bytes": int(vec_total),
        "text_bytes": int(text),
        "text_bytes_per_chunk": round(text_per_chunk, 1),
        "text_replicas": replicas,
    }


def exact_tokens(cfg: JobConfig, p: Plan) -> tuple[int, int]:
    """Tokenize the whole corpus on the cluster's CPUs (Ray Data read + tokenize stages)."""
    import ray

    from .encoders.tokenize import Tokenize
    from .pipeline import init_ray
    from .sources.parquet import ReadFragments, fragment_items
    from .storage import Storage
    from .validate import Validate

    init_ray(cfg)
    ds = ray.data.from_items(fragment_items(p.fragments), override_num_blocks=max(1, len(p.fragments)))
    ds = ds.map_batches(ReadFragments(cfg.corpus), batch_size=1, batch_format="numpy")
    ds = ds.map_batches(Validate(None, Storage(cfg.corpus.s3)), batch_size=None, batch_format="numpy")
    ds = ds.map_batches(Tokenize(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, None),
                        batch_size=None, batch_format="numpy")
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    tokens = encoded = 0
    for b in ds.select_columns([schema.N_TOKENS]).iter_batches(batch_format="numpy"):
        n = b[schema.N_TOKENS].astype(np.int64)
        tokens += int(n.sum())
        encoded += int(np.minimum(n, info.max_seq_length).sum())
    return tokens, encoded


def estimate(cfg: JobConfig, exact: bool = False, workers: int | None = None) -> dict[str, Any]:
    """The estimate as one JSON-able dict (see module docstring)."""
    from .encoders.sparse import bm25_weights
    from .encoders.tokenize import document_texts

    p = plan(cfg.corpus, check_duplicates=False)
    chunks = sum(f.num_rows for f in p.fragments)
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    sample = sample_rows(p, cfg, cfg.cost.sample_rows)
    n_sample = len(sample.get(schema.ID, []))
    tok = load_tokenizer(cfg.dense.model)
    content = tok(document_texts(sample, cfg.dense.document_prefix), add_special_tokens=False,
                  verbose=False)["input_ids"] if n_sample else []
    specials = len(info.prefix_ids) + len(info.suffix_ids)
    lens = np.array([len(c) + specials for c in content], dtype=np.int64)
    if exact:
        tokens, tokens_encoded = exact_tokens(cfg, p)
        method = "exact"
    else:
        tokens = int(round(lens.mean() * chunks)) if n_sample else 0
        tokens_encoded = int(round(np.minimum(lens, info.max_seq_length).mean() * chunks)) if n_sample else 0
        method = f"sample of {n_sample} rows"
    nnz = 0.0
    if cfg.sparse.kind == SparseKind.bm25 and n_sample:
        idx, _ = bm25_weights(content, 1.2, 0.75, 100.0, info.special_ids)
        nnz = float(np.mean([len(i) for i in idx]))
    elif cfg.sparse.kind == SparseKind.splade:
        nnz = 150.0  # typical SPLADE document non-zeros after pruning (SPLADE v2/v3 papers report 100-200)

    prof = load_profile(cfg)
    if prof:
        tps, source = float(prof["tokens_per_s"]), f"measured by `indexer bench` at {prof.get('measured_at')} on {prof.get('device')}"
    else:
        tps, source = default_throughput(cfg.cost.gpu_type, cfg.dense.model)
    if cfg.sparse.kind == SparseKind.splade:
        tps /= 2.0  # a second transformer pass of similar size per chunk
    gpu_hours = tokens_encoded / tps / 3600 if tps else math.inf
    n_workers = workers or cfg.encode.workers or 1
    startup_h = 90 / 3600  # cluster + model start, measured ~60-90 s on pods with cached images
    dim = cfg.dense.dim or embedding_dim(cfg.dense.model)
    storage = storage_estimate(cfg, chunks, sample, nnz, dim) if n_sample else {}
    api = {name: round(tokens / 1e6 * price, 4) for name, price in cfg.cost.api_usd_per_million_tokens.items()}
    return {
        "chunks": int(chunks),
        "files": len(p.files),
        "bad_files": [b.file for b in p.bad_files],
        "tokens": int(tokens),
        "tokens_encoded": int(tokens_encoded),
        "tokens_method": method,
        "mean_tokens_per_chunk": round(float(lens.mean()), 2) if n_sample else 0.0,
        "truncated_share": round(float((lens > info.max_seq_length).mean()), 4) if n_sample else 0.0,
        "model": cfg.dense.model,
        "max_seq_length": info.max_seq_length,
        "device": cfg.cost.gpu_type,
        "throughput_tokens_per_s": tps,
        "throughput_source": source,
        "gpu_hours": round(gpu_hours, 6),
        "workers": n_workers,
        "wall_hours": round(gpu_hours / n_workers + startup_h, 6),
        "cost_usd": round(gpu_hours * cfg.cost.gpu_hour_usd, 4),
        "gpu_hour_usd": cfg.cost.gpu_hour_usd,
        "gpu_hour_source": cfg.cost.gpu_hour_source,
        "storage": storage,
        "api_comparison_usd": api,
        "api_price_source": cfg.cost.api_price_source,
        "dense": {"dim": dim, "quantization": cfg.dense.quantization.value},
        "sparse": {"kind": cfg.sparse.kind.value, "mean_nonzeros": round(nnz, 1)},
    }


def bench_throughput(cfg: JobConfig, rows: int = 512, seconds: float = 20.0) -> dict[str, Any]:
    """Measure tokens/s of the configured model on this machine's device; saved by ``indexer bench``."""
    import time

    import torch

    from .encoders.dense import DenseModel
    from .encoders.tokenize import document_texts, tokenize_texts
    from .pipeline import plan_placement

    p = plan(cfg.corpus, check_duplicates=False)
    sample = sample_rows(p, cfg, rows)
    texts = document_texts(sample, cfg.dense.document_prefix)
    device = "cuda" if torch.cuda.is_available() and cfg.encode.device != "cpu" else "cpu"
    threads = cfg.encode.torch_threads or (os.cpu_count() or 1)
    model = DenseModel(cfg.dense.model, device, cfg.dense.dtype, cfg.dense.max_seq_length,
                       threads if device == "cpu" else None)
    ids, _, _, _ = tokenize_texts(texts, cfg.dense.model, cfg.dense.max_seq_length)
    model.embed_ids(ids[: min(32, len(ids))], cfg.encode.batch_tokens)  # warm-up
    done_tokens, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done_tokens == 0:
        r0 = model.real_tokens
        model.embed_ids(ids, cfg.encode.batch_tokens)
        if device == "cuda":
            torch.cuda.synchronize()
        done_tokens += model.real_tokens - r0
    elapsed = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu x{threads} threads"
    return {"tokens_per_s": done_tokens / elapsed, "device": name, "rows": len(ids), "seconds": round(elapsed, 2),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": cfg.dense.model,
            "gpu_type": cfg.cost.gpu_type}


def save_profile(cfg: JobConfig, prof: dict[str, Any]) -> Path:
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = json.loads(path.read_text()) if path.exists() else {}
    profiles[f"{cfg.cost.gpu_type}|{cfg.dense.model}"] = prof
    path.write_text(json.dumps(profiles, indent=2) + "\n")
    return path
