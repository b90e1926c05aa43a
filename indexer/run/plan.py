"""Decisions taken before any row is read: which collection, full or incremental, resumed or not,
the dense vector shape, and the settings computed from a sample of the corpus (int8/uint8 ranges,
BM25 average length). Samples are read on the driver; model weights load only on actors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import schema
from ..config import ConfigError, JobConfig, Quantization, SparseKind
from ..encoders.models import embedding_dim, tokenizer_info
from ..layout import Layout, new_run_id, read_version, version_name, version_number
from ..quantize import calibrate
from ..schema import VectorSpec
from ..sources.parquet import CorpusPlan, read_valid_rows
from ..stages.read import rows_dataset
from ..stages.stats import StageReporter
from ..stages.tokenize import Tokenize
from ..storage import Storage
from ..stores.base import StoreTarget
from ..stages.encode import EncodeSpec
from .placement import EncodePlacement, encode_on
from .records import fingerprint_json, read_state


@dataclass
class RunPlan:
    """Decisions taken before any work: mode, target collection, resume."""

    run_id: str
    mode: str  # full | incremental
    collection: str
    live_before: str | None
    resumed: bool
    reason: str
    calibration: dict | None = None
    bm25: dict | None = None


@dataclass(frozen=True)
class DenseDims:
    """The model's embedding size, the size stored (``dense.dim`` truncates), the tokenizer's window."""

    model: int
    stored: int
    max_seq_length: int


def dense_dims(cfg: JobConfig) -> DenseDims:
    """Read the model's sizes (no weights); a ``dense.dim`` above the model's is a config error."""
    model_dim = embedding_dim(cfg.dense.model)
    dim = cfg.dense.dim or model_dim
    if dim > model_dim:
        raise ConfigError(f"dense.dim={dim} is larger than the model's dimension {model_dim} ({cfg.dense.model})")
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    return DenseDims(model_dim, dim, info.max_seq_length)


def vector_spec(cfg: JobConfig, dim: int) -> VectorSpec:
    q = cfg.dense.quantization.value
    return VectorSpec.build(dim, q, cfg.sparse.kind.value, q == "binary" and cfg.dense.rescore)


def stored_versions(cfg: JobConfig, vector_store: StoreTarget,
                    text_store: StoreTarget) -> tuple[list[str], str | None]:
    """Versions of the index in either store (oldest first) and the one the alias serves."""
    vectors, text = vector_store(), text_store()
    try:
        existing = sorted(set(vectors.list_collections(cfg.index.name + "_v")) |
                          set(text.list_collections(cfg.index.name + "_v")), key=version_number)
        live = vectors.get_alias(cfg.index.name)
    finally:
        vectors.close()
        text.close()
    return existing, live


def decide(cfg: JobConfig, storage: Storage, layout: Layout, live: str | None, existing: list[str],
           full: bool, resume: bool = True) -> RunPlan:
    """Full or incremental, which collection, and whether an interrupted run is resumed (never with
    ``resume`` False: its attempt was discarded)."""
    fp = fingerprint_json(cfg.vector_fingerprint())
    state = read_state(storage, layout, cfg.index.name) if resume else None
    if state and state.get("status") == "running" and state.get("fingerprint") == fp and (
            not full or state.get("mode") == "full"):
        return RunPlan(state["run_id"], state["mode"], state["collection"], state.get("live_before"), True,
                       "resuming an interrupted run", state.get("calibration"), state.get("bm25"))
    run_id = new_run_id()
    next_n = max((version_number(c) for c in existing), default=0) + 1
    new_collection = version_name(cfg.index.name, next_n)
    if full:
        return RunPlan(run_id, "full", new_collection, live, False, "--full")
    if not live:
        return RunPlan(run_id, "full", new_collection, live, False, "no live version")
    if not cfg.index.incremental:
        return RunPlan(run_id, "full", new_collection, live, False, "index.incremental is false")
    try:
        version = read_version(storage, layout, live)
    except FileNotFoundError:
        return RunPlan(run_id, "full", new_collection, live, False, "live version has no manifest")
    if fingerprint_json(version.get("fingerprint", {})) != fp:
        changed = sorted(k for k, v in cfg.vector_fingerprint().items() if version.get("fingerprint", {}).get(k) != v)
        return RunPlan(run_id, "full", new_collection, live, False, f"vector settings changed: {changed}")
    return RunPlan(run_id, "incremental", live, live, False, "live version with the same vector settings",
                   version["dense"].get("calibration"), version["sparse"].get("bm25"))


# ------------------------------------------------------------------------------------------
# Calibration (driver-side samples; weights only on actors)
# ------------------------------------------------------------------------------------------

BM25_SAMPLE_ROWS = 2000
"""Valid rows read to estimate the average document length for BM25 (when ``sparse.avg_len`` is unset)."""


def bm25_params(cfg: JobConfig, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    from ..encoders.sparse import average_length
    from ..encoders.tokens import content_ids, document_texts

    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    avg = cfg.sparse.avg_len
    if avg is None:
        # A corpus without one valid row (every row rejected) has no lengths to average.
        texts = document_texts(sample, cfg.dense.document_prefix) if sample and len(sample[schema.ID]) else [""]
        avg = max(1.0, average_length(content_ids(texts, cfg.dense.model)))
    return {"k1": cfg.sparse.k1, "b": cfg.sparse.b, "avg_len": float(avg), "special_ids": list(info.special_ids)}


def corpus_bm25(cfg: JobConfig, corpus: CorpusPlan) -> dict[str, Any] | None:
    """BM25 parameters of a new version (``sparse.kind=bm25``), from a sample of the corpus; None otherwise."""
    if cfg.sparse.kind != SparseKind.bm25:
        return None
    return bm25_params(cfg, read_valid_rows(corpus, cfg.corpus, BM25_SAMPLE_ROWS))


def export_texts(cfg: JobConfig, corpus: CorpusPlan, placement: EncodePlacement) -> tuple[str, ...] | None:
    """Corpus texts an int8 OpenVINO export calibrates on (a seeded sample of valid rows, read on the
    driver); None unless CPU encoders may run OpenVINO int8."""
    from ..encoders.openvino import CALIBRATION_TEXTS
    from ..encoders.tokens import document_texts

    d = cfg.dense
    if placement.device != "cpu" or d.precision != "int8" or d.backend not in ("auto", "openvino"):
        return None
    sample = read_valid_rows(corpus, cfg.corpus, CALIBRATION_TEXTS, seed=0)
    if not sample or not len(sample[schema.ID]):
        return None
    return tuple(document_texts(sample, d.document_prefix))


def export_on_cluster(cfg: JobConfig, placement: EncodePlacement, texts: tuple[str, ...] | None) -> dict[str, Any]:
    """The OpenVINO export (when the CPU encoders run OpenVINO) made by a task with the encoder's
    CPUs, on the cluster, before anything is encoded; other nodes export when their actor starts."""
    import ray

    from ..stages.encode import export_dense

    if placement.device != "cpu" or cfg.dense.backend not in ("auto", "openvino"):
        return {}
    spec = EncodeSpec.from_config(cfg, device=placement.device, torch_threads=placement.torch_threads, dim=None,
                                  quantization="none", calibration=None, export_texts=texts)
    return ray.get(ray.remote(export_dense).options(num_cpus=placement.num_cpus).remote(spec))


def needs_dense_calibration(cfg: JobConfig) -> bool:
    """Whether a full build encodes a sample first for the stored vectors' quantization ranges."""
    q = cfg.dense.quantization
    return not (q == Quantization.none or (q == Quantization.binary and not cfg.dense.rescore))


