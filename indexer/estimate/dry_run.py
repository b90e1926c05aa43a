"""The dry run: what ``indexer run`` would do with this config (full build or the delta against the
live version, as the run itself decides), its tokens, encode time, dollars and storage. Reads
only: never loads model weights, never writes to a store or to ``index.dir``.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema
from ..config import JobConfig, SparseKind, VectorStoreKind
from ..encoders.models import embedding_dim, tokenizer_info
from ..quantize import bytes_per_vector
from ..sources.parquet import CorpusPlan, plan_corpus, read_fragment, read_valid_rows
from .cost import effective_seq, gpu_hour_price, throughput
from .sample import Reservoir, token_lengths

log = logging.getLogger(__name__)

STARTUP_SECONDS = 90.0
"""Cluster and model start before the first batch (pods with cached images); added to wall time."""


# ------------------------------------------------------------------------------------------
# What the run would do: full build or delta against the live version
# ------------------------------------------------------------------------------------------

@dataclass
class Baseline:
    """The run's decision (full or incremental) and, when incremental, the live (id -> hash) manifest."""

    mode: str
    reason: str
    live: str | None
    hashes: dict[str, str] | None = None


def _live_version(cfg: JobConfig, dim: int) -> tuple[str | None, list[str]]:
    """The collection the alias serves and the versions present, read without writing anything."""
    from ..layout import Layout
    from ..stores.factory import vector_store_factory

    if cfg.vector_store.kind in (VectorStoreKind.edge, VectorStoreKind.qdrant_local):
        layout = Layout(cfg.index.store_dir or cfg.index.dir)
        root = layout.vectors_root if cfg.vector_store.kind == VectorStoreKind.edge else (
            cfg.vector_store.qdrant.local_path or layout.qdrant_local_root)
        if not Path(root).exists():  # nothing indexed yet; opening would create the folder
            return None, []
    store = vector_store_factory(cfg)()
    try:
        return store.get_alias(cfg.index.name), store.list_collections(cfg.index.name + "_v")
    finally:
        store.close()


def baseline(cfg: JobConfig, dim: int, full: bool = False) -> Baseline:
    """Full or incremental, decided exactly as ``indexer run`` decides (same function)."""
    from ..run import records as prog
    from ..layout import Layout, version_number
    from ..run.plan import decide
    from ..storage import Storage

    try:
        live, existing = _live_version(cfg, dim)
    except Exception as e:  # noqa: BLE001 - an unreachable server must not stop a dry run
        log.warning("can't read the live version from the vector store (%s): estimating a full build", e)
        return Baseline("full", f"live version unknown: {e}", None)
    storage, layout = Storage(cfg.corpus.s3), Layout(cfg.index.dir)
    rp = decide(cfg, storage, layout, live, sorted(existing, key=version_number), full)
    if rp.mode != "incremental" or not rp.live_before:
        return Baseline("full", rp.reason, live)
    hashes = prog.hashes_as_dict(prog.read_hashes(storage, layout, rp.live_before))
    return Baseline("incremental", rp.reason, rp.live_before, hashes)


