"""Dry-run cost estimate: tokens, GPU-hours, wall time, dollars and storage, before spending any.

Never loads model weights, never writes to a store or to ``index.dir``; only reads.

* ``chunks``: exact, from Parquet footers.
* Tokens (the model's tokenizer, special tokens included): a uniform sample of rows is tokenized
  and scaled to the rows to encode (``cost.sample_rows``; 0.2% off the exact count on SciFact), or,
  with ``exact``, every row is tokenized by Ray tasks on the cluster's CPUs.
* Incremental runs (a live version with the same vector settings, as the run itself decides):
  only new and changed rows get encoded, and which rows those are needs every row's content hash,
  which no sample can give. So every row is read and hashed (id, text, title, metadata: the same
  hash the pipeline's diff uses) and compared with the live version's hash manifest; tokens then
  come from a sample of the rows to encode (all of them when they are fewer than the sample).
  Reading and hashing took about 30 microseconds per SciFact row on one core here: 1/2000 of
  the CPU encode time of that row, but as much as a GPU's. So this process does it for small and
  mid-size corpora; ``exact`` runs the scan as Ray tasks on every CPU of the cluster.
* Encode time: tokens after truncation / throughput. Throughput is a profile measured by
  ``indexer bench`` on the target hardware, or a default derived from FLOPs: a transformer encoder
  costs ``2 * layers * (4 d^2 + 2 d d_ff)`` FLOPs per token for its matrix products plus
  ``4 * layers * d * s`` for attention over an ``s``-token sequence, and the device sustains a
  stated share of its datasheet peak (GPUs) or a measured rate (CPUs). A measured profile is
  converted the same way, so a corpus with longer chunks than the benchmarked one costs more per
  token.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .config import JobConfig, SparseKind, VectorStoreKind
from .encoders.models import embedding_dim, load_tokenizer, resolve_model, tokenizer_info
from .quantize import bytes_per_vector
from .sources.parquet import Plan, plan, read_fragment

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# Throughput
# ------------------------------------------------------------------------------------------

PEAK_TFLOPS: dict[str, tuple[float, str]] = {
    # Dense (no 2:4 sparsity) tensor-core peak in the dtype the encoder runs in (bf16; fp16 on T4).
    "H100": (989.0, "NVIDIA H100 SXM datasheet: BF16 tensor 1,979 TFLOP/s with sparsity, 989 dense"),
    "H100-PCIE": (756.0, "NVIDIA H100 PCIe datasheet: BF16 tensor 1,513 TFLOP/s with sparsity, 756 dense"),
    "H200": (989.0, "NVIDIA H200 SXM datasheet: BF16 tensor 1,979 TFLOP/s with sparsity, 989 dense"),
    "A100": (312.0, "NVIDIA A100 datasheet: BF16 tensor 312 TFLOP/s dense (624 with sparsity)"),
    "L4": (121.0, "NVIDIA L4 datasheet: BF16 tensor 242 TFLOP/s with sparsity, 121 dense"),
    "A10": (125.0, "NVIDIA A10 datasheet: BF16 tensor 125 TFLOP/s dense (250 with sparsity)"),
    "T4": (65.0, "NVIDIA T4 datasheet: FP16 tensor (mixed precision) 65 TFLOP/s; no BF16, set dense.dtype=float16"),
}
GPU_MFU = 0.25
"""Assumed share of the peak an encoder forward pass sustains (length-sorted batches, little
padding). An assumption, not a measurement: ``indexer bench`` on the GPU replaces it."""

CPU_GFLOPS_PER_CORE = 46.1
CPU_SOURCE = ("measured: `indexer bench` of the packaged MiniLM-L6 (fp32, 2 torch threads) on SciFact on a 2-core "
              "x86 VM, median pass of two runs of benchmarks/estimate_accuracy.py on 2026-11-25: 96.7 and 87.6 GFLOP/s "
              "(4.1k and 3.7k tokens/s at about 245-token chunks; the latest in "
              "benchmarks/results/estimate_accuracy.json); per core, times this machine's cores")

STARTUP_SECONDS = 90.0
"""Cluster and model start before the first batch (pods with cached images); added to wall time."""


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count of an encoder depends on, read from the model's config (no weights)."""

    layers: int
    hidden: int
    intermediate: int
    source: str

    def flops_per_token(self, seq_eff: float) -> float:
        """Forward FLOPs per token: matrix products (QKV, output, FFN) plus attention scores and mix."""
        dense = 2 * self.layers * (4 * self.hidden ** 2 + 2 * self.hidden * self.intermediate)
        attention = 4 * self.layers * self.hidden * seq_eff
        return float(dense + attention)