def calibrate_dense(cfg: JobConfig, corpus: CorpusPlan, placement: EncodePlacement, dim: int, storage: Storage,
                    texts: tuple[str, ...] | None = None) -> dict | None:
    """Per-dimension ranges for int8/uint8 (and binary rescoring) from a sample of the corpus."""
    if not needs_dense_calibration(cfg):
        return None
    q = cfg.dense.quantization
    kind = "uint8" if q == Quantization.uint8 else "int8"
    need, frags = 0, []
    for f in corpus.fragments:
        frags.append(f)
        need += f.num_rows
        if need >= cfg.dense.calibration_sample:
            break
    reporter = StageReporter()
    ds = rows_dataset(frags, cfg.corpus, None, storage, reporter, placement.task_cpus)
    ds = ds.limit(cfg.dense.calibration_sample)
    ds = Tokenize(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, None).apply(
        ds, num_cpus=placement.task_cpus)
    spec = EncodeSpec.from_config(cfg, device=placement.device, torch_threads=placement.torch_threads, dim=dim,
                                  quantization="none", calibration=None, export_texts=texts).dense_only()
    ds = encode_on(placement, ds, spec, cfg.encode.block_rows, reporter)
    vecs = [b[schema.DENSE] for b in ds.select_columns([schema.DENSE]).iter_batches(batch_format="numpy")]
    sample = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    if not len(sample):
        return None
    return calibrate(sample, kind, cfg.dense.calibration_quantile).to_json()