@dataclass
class Scan:
    """Rows of the corpus by what the run would do with them."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: int = 0
    tokens: int | None = None  # exact scans only: tokens of the rows to encode
    tokens_encoded: int | None = None
    truncated: int | None = None
    sample: dict[str, np.ndarray] = field(default_factory=dict)  # rows to encode
    sample_all: dict[str, np.ndarray] = field(default_factory=dict)  # every valid row
    seconds: float = 0.0

    @property
    def to_encode(self) -> int:
        return self.new + self.changed


def scan_local(cfg: JobConfig, p: CorpusPlan, live: dict[str, str] | None, n: int, seed: int = 0) -> Scan:
    """Read and hash every row in this process; count new/changed/unchanged; sample both sets."""
    from ..stages.diff import diff_states
    from ..schema import CHANGED, NEW, UNCHANGED
    from ..storage import Storage
    from ..stages.validate import Validate

    t0 = time.perf_counter()
    rng = random.Random(seed)
    todo, every = Reservoir(n, rng), Reservoir(n, rng)
    validate = Validate(None, Storage(cfg.corpus.s3))  # no rejects dir: writes nothing
    s = Scan()
    for frag in p.fragments:
        b = read_fragment(frag, cfg.corpus)
        v = validate(b)
        states = diff_states(v[schema.ID], v[schema.HASH], live)
        s.rejected += len(b[schema.ID]) - len(v[schema.ID])
        s.new += states.count(NEW)
        s.changed += states.count(CHANGED)
        s.unchanged += states.count(UNCHANGED)
        todo.offer(v, [i for i, st in enumerate(states) if st != UNCHANGED])
        every.offer(v, range(len(states)))
    s.sample, s.sample_all = todo.columns(), every.columns()
    s.seconds = time.perf_counter() - t0
    return s


class CountTokens:
    """Ray Data stage for exact estimates: one row of counts per batch (diff states against the
    live manifest, then tokens of the rows to encode only)."""

    def __init__(self, model_ref: str, max_seq_length: int | None, prefix: str, live_ref: Any):
        self.model_ref, self.max_seq_length, self.prefix, self.live_ref = model_ref, max_seq_length, prefix, live_ref

    def _live(self) -> dict[str, str] | None:
        from ..stages.diff import live_hashes

        return live_hashes(self.live_ref)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..stages.diff import diff_states
        from ..encoders.tokens import document_texts, tokenize_texts
        from ..schema import CHANGED, NEW, UNCHANGED

        states = diff_states(batch[schema.ID], batch[schema.HASH], self._live())
        keep = np.array([st != UNCHANGED for st in states], dtype=bool)
        tokens = encoded = truncated = 0
        if keep.any():
            sub = {k: batch[k][keep] for k in (schema.TITLE, schema.TEXT)}
            ids, n_tok, trunc, _ = tokenize_texts(document_texts(sub, self.prefix), self.model_ref,
                                                  self.max_seq_length)
            tokens, truncated = int(n_tok.sum()), int(trunc.sum())
            encoded = int(sum(len(x) for x in ids))
        counts = {"new": states.count(NEW), "changed": states.count(CHANGED), "unchanged": states.count(UNCHANGED),
                  "tokens": tokens, "tokens_encoded": encoded, "truncated": truncated}
        return {k: np.array([v], dtype=np.int64) for k, v in counts.items()}


def scan_exact(cfg: JobConfig, p: CorpusPlan, live: dict[str, str] | None) -> Scan:
    """Read, validate, hash and tokenize every row with Ray tasks on the cluster's CPUs."""
    import ray

    from ..run.placement import init_ray
    from ..stages.read import ReadFragments, fragment_items
    from ..storage import Storage
    from ..stages.validate import Validate

    t0 = time.perf_counter()
    init_ray(cfg)
    live_ref = ray.put(live) if live is not None else None
    ds = ray.data.from_items(fragment_items(p.fragments), override_num_blocks=max(1, len(p.fragments)))
    ds = ds.map_batches(ReadFragments(cfg.corpus), batch_size=1, batch_format="numpy")
    ds = ds.map_batches(Validate(None, Storage(cfg.corpus.s3)), batch_size=None, batch_format="numpy")
    ds = ds.map_batches(CountTokens(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, live_ref),
                        batch_size=None, batch_format="numpy")
    s = Scan(tokens=0, tokens_encoded=0, truncated=0)
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        s.new += int(b["new"].sum())
        s.changed += int(b["changed"].sum())
        s.unchanged += int(b["unchanged"].sum())
        s.tokens += int(b["tokens"].sum())
        s.tokens_encoded += int(b["tokens_encoded"].sum())
        s.truncated += int(b["truncated"].sum())
    s.rejected = sum(f.num_rows for f in p.fragments) - s.new - s.changed - s.unchanged
    s.seconds = time.perf_counter() - t0
    return s


def deletion_guard(cfg: JobConfig, base: Baseline, p: CorpusPlan) -> dict[str, Any]:
    """The deletion guard's numbers and verdict for the run this estimate prices (as ``indexer run``
    computes them, from the same plan and the live hash manifest); ``refused`` carries its warning."""
    from ..layout import Layout
    from ..run import records
    from ..run.guard import assess, check_deletes
    from ..storage import Storage

    storage, layout = Storage(cfg.corpus.s3), Layout(cfg.index.dir)
    live_ids: list[str] = []
    live_files, live_count = None, None
    if base.live:
        live_ids = list(base.hashes) if base.hashes is not None else \
            records.read_hashes(storage, layout, base.live).column("id").to_pylist()
        if p.unreadable_files and base.mode == "incremental":
            live_files = records.read_hash_files(storage, layout, base.live)
        if not live_ids:
            live_count = _live_count(cfg, base.live)
    _, counts = assess(base.mode, live_ids, live_files, p.ids, {b.file for b in p.unreadable_files}, live_count)
    return check_deletes(counts, cfg.index.max_delete_fraction).to_json()