def model_shape(model_ref: str) -> ModelShape:
    """Layers, hidden and FFN size from the transformer's config.json; BERT-base when unavailable."""
    from .encoders.models import _transformer_subdir

    try:
        path = resolve_model(model_ref)
        cfg_path = Path(_transformer_subdir(path), "config.json") if os.path.isdir(path) else None
        if cfg_path is None or not cfg_path.exists():
            from transformers import AutoConfig

            c = AutoConfig.from_pretrained(path).to_dict()
        else:
            c = json.loads(cfg_path.read_text())
        hidden = int(c.get("hidden_size") or c.get("d_model") or c["dim"])
        layers = int(c.get("num_hidden_layers") or c.get("n_layers") or c["num_layers"])
        inter = int(c.get("intermediate_size") or c.get("hidden_dim") or 4 * hidden)
        return ModelShape(layers, hidden, inter, f"{model_ref} config.json")
    except Exception as e:  # noqa: BLE001 - hub names without a local copy
        log.warning("can't read the shape of %s (%s): assuming BERT-base (12 x 768, FFN 3072)", model_ref, e)
        return ModelShape(12, 768, 3072, "assumed BERT-base: model config not readable")


def effective_seq(lengths: np.ndarray) -> float:
    """Token-weighted mean sequence length, sum(s^2) / sum(s): what attention cost per token sees."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return float((lengths ** 2).sum() / lengths.sum()) if lengths.size and lengths.sum() else 0.0


def profile_path(cfg: JobConfig) -> Path:
    return Path(cfg.cost.profile_path or ".indexer/profiles.json")


def profile_key(gpu_type: str, model_ref: str) -> str:
    return f"{gpu_type}|{model_ref}"


def load_profile(cfg: JobConfig) -> dict[str, Any] | None:
    """The measured profile for (gpu_type, model), if ``indexer bench`` saved one."""
    p = profile_path(cfg)
    if not p.exists():
        return None
    return json.loads(p.read_text()).get(profile_key(cfg.cost.gpu_type, cfg.dense.model))


def throughput(cfg: JobConfig, seq_eff: float, shape: ModelShape | None = None) -> dict[str, Any]:
    """Encode tokens/s of one worker for chunks of effective length ``seq_eff``, with its basis."""
    shape = shape or model_shape(cfg.dense.model)
    fpt = shape.flops_per_token(seq_eff)
    gpu_type = cfg.cost.gpu_type
    prof = load_profile(cfg)
    if prof and prof.get("flops_per_s"):
        fps = float(prof["flops_per_s"])
        basis = "measured"
        source = (f"`indexer bench` at {prof.get('measured_at')} on {prof.get('device')}: "
                  f"{prof['tokens_per_s']:,.0f} tokens/s at {prof.get('seq_eff', 0):.0f}-token chunks, "
                  f"scaled to {seq_eff:.0f}-token chunks by FLOPs per token")
    elif prof:
        return {"tokens_per_s": float(prof["tokens_per_s"]), "basis": "measured", "flops_per_token": fpt,
                "seq_eff": round(seq_eff, 1), "source": f"`indexer bench` at {prof.get('measured_at')}"}
    elif gpu_type == "cpu":
        cores = os.cpu_count() or 1
        fps = CPU_GFLOPS_PER_CORE * 1e9 * cores
        basis, source = "derived", f"{CPU_GFLOPS_PER_CORE} GFLOP/s per core x {cores} cores ({CPU_SOURCE})"
    elif gpu_type in PEAK_TFLOPS:
        peak, sheet = PEAK_TFLOPS[gpu_type]
        fps = peak * 1e12 * GPU_MFU
        basis, source = "derived", f"{peak:g} TFLOP/s ({sheet}) x {GPU_MFU} assumed MFU"
    else:
        raise KeyError(f"no throughput for cost.gpu_type={gpu_type!r}: run `indexer bench` on that hardware "
                       f"or pick one of {['cpu', *sorted(PEAK_TFLOPS)]}")
    return {
        "tokens_per_s": fps / fpt,
        "basis": basis,
        "source": f"{source}; {fpt / 1e6:.1f} MFLOP/token ({shape.layers} layers, d={shape.hidden}, "
                  f"ffn={shape.intermediate}, {seq_eff:.0f}-token chunks)",
        "flops_per_s": fps,
        "flops_per_token": fpt,
        "seq_eff": round(seq_eff, 1),
    }


# ------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------

class _Reservoir:
    """A uniform sample of k rows from a stream of batches (algorithm R)."""

    COLUMNS = (schema.ID, schema.TEXT, schema.TITLE, schema.METADATA)

    def __init__(self, k: int, rng: random.Random):
        self.k, self.rng, self.seen = k, rng, 0
        self.rows: list[tuple] = []

    def offer(self, batch: dict[str, np.ndarray], idx) -> None:
        cols = [batch[c] for c in self.COLUMNS]
        for i in idx:
            self.seen += 1
            if len(self.rows) < self.k:
                self.rows.append(tuple(c[i] for c in cols))
            else:
                j = self.rng.randrange(self.seen)
                if j < self.k:
                    self.rows[j] = tuple(c[i] for c in cols)

    def columns(self) -> dict[str, np.ndarray]:
        return {c: np.array([r[n] for r in self.rows], dtype=object) for n, c in enumerate(self.COLUMNS)}


def _valid_mask(b: dict[str, np.ndarray]) -> np.ndarray:
    from .validate import row_reason

    return np.array([not (r or row_reason(i, t, bool(d))) for r, i, t, d in
                     zip(b[schema.REJECT_REASON], b[schema.ID], b[schema.TEXT], b[schema.DUPLICATE])], dtype=bool)


def sample_rows(p: Plan, cfg: JobConfig, n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """A uniform random sample of valid rows (whole corpus read when small, random row groups
    else) and the valid share of the rows read."""
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
    parts, read = [], 0
    for f in frags:
        b = read_fragment(f, cfg.corpus)
        read += len(b[schema.ID])
        ok = _valid_mask(b)
        parts.append({k: v[ok] for k, v in b.items()})
    if not parts:
        return {}, 1.0
    rows = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
    m = len(rows[schema.ID])
    if m > n:
        idx = np.array(sorted(rng.sample(range(m), n)))
        rows = {k: v[idx] for k, v in rows.items()}
    return rows, (m / read if read else 1.0)


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
    from .manifest import Layout
    from .pipeline import vector_spec
    from .sinks.factory import vector_store_factory

    if cfg.vector_store.kind in (VectorStoreKind.edge, VectorStoreKind.qdrant_local):
        layout = Layout(cfg.index.store_dir or cfg.index.dir)
        root = layout.vectors_root if cfg.vector_store.kind == VectorStoreKind.edge else (
            cfg.vector_store.qdrant.local_path or layout.qdrant_local_root)
        if not Path(root).exists():  # nothing indexed yet; opening would create the folder
            return None, []
    store = vector_store_factory(cfg, vector_spec(cfg, dim))()
    try:
        return store.get_alias(cfg.index.name), store.list_collections(cfg.index.name + "_v")
    finally:
        store.close()


def baseline(cfg: JobConfig, dim: int, full: bool = False) -> Baseline:
    """Full or incremental, decided exactly as ``indexer run`` decides (same function)."""
    from . import progress as prog
    from .manifest import Layout, version_number
    from .pipeline import decide
    from .storage import Storage

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


def scan_local(cfg: JobConfig, p: Plan, live: dict[str, str] | None, n: int, seed: int = 0) -> Scan:
    """Read and hash every row in this process; count new/changed/unchanged; sample both sets."""
    from .diff import diff_states
    from .progress import CHANGED, NEW, UNCHANGED
    from .storage import Storage
    from .validate import Validate

    t0 = time.perf_counter()
    rng = random.Random(seed)
    todo, every = _Reservoir(n, rng), _Reservoir(n, rng)
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
        from .diff import live_hashes

        return live_hashes(self.live_ref)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .diff import diff_states
        from .encoders.tokenize import document_texts, tokenize_texts
        from .progress import CHANGED, NEW, UNCHANGED

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


def scan_exact(cfg: JobConfig, p: Plan, live: dict[str, str] | None) -> Scan:
    """Read, validate, hash and tokenize every row with Ray tasks on the cluster's CPUs."""
    import ray

    from .pipeline import init_ray
    from .sources.parquet import ReadFragments, fragment_items
    from .storage import Storage
    from .validate import Validate

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