def _live_count(cfg: JobConfig, collection: str) -> int:
    from ..stores.factory import vector_store_factory

    store = vector_store_factory(cfg)()
    try:
        return store.count(collection)
    finally:
        store.close()


# ------------------------------------------------------------------------------------------
# Storage
# ------------------------------------------------------------------------------------------

def _text_index_bytes(sample: dict[str, np.ndarray], cfg: JobConfig) -> float:
    """Bytes per chunk of the BM25 index, measured by indexing the sample into a temp tantivy index."""
    try:
        from ..stores.tantivy_text import TantivyTextStore
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


def hnsw_link_bytes(m: int) -> float:
    """HNSW graph bytes per vector: layer 0 has 2m links of 4 bytes; upper layers add about 1/m of that."""
    return (2 * m) * 4 * (1 + 1 / max(1, m - 1))


def storage_estimate(cfg: JobConfig, chunks: int, sample: dict[str, np.ndarray], sparse_nnz: float,
                     dim: int) -> dict[str, Any]:
    """Bytes of the index after the run: vectors (dense, HNSW links, sparse, payload) and text."""
    q = cfg.dense.quantization.value
    rescore = q == "binary" and cfg.dense.rescore
    dense = chunks * bytes_per_vector(dim, q, rescore)
    hnsw = chunks * hnsw_link_bytes(cfg.vector_store.edge.hnsw_m)
    sparse = chunks * sparse_nnz * 8  # index (u32) + weight (f32) per non-zero
    payload = chunks * (np.mean([len(m_) for m_ in sample[schema.METADATA]]) + 120 if len(sample[schema.ID]) else 0)
    text_per_chunk = _text_index_bytes(sample, cfg) if len(sample[schema.ID]) else 0.0
    replicas = cfg.text_store.elasticsearch.replicas if cfg.text_store.kind.value == "elasticsearch" else 0
    text = chunks * text_per_chunk * (1 + replicas)
    vec_total = dense + hnsw + sparse + payload
    # Qdrant keeps quantized/float vectors and HNSW links in RAM; rescoring vectors and payload on disk.
    ram = (dense - (chunks * dim if rescore else 0)) + hnsw + sparse
    return {
        "chunks": int(chunks),
        "vector_bytes": int(vec_total),
        "vector_breakdown": {"dense": int(dense), "hnsw_links": int(hnsw), "sparse": int(sparse), "payload": int(payload)},
        "vector_ram_bytes": int(ram),
        "vector_disk_bytes": int(vec_total),
        "text_bytes": int(text),
        "text_bytes_per_chunk": round(text_per_chunk, 1),
        "text_replicas": replicas,
    }


# ------------------------------------------------------------------------------------------
# The estimate
# ------------------------------------------------------------------------------------------