# ------------------------------------------------------------------------------------------
# Storage
# ------------------------------------------------------------------------------------------

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
    """Bytes of the index after the run: vectors (dense, HNSW links, sparse, payload) and text."""
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

def _token_lengths(cfg: JobConfig, sample: dict[str, np.ndarray]) -> tuple[np.ndarray, list[list[int]]]:
    """Tokens per sampled row before truncation (special tokens included) and the content ids."""
    from .encoders.tokenize import document_texts

    if not len(sample.get(schema.ID, [])):
        return np.zeros(0, dtype=np.int64), []
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    tok = load_tokenizer(cfg.dense.model)
    content = tok(document_texts(sample, cfg.dense.document_prefix), add_special_tokens=False,
                  verbose=False)["input_ids"]
    specials = len(info.prefix_ids) + len(info.suffix_ids)
    return np.array([len(c) + specials for c in content], dtype=np.int64), content


def estimate(cfg: JobConfig, exact: bool = False, workers: int | None = None, full: bool = False) -> dict[str, Any]:
    """The estimate as one JSON-able dict (see the module docstring). ``full`` estimates a rebuild."""
    from .encoders.sparse import bm25_weights

    dim = cfg.dense.dim or embedding_dim(cfg.dense.model)
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    base = baseline(cfg, dim, full)
    p = plan(cfg.corpus, check_duplicates=exact or base.mode == "incremental")
    chunks = sum(f.num_rows for f in p.fragments)
    n = cfg.cost.sample_rows

    scan: Scan | None = None
    if exact:
        scan = scan_exact(cfg, p, base.hashes)
        sample_all, _ = sample_rows(p, cfg, n)
        to_encode = scan.to_encode
        sample = sample_all if base.mode == "full" else {}
        method = "exact"
    elif base.mode == "incremental":
        scan = scan_local(cfg, p, base.hashes, n)
        sample_all, sample, to_encode = scan.sample_all, scan.sample, scan.to_encode
        method = (f"all {to_encode} rows to encode" if len(sample.get(schema.ID, [])) == to_encode
                  else f"sample of {len(sample[schema.ID])} of {to_encode} rows to encode")
    else:
        sample_all, valid_share = sample_rows(p, cfg, n)
        sample = sample_all
        to_encode = int(round(chunks * valid_share))
        method = f"sample of {len(sample.get(schema.ID, []))} rows"

    lens, content = _token_lengths(cfg, sample)
    lens_all, content_all = (lens, content) if sample_all is sample else _token_lengths(cfg, sample_all)
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
        "encode_seconds": round(encode_seconds, 3),
        "gpu_hours": round(gpu_hours, 6),
        "workers": n_workers,
        "wall_hours": round(gpu_hours / n_workers + STARTUP_SECONDS / 3600, 6),
        "cost_usd": round(gpu_hours * cfg.cost.gpu_hour_usd, 4),
        "gpu_hour_usd": cfg.cost.gpu_hour_usd,
        "gpu_hour_source": cfg.cost.gpu_hour_source,
        "storage": storage,
        "storage_usd_per_month": round(stored_gb * cfg.cost.storage_gb_month_usd, 4),
        "api_comparison_usd": api,
        "api_price_source": cfg.cost.api_price_source,
        "dense": {"dim": dim, "quantization": cfg.dense.quantization.value},
        "sparse": {"kind": cfg.sparse.kind.value, "mean_nonzeros": round(nnz, 1)},
    }