def _significant(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits: a small run's hours and dollars are never rounded to 0."""
    return float(f"{x:.{digits}g}")


def estimate(cfg: JobConfig, exact: bool = False, workers: int | None = None, full: bool = False) -> dict[str, Any]:
    """The estimate as one JSON-able dict (see the module docstring). ``full`` estimates a rebuild."""
    from ..encoders.sparse import bm25_weights

    dim = cfg.dense.dim or embedding_dim(cfg.dense.model)
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    base = baseline(cfg, dim, full)
    # Ids are read whenever a version is live: the deletion guard compares them with it.
    p = plan_corpus(cfg.corpus, check_duplicates=exact or base.live is not None)
    chunks = sum(f.num_rows for f in p.fragments)
    n = cfg.cost.sample_rows

    scan: Scan | None = None
    if exact:
        scan = scan_exact(cfg, p, base.hashes)
        sample_all = read_valid_rows(p, cfg.corpus, n, seed=0)
        to_encode = scan.to_encode
        sample = sample_all if base.mode == "full" else {}
        method = "exact"
    elif base.mode == "incremental":
        scan = scan_local(cfg, p, base.hashes, n)
        sample_all, sample, to_encode = scan.sample_all, scan.sample, scan.to_encode
        method = (f"all {to_encode} rows to encode" if len(sample.get(schema.ID, [])) == to_encode
                  else f"sample of {len(sample[schema.ID])} of {to_encode} rows to encode")
    else:
        sample_all = read_valid_rows(p, cfg.corpus, n, seed=0)
        sample = sample_all
        to_encode = int(round(chunks * sample_all.valid_share))
        method = f"sample of {len(sample.get(schema.ID, []))} rows"

    lens, content = token_lengths(cfg, sample)
    lens_all, content_all = (lens, content) if sample_all is sample else token_lengths(cfg, sample_all)
    enc = np.minimum(lens, info.max_seq_length)
    if scan is not None and scan.tokens is not None:
        tokens, tokens_encoded = scan.tokens, scan.tokens_encoded
    elif len(lens):
        tokens = int(round(lens.mean() * to_encode))
        tokens_encoded = int(round(enc.mean() * to_encode))
    else:
        tokens = tokens_encoded = 0

    nnz = 0.0
    if cfg.sparse.kind == SparseKind.bm25 and len(content_all):
        idx, _ = bm25_weights(content_all, 1.2, 0.75, 100.0, info.special_ids)
        nnz = float(np.mean([len(i) for i in idx]))
    elif cfg.sparse.kind == SparseKind.splade:
        nnz = 150.0  # typical SPLADE document non-zeros after pruning (SPLADE v2/v3 papers report 100-200)

    # Exact incremental estimates sample no rows to encode: their lengths are taken as the corpus's.
    seq_eff = effective_seq(enc if len(enc) else np.minimum(lens_all, info.max_seq_length))
    tp = throughput(cfg, seq_eff or float(info.max_seq_length))
    tps = tp["tokens_per_s"]
    if cfg.sparse.kind == SparseKind.splade:
        tps /= 2.0  # a second transformer pass of similar size per chunk
    if scan is not None and scan.truncated is not None:
        truncated_share = scan.truncated / to_encode if to_encode else 0.0
    else:
        truncated_share = float((lens > info.max_seq_length).mean()) if len(lens) else 0.0
    encode_seconds = tokens_encoded / tps if tps else math.inf
    gpu_hours = encode_seconds / 3600
    hour_usd, hour_source = gpu_hour_price(cfg)
    n_workers = workers or cfg.encode.workers or 1
    index_chunks = to_encode + (scan.unchanged if scan is not None else 0)
    storage = storage_estimate(cfg, index_chunks, sample_all, nnz, dim) if len(sample_all.get(schema.ID, [])) else {}
    api = {name: round(tokens / 1e6 * price, 4) for name, price in cfg.cost.api_usd_per_million_tokens.items()}
    stored_gb = (storage.get("vector_bytes", 0) + storage.get("text_bytes", 0)) / 1e9
    delta = None
    if scan is not None:
        delta = {"new": scan.new, "changed": scan.changed, "unchanged": scan.unchanged,
                 "deleted": (len(base.hashes) - scan.changed - scan.unchanged) if base.hashes is not None else 0,
                 "rejected": scan.rejected, "scan_seconds": round(scan.seconds, 3),
                 "scan": "Ray tasks on the cluster's CPUs" if exact else "read and hashed in this process"}
    return {
        "chunks": int(chunks),
        "chunks_to_encode": int(to_encode),
        "guard": deletion_guard(cfg, base, p),
        "mode": base.mode,
        "mode_reason": base.reason,
        "live_version": base.live,
        "delta": delta,
        "files": len(p.files),
        "bad_files": [b.file for b in p.bad_files],
        "tokens": int(tokens),
        "tokens_encoded": int(tokens_encoded),
        "tokens_method": method,
        "mean_tokens_per_chunk": round(float(tokens / to_encode), 2) if to_encode else 0.0,
        "truncated_share": round(truncated_share, 4),
        "model": cfg.dense.model,
        "max_seq_length": info.max_seq_length,
        "device": cfg.cost.gpu_type,
        "throughput_tokens_per_s": round(tps, 1),
        "throughput_basis": tp["basis"],
        "throughput_source": tp["source"],
        "encode_seconds": _significant(encode_seconds),
        "gpu_hours": _significant(gpu_hours),
        "workers": n_workers,
        "wall_hours": round(gpu_hours / n_workers + STARTUP_SECONDS / 3600, 6),
        "cost_usd": _significant(gpu_hours * hour_usd),
        "gpu_hour_usd": hour_usd,
        "gpu_hour_source": hour_source,
        "storage": storage,
        "storage_usd_per_month": round(stored_gb * cfg.cost.storage_gb_month_usd, 4),
        "api_comparison_usd": api,
        "api_price_source": cfg.cost.api_price_source,
        "dense": {"dim": dim, "quantization": cfg.dense.quantization.value},
        "sparse": {"kind": cfg.sparse.kind.value, "mean_nonzeros": round(nnz, 1)},
    }