# ------------------------------------------------------------------------------------------
# Bench
# ------------------------------------------------------------------------------------------

def _device_key(cfg: JobConfig, device: str, name: str) -> str:
    """Profile key of the measured hardware: 'cpu', or the configured / recognised GPU type."""
    if device == "cpu":
        return "cpu"
    if cfg.cost.gpu_type != "cpu":
        return cfg.cost.gpu_type
    upper = name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.replace("-", " ") in upper:
            return key
    return name


def bench_throughput(cfg: JobConfig, rows: int = 512, seconds: float = 20.0) -> dict[str, Any]:
    """Measure tokens/s of the configured model on this machine's device; saved by ``indexer bench``.

    Same code path as the encode stage (pre-tokenized ids, token-budget batches, the run's thread
    count on CPU) on a sample of the configured corpus, after a warm-up pass; passes of one
    forward batch each for at least ``seconds``, and the median pass is the profile.
    """
    import torch

    from .encoders.dense import DenseModel
    from .encoders.tokenize import document_texts, tokenize_texts
    from .pipeline import plan_placement

    p = plan(cfg.corpus, check_duplicates=False)
    sample, _ = sample_rows(p, cfg, rows)
    texts = document_texts(sample, cfg.dense.document_prefix)
    device = "cuda" if torch.cuda.is_available() and cfg.encode.device != "cpu" else "cpu"
    cores = float(os.cpu_count() or 1)
    placement = plan_placement(cfg, {"CPU": cores}, [{"CPU": cores}])
    threads = placement.torch_threads or int(cores)
    model = DenseModel(cfg.dense.model, device, cfg.dense.dtype, cfg.dense.max_seq_length,
                       threads if device == "cpu" else None)
    ids, _, _, _ = tokenize_texts(texts, cfg.dense.model, cfg.dense.max_seq_length)
    # Length-sorted slices of about one forward pass each, like the batches of a large block, so
    # the clock is checked often and padding stays what the pipeline sees.
    ids.sort(key=len, reverse=True)
    slices, start = [], 0
    while start < len(ids):
        rows_per = max(1, cfg.encode.tokens_per_batch(device) // max(1, len(ids[start])))
        slices.append(ids[start:start + rows_per])
        start += rows_per
    random.Random(0).shuffle(slices)  # a short measurement sees long and short chunks alike
    model.embed_ids(max(slices, key=len), cfg.encode.tokens_per_batch(device))  # warm-up: the first full-size pass is slow
    shape = model_shape(cfg.dense.model)
    rates, measured, passes, t0 = [], [], 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or passes == 0:
        part = slices[passes % len(slices)]
        r0, p0 = model.real_tokens, time.perf_counter()
        model.embed_ids(part, cfg.encode.tokens_per_batch(device))
        if device == "cuda":
            torch.cuda.synchronize()
        lengths = np.array([len(x) for x in part])
        rates.append((model.real_tokens - r0) * shape.flops_per_token(effective_seq(lengths))
                     / (time.perf_counter() - p0))
        measured.extend(lengths)
        passes += 1
    elapsed = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu x{threads} threads"
    seq_eff = effective_seq(np.array(measured))
    fpt = shape.flops_per_token(seq_eff)
    # The median pass: on a shared machine a burst of someone else's work slows a few passes,
    # and the profile should describe the hardware, not the burst.
    fps = float(np.median(rates))
    return {"tokens_per_s": fps / fpt, "seq_eff": round(seq_eff, 1), "flops_per_token": fpt, "flops_per_s": fps,
            "tokens_per_s_mean": sum(measured) / elapsed, "passes": passes,
            "device": name, "threads": threads if device == "cpu" else None, "rows": len(measured),
            "seconds": round(elapsed, 2), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": cfg.dense.model, "dtype": cfg.dense.dtype, "gpu_type": _device_key(cfg, device, name)}


def save_profile(cfg: JobConfig, prof: dict[str, Any]) -> Path:
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = json.loads(path.read_text()) if path.exists() else {}
    profiles[profile_key(prof.get("gpu_type", cfg.cost.gpu_type), cfg.dense.model)] = prof
    path.write_text(json.dumps(profiles, indent=2) + "\n")
    return path
