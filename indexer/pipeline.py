"""The indexing job: the only module that wires sources, validation, encoders and sinks together.

    plan (footers, duplicate ids) -> read -> validate -> tokenize -> encode (actor pool) -> write
    -> verify counts -> publish alias -> run manifest

Everything here runs on the driver except the Ray Data stages, which run as tasks and actors
sized from the cluster's resources (never hard-coded).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import schema
from .config import JobConfig, Quantization, SparseKind, dump_config
from .encoders.models import embedding_dim, load_tokenizer, resolve_model, tokenizer_info
from .manifest import Layout, new_run_id, version_name, version_number
from .quantize import calibrate
from .sinks.base import VectorSpec, make_datasink
from .sinks.factory import is_single_writer, text_store_factory, vector_store_factory
from .sources.parquet import Plan, ReadFragments, fragment_items, plan, read_fragment
from .stats import StageReporter, start_stats_actor
from .storage import Storage
from .validate import Validate, rejects_table

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """The run finished but a gate failed (counts, verification); the alias did not move."""

    def __init__(self, message: str, manifest: dict[str, Any]):
        super().__init__(message)
        self.manifest = manifest


# ------------------------------------------------------------------------------------------
# Ray and resources
# ------------------------------------------------------------------------------------------

def init_ray(cfg: JobConfig) -> None:
    """Connect to the cluster (``ray.address`` or ``RAY_ADDRESS``), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    # Inside a submitted job Ray merges the job's runtime env with this one and refuses keys set in
    # both (jobs/runtime_env.yaml sets these too): the job's values win.
    job_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    env = {k: v for k, v in env.items() if k not in (job_env.get("env_vars") or {})}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
    else:
        if cfg.ray.object_store_mb:
            kwargs["object_store_memory"] = cfg.ray.object_store_mb * 1024 * 1024
        ray.init(include_dashboard=False, runtime_env={"env_vars": env}, **kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False


@dataclass
class EncodePlacement:
    """How many encoder actors, with what resources; derived from the cluster."""

    workers: int
    max_workers: int
    num_gpus: float
    num_cpus: float
    torch_threads: int | None
    device: str
    task_cpus: float = 1.0  # CPU slots of each read / validate / tokenize / write task
    feed_cpus_per_gpu: float | None = None  # GPU clusters: CPUs per GPU left to read / tokenize tasks


MIN_FEED_CPUS_PER_GPU = 8.0
"""Below this many CPUs per GPU left for read/tokenize tasks, tokenization may starve the GPUs: a
fast tokenizer does about 0.5M tokens/s per core (BERT WordPiece, 256-token chunks) and one H100
is expected to encode 2.5M (BERT-base) to 6M (MiniLM-L6) tokens/s, i.e. 5 to 12 cores per GPU."""


def _gpu_actor_cpus(cluster: dict[str, float], nodes: list[dict[str, float]], share: float) -> float:
    """CPU slots per GPU actor: one (the thread feeding its GPU), but a GPU node's encoder actors
    together take at most half of its CPUs, so read and tokenize tasks keep the other half."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0.0) > 0] or [cluster]
    cpus = 1.0
    for n in gpu_nodes:
        actors = max(1, int(n.get("GPU", 0.0) / share + 1e-6))
        cpus = min(cpus, n.get("CPU", 0.0) / 2 / actors)
    return max(0.01, int(cpus * 100) / 100)


def plan_placement(cfg: JobConfig, cluster: dict[str, float], nodes: list[dict[str, float]]) -> EncodePlacement:
    """Size the encoder pool from cluster resources.

    GPU clusters: one actor per GPU, or one per ``gpus_per_worker`` share (0.5 or 0.25: several
    actors per GPU, for small models), 1 CPU each but at most half of a GPU node's CPUs for all its
    actors, so tokenize tasks keep the rest (a warning when under ``MIN_FEED_CPUS_PER_GPU`` per GPU
    remain; ``benchmarks/gpu_throughput.py`` measures how many one GPU needs). CPU clusters:
    one actor per node, leaving at least one CPU per node for read/tokenize tasks, with torch
    threads matching the node's cores on small nodes (an actor with 1 CPU would otherwise get 1
    thread). A node with fewer than 2 CPUs can't hold a whole-CPU actor and a whole-CPU task, so
    there the actor and the CPU-stage tasks take half of the smallest node's CPUs each: one actor
    and one task share each such node instead of the actor starving the reads.
    """
    e = cfg.encode
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = gpus > 0 and e.device != "cpu"
    if use_gpu:
        share = e.gpus_per_worker or 1.0
        workers = e.workers or max(1, int(gpus / share + 1e-6))  # 3 / 0.1 is 29.999...
        cpus = e.cpus_per_worker or _gpu_actor_cpus(cluster, nodes, share)
        feed = (float(cluster.get("CPU", 0.0)) - workers * cpus) / gpus
        if feed < MIN_FEED_CPUS_PER_GPU:
            log.warning("only %.1f CPUs per GPU are left for read/tokenize tasks: the GPUs may wait for "
                        "tokenization; use nodes with more CPUs per GPU or fewer encoder actors", feed)
        return EncodePlacement(workers, e.max_workers or workers, share, cpus, e.torch_threads, "cuda",
                               feed_cpus_per_gpu=round(feed, 2))
    node_cpus = [n.get("CPU", 0.0) for n in nodes if n.get("CPU", 0.0) > 0] or [float(cluster.get("CPU", 1.0))]
    smallest = min(node_cpus)
    if smallest < 2:
        cpus = e.cpus_per_worker or smallest / 2
        task_cpus = max(0.05, min(1.0, smallest - cpus))
    else:
        cpus = e.cpus_per_worker or max(1.0, smallest - max(1.0, smallest // 8))
        task_cpus = 1.0
    workers = e.workers or len(node_cpus)
    threads = e.torch_threads or (max(1, int(smallest)) if smallest <= 4 else int(cpus))
    return EncodePlacement(workers, e.max_workers or workers, 0.0, cpus, threads, "cpu", task_cpus)


def _cluster() -> tuple[dict[str, float], list[dict[str, float]]]:
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return ray.cluster_resources(), nodes


# ------------------------------------------------------------------------------------------
# Calibration (driver-side samples; weights only on actors)
# ------------------------------------------------------------------------------------------

def _sample_rows(p: Plan, cfg: JobConfig, n: int) -> dict[str, np.ndarray]:
    """First valid rows of the corpus, read on the driver (Parquet only, no model)."""
    from .validate import row_reason

    parts, have = [], 0
    for frag in p.fragments:
        b = read_fragment(frag, cfg.corpus)
        ok = np.array([not (r or row_reason(i, t, bool(d))) for r, i, t, d in
                       zip(b[schema.REJECT_REASON], b[schema.ID], b[schema.TEXT], b[schema.DUPLICATE])], dtype=bool)
        b = {k: v[ok] for k, v in b.items()}
        parts.append(b)
        have += int(ok.sum())
        if have >= n:
            break
    if not parts:
        return {}
    out = {k: np.concatenate([x[k] for x in parts])[:n] for k in parts[0]}
    return out


def bm25_params(cfg: JobConfig, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    from .encoders.sparse import average_length
    from .encoders.tokenize import document_texts

    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    avg = cfg.sparse.avg_len
    if avg is None:
        texts = document_texts(sample, cfg.dense.document_prefix) if sample else [""]
        tok = load_tokenizer(cfg.dense.model)
        avg = max(1.0, average_length(tok(texts, add_special_tokens=False)["input_ids"]))
    return {"k1": cfg.sparse.k1, "b": cfg.sparse.b, "avg_len": float(avg), "special_ids": list(info.special_ids)}


def _encode_params(cfg: JobConfig, placement: EncodePlacement, dim: int, quantization: str,
                   calibration: dict | None) -> dict[str, Any]:
    return {
        "model": cfg.dense.model,
        "device": placement.device,
        "dtype": cfg.dense.dtype,
        "attention": cfg.dense.attention,
        "backend": cfg.dense.backend,
        "max_seq_length": cfg.dense.max_seq_length,
        "torch_threads": placement.torch_threads,
        "batch_tokens": cfg.encode.tokens_per_batch(placement.device),
        "dim": dim,
        "quantization": quantization,
        "calibration": calibration,
        "rescore": cfg.dense.rescore,
        "document_prefix": cfg.dense.document_prefix,
        "splade_model": cfg.sparse.model if cfg.sparse.kind == SparseKind.splade else None,
        "splade_max_seq_length": cfg.sparse.max_seq_length,
    }


def _encode_stage(ds, cfg: JobConfig, placement: EncodePlacement, params: dict, reporter: StageReporter):
    from .encoders.dense import Encode

    concurrency = placement.workers if placement.max_workers == placement.workers else (
        placement.workers, placement.max_workers)
    remote_args: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1}
    if placement.workers > 1:
        remote_args["scheduling_strategy"] = "SPREAD"
    return ds.map_batches(
        Encode,
        fn_constructor_kwargs={"params": params, "reporter": reporter},
        batch_size=cfg.encode.block_rows,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=placement.num_cpus,
        num_gpus=placement.num_gpus or None,
        **remote_args,
    )


def _rows_dataset(fragments, cfg: JobConfig, rejects_dir: str | None, storage: Storage, reporter: StageReporter,
                  task_cpus: float = 1.0):
    import ray

    from .encoders.tokenize import Tokenize

    ds = ray.data.from_items(fragment_items(fragments), override_num_blocks=max(1, len(fragments)))
    ds = ds.map_batches(ReadFragments(cfg.corpus, reporter), batch_size=1, batch_format="numpy", num_cpus=task_cpus)
    ds = ds.map_batches(Validate(rejects_dir, storage, reporter), batch_size=None, batch_format="numpy",
                        num_cpus=task_cpus)
    return ds, Tokenize


def calibrate_dense(cfg: JobConfig, p: Plan, placement: EncodePlacement, dim: int, storage: Storage) -> dict | None:
    """Per-dimension ranges for int8/uint8 (and binary rescoring) from a sample of the corpus."""
    q = cfg.dense.quantization
    if q == Quantization.none or (q == Quantization.binary and not cfg.dense.rescore):
        return None
    kind = "uint8" if q == Quantization.uint8 else "int8"
    need, frags = 0, []
    for f in p.fragments:
        frags.append(f)
        need += f.num_rows
        if need >= cfg.dense.calibration_sample:
            break
    reporter = StageReporter()
    ds, Tokenize = _rows_dataset(frags, cfg, None, storage, reporter, placement.task_cpus)
    ds = ds.limit(cfg.dense.calibration_sample)
    ds = ds.map_batches(Tokenize(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, None),
                        batch_size=None, batch_format="numpy", num_cpus=placement.task_cpus)
    params = _encode_params(cfg, placement, dim, "none", None) | {"splade_model": None}
    ds = _encode_stage(ds, cfg, placement, params, reporter)
    vecs = [b[schema.DENSE] for b in ds.select_columns([schema.DENSE]).iter_batches(batch_format="numpy")]
    sample = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    if not len(sample):
        return None
    return calibrate(sample, kind, cfg.dense.calibration_quantile).to_json()


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------

def vector_spec(cfg: JobConfig, dim: int) -> VectorSpec:
    q = cfg.dense.quantization.value
    return VectorSpec(dim=dim, quantization=q, sparse=cfg.sparse.kind != SparseKind.none,
                      sparse_idf=cfg.sparse.kind == SparseKind.bm25,
                      rescore=(q == "binary" and cfg.dense.rescore))



def _merge_rejects(records_rejects: pa.Table, p: Plan, store_rejects: list[tuple[str, str]],
                   where: dict[str, tuple[str, int]] | None = None) -> pa.Table:
    """All rejects of the run: validation parts (unique by file and row), bad files, store refusals
    (located by ``where``: chunk id -> (file, row) of the run's rows)."""
    where = where or {}
    tables = [records_rejects]
    for bf in p.bad_files:
        if bf.num_rows:
            ids = bf.ids or [None] * bf.num_rows
            tables.append(rejects_table(ids, [bf.file] * bf.num_rows, range(bf.num_rows), [bf.reason] * bf.num_rows))
        else:
            tables.append(rejects_table([None], [bf.file], [None], [bf.reason]))
    if store_rejects:
        reasons: dict[str, list[str]] = {}
        for i, r in store_rejects:  # one row per chunk, even when both stores refused it
            if r not in reasons.setdefault(i, []):
                reasons[i].append(r)
        ids = list(reasons)
        tables.append(rejects_table(ids, [where.get(i, (None, None))[0] for i in ids],
                                    [where.get(i, (None, None))[1] for i in ids],
                                    ["store refused: " + "; ".join(reasons[i]) for i in ids]))
    table = pa.concat_tables([t.cast(schema.REJECTS_SCHEMA) for t in tables])
    seen, keep = set(), []
    for i, (f, r, idv) in enumerate(zip(table.column("file").to_pylist(), table.column("row").to_pylist(),
                                        table.column("id").to_pylist())):
        key = (f, r) if r is not None else (f, idv, i)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())) if len(keep) != len(table) else table


class RecordWritten:
    """Called by write tasks once every store acknowledged a block: records (file, row) as written."""

    def __init__(self, storage: Storage, directory: str):
        self.storage = storage
        self.directory = directory

    def __call__(self, batch: dict[str, np.ndarray]) -> None:
        from .progress import WRITTEN_SCHEMA, write_part

        t = pa.Table.from_arrays([pa.array(list(batch[schema.FILE]), pa.string()),
                                  pa.array(batch[schema.ROW], pa.int64())], schema=WRITTEN_SCHEMA)
        write_part(self.storage, self.directory, t)


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


def decide(cfg: JobConfig, storage: Storage, layout: Layout, live: str | None, existing: list[str],
           full: bool) -> RunPlan:
    """Full or incremental, which collection, and whether an interrupted run is resumed."""
    from .manifest import read_version
    from .progress import fingerprint_json, read_state

    fp = fingerprint_json(cfg.vector_fingerprint())
    state = read_state(storage, layout, cfg.index.name)
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


def run(cfg: JobConfig, *, full: bool = False, store_factories: tuple | None = None) -> dict[str, Any]:
    """Index the corpus; returns the run manifest (also written under ``index.dir/runs``).

    Incremental by default against a live version with the same vector settings; a full build
    writes a new version and moves the alias after the verification gate. An interrupted run is
    resumed by running the same command again. Raises :class:`RunFailed` when the gate fails.
    ``store_factories`` (vector, text) replaces the configured stores (tests inject faults so).
    """
    import ray

    from . import progress as prog
    from .diff import Diff
    from .verify import check_counts, check_sample, gate

    t_start = time.time()
    storage = Storage(cfg.corpus.s3)
    layout = Layout(cfg.index.dir)
    stages: dict[str, Any] = {}

    t0 = time.perf_counter()
    init_ray(cfg)
    stages["ray_init"] = {"seconds": round(time.perf_counter() - t0, 3)}

    t0 = time.perf_counter()
    p = plan(cfg.corpus)
    stages["plan"] = {"rows": p.total_rows, "files": len(p.files), "fragments": len(p.fragments),
                      "seconds": round(time.perf_counter() - t0, 3)}

    model_dim = embedding_dim(cfg.dense.model)
    dim = cfg.dense.dim or model_dim
    if dim > model_dim:
        from .config import ConfigError

        raise ConfigError(f"dense.dim={dim} is larger than the model's dimension {model_dim} ({cfg.dense.model})")
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    cluster, nodes = _cluster()
    placement = plan_placement(cfg, cluster, nodes)
    log.info("encoder pool: %s", placement)

    spec = vector_spec(cfg, dim)
    if store_factories:
        vfac, tfac = store_factories
    else:
        vfac, tfac = vector_store_factory(cfg, spec), text_store_factory(cfg)
    vstore, tstore = vfac(), tfac()
    try:
        existing = sorted(set(vstore.list_collections(cfg.index.name + "_v")) |
                          set(tstore.list_collections(cfg.index.name + "_v")), key=version_number)
        live = vstore.get_alias(cfg.index.name)
    finally:
        vstore.close()
        tstore.close()
    rp = decide(cfg, storage, layout, live, existing, full)
    log.info("run %s: %s into %s (%s)", rp.run_id, rp.mode, rp.collection, rp.reason)

    t0 = time.perf_counter()
    if not rp.resumed and rp.mode == "full":
        sample = _sample_rows(p, cfg, 2000) if cfg.sparse.kind == SparseKind.bm25 else {}
        rp.bm25 = bm25_params(cfg, sample) if cfg.sparse.kind == SparseKind.bm25 else None
        rp.calibration = calibrate_dense(cfg, p, placement, dim, storage)
    stages["calibrate"] = {"seconds": round(time.perf_counter() - t0, 3)}
    prog.write_state(storage, layout, cfg.index.name, {
        "run_id": rp.run_id, "mode": rp.mode, "collection": rp.collection, "live_before": rp.live_before,
        "status": "running", "fingerprint": prog.fingerprint_json(cfg.vector_fingerprint()),
        "calibration": rp.calibration, "bm25": rp.bm25, "started_at": time.time()})

    live_hashes = prog.read_hashes(storage, layout, rp.live_before) if (
        rp.mode == "incremental" and rp.live_before) else None
    live_ref = ray.put(prog.hashes_as_dict(live_hashes)) if live_hashes is not None else None

    # Resume: skip fragments an earlier attempt of this run finished.
    records = prog.load_records(storage, layout, rp.run_id) if rp.resumed else None
    done = records.completed_fragments(p.fragments) if records else set()
    todo = [f for f in p.fragments if f.key not in done]

    stats_actor = start_stats_actor()
    reporter = StageReporter(stats_actor)
    ds, Tokenize = _rows_dataset(todo, cfg, layout.rejects_parts(rp.run_id), storage, reporter, placement.task_cpus)
    ds = ds.map_batches(Diff(live_ref, prog.rows_dir(layout, rp.run_id), storage, reporter),
                        batch_size=None, batch_format="numpy", num_cpus=placement.task_cpus)
    ds = ds.map_batches(Tokenize(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, rp.bm25,
                                 reporter), batch_size=None, batch_format="numpy", num_cpus=placement.task_cpus)
    ds = _encode_stage(ds, cfg, placement, _encode_params(cfg, placement, dim, spec.quantization, rp.calibration),
                       reporter)
    sink = make_datasink(
        [("vectors", vfac, rp.collection, is_single_writer(vfac)), ("text", tfac, rp.collection, is_single_writer(tfac))],
        rp.run_id, reporter, after_block=RecordWritten(storage, prog.written_dir(layout, rp.run_id)),
    )
    t0 = time.perf_counter()
    if todo:
        ds.write_datasink(sink, ray_remote_args={"num_cpus": placement.task_cpus})
    else:
        _finalize_only(sink)
    pipeline_seconds = time.perf_counter() - t0
    stage_stats = ray.get(stats_actor.snapshot.remote())
    ray.kill(stats_actor)

    # Records of this run (all attempts): the source of exact counts.
    records = prog.load_records(storage, layout, rp.run_id)
    store_rejects = [r for res in sink.results.values() for r in res.rejects]
    refused = {i for i, _ in store_rejects}
    current = records.rows
    where: dict[str, tuple[str, int]] = {}
    if refused:
        ids_now = current.column("id").to_pylist()
        where = {i: (f, r) for i, f, r in zip(ids_now, current.column("file").to_pylist(),
                                               current.column("row").to_pylist()) if i in refused}
        current = current.filter(pa.array([i not in refused for i in ids_now]))
    rejects = _merge_rejects(records.rejects, p, store_rejects, where)

    deleted = 0
    t0 = time.perf_counter()
    v2, t2 = vfac(), tfac()
    try:
        if refused:
            # A chunk one store refused must not stay in the other: it is a reject, not indexed.
            v2.delete(rp.collection, sorted(refused))
            t2.delete(rp.collection, sorted(refused))
            v2.finalize(rp.collection)
            t2.finalize(rp.collection)
        if rp.mode == "incremental" and live_hashes is not None:
            now = set(current.column("id").to_pylist())
            gone = [i for i in live_hashes.column("id").to_pylist() if i not in now and i not in refused]
            if gone:
                v2.delete(rp.collection, gone)
                t2.delete(rp.collection, gone)
                v2.finalize(rp.collection)
                t2.finalize(rp.collection)
            deleted = len(gone)
        stages["delete"] = {"rows": deleted, "seconds": round(time.perf_counter() - t0, 3)}
        prog.write_hashes(storage, layout, rp.collection, current)
        hashes = prog.hashes_as_dict(current)
        n_vectors, n_text = v2.count(rp.collection), t2.count(rp.collection)
        states = current.column("state").to_pylist()
        written_rows = {(f, r) for f, r, s in zip(current.column("file").to_pylist(),
                                                   current.column("row").to_pylist(), states) if s != prog.UNCHANGED}
        counts = {
            "input": p.total_rows,
            "indexed": n_vectors if n_vectors == n_text else min(n_vectors, n_text),
            "encoded": len(written_rows & records.written),
            "unchanged": sum(s == prog.UNCHANGED for s in states),
            "changed": sum(s == prog.CHANGED for s in states),
            "new": sum(s == prog.NEW for s in states),
            "deleted": deleted,
            "rejected": rejects.num_rows,
            "truncated": stage_stats.get("tokenize", {}).get("truncated", 0),
            "tokens": stage_stats.get("tokenize", {}).get("tokens", 0),
            "vector_store": n_vectors,
            "text_store": n_text,
        }
        t0 = time.perf_counter()
        checks = {"counts": check_counts(counts["input"] - counts["rejected"], n_vectors, n_text, len(hashes)),
                  "sample": check_sample(hashes, v2, t2, rp.collection, cfg.verify.sample_ids)}
        if cfg.verify.golden_queries and cfg.verify.golden_qrels:
            checks["golden"] = _golden_check(cfg, rp)
        result = gate(checks)
        stages["verify"] = {"seconds": round(time.perf_counter() - t0, 3)}
    finally:
        v2.close()
        t2.close()

    storage.write_parquet(layout.rejects(rp.run_id), rejects)
    for name, st in stage_stats.items():
        stages[name] = st
    stages["pipeline"] = {"rows": counts["encoded"], "seconds": round(pipeline_seconds, 3),
                          "rows_per_s": round(counts["encoded"] / max(pipeline_seconds, 1e-9), 2)}
    enc = stage_stats.get("encode", {})
    if enc.get("tokens"):
        stages["encode"]["padding_share"] = round(
            enc.get("padding_tokens", 0) / max(1, enc["tokens"] + enc.get("padding_tokens", 0)), 4)

    version = {
        "collection": rp.collection,
        "run_id": rp.run_id,
        "model": {"ref": cfg.dense.model, "path": resolve_model(cfg.dense.model), "dim": model_dim,
                  "max_seq_length": info.max_seq_length},
        "dense": {"dim": dim, "quantization": spec.quantization, "calibration": rp.calibration,
                  "rescore": spec.rescore, "query_prefix": cfg.dense.query_prefix},
        "sparse": {"kind": cfg.sparse.kind.value, "model": cfg.sparse.model, "bm25": rp.bm25},
        "text": {"analyzer": cfg.text_store.analyzer.value},
        "fingerprint": cfg.vector_fingerprint(),
        "count": counts["indexed"],
    }
    storage.write_json(layout.version_manifest(rp.collection), version)

    alias_moved, dropped = False, []
    if result.passed and rp.mode == "full":
        alias_moved, dropped = publish(cfg, vfac, tfac, storage, layout, rp.collection, existing)
    manifest = {
        "run_id": rp.run_id,
        "status": "succeeded" if result.passed else "failed",
        "failures": result.failures,
        "mode": rp.mode,
        "mode_reason": rp.reason,
        "resumed": rp.resumed,
        "skipped_fragments": len(done),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "seconds": round(time.time() - t_start, 3),
        "config": dump_config(cfg),
        "model": version["model"],
        "dense": version["dense"],
        "sparse": version["sparse"],
        "text": version["text"],
        "counts": counts,
        "rejects_path": layout.rejects(rp.run_id),
        "stages": stages,
        "verification": result.to_json(),
        "placement": placement.__dict__,
        "versions": {"before": rp.live_before, "built": rp.collection,
                     "after": rp.collection if (alias_moved or (rp.mode == "incremental" and result.passed))
                     else rp.live_before, "dropped": dropped},
        "alias_moved": alias_moved,
    }
    storage.write_json(layout.run_manifest(rp.run_id), manifest)
    prog.write_state(storage, layout, cfg.index.name, {"run_id": rp.run_id, "status": manifest["status"],
                                                       "collection": rp.collection, "finished_at": time.time()})
    storage.delete_prefix(layout.rejects_parts(rp.run_id))
    storage.delete_prefix(prog.rows_dir(layout, rp.run_id))
    storage.delete_prefix(prog.written_dir(layout, rp.run_id))
    if not result.passed:
        raise RunFailed("; ".join(result.failures), manifest)
    return manifest


def _finalize_only(sink) -> None:
    """Nothing left to encode (all fragments done or no input): still open and finalise the stores."""
    sink.on_write_start()

    class _WR:
        write_returns: list = []

    sink.on_write_complete(_WR())


def publish(cfg: JobConfig, vfac, tfac, storage: Storage, layout: Layout, collection: str,
            existing: list[str]) -> tuple[bool, list[str]]:
    """Point the alias at ``collection`` in both stores; keep the newest ``index.keep_versions``."""
    v, t = vfac(), tfac()
    dropped = []
    try:
        v.set_alias(cfg.index.name, collection)
        t.set_alias(cfg.index.name, collection)
        keep = sorted(set(existing) | {collection}, key=version_number)[-cfg.index.keep_versions:]
        for old in existing:
            if old not in keep:
                v.drop_collection(old)
                t.drop_collection(old)
                storage.delete_prefix(layout.hashes_dir(old))
                dropped.append(old)
    finally:
        v.close()
        t.close()
    return True, dropped


def _golden_check(cfg: JobConfig, rp: RunPlan) -> dict[str, Any]:
    from .eval import load_qrels, load_queries, run_eval
    from .search import Searcher
    from .verify import check_golden

    queries, qrels = load_queries(cfg.verify.golden_queries), load_qrels(cfg.verify.golden_qrels)

    def ndcg(collection: str) -> float:
        s = Searcher(cfg, collection=collection)
        try:
            return run_eval(s, queries, qrels, modes=["hybrid"])["modes"]["hybrid"]["ndcg@10"]
        finally:
            s.close()

    live = ndcg(rp.live_before) if rp.live_before and rp.live_before != rp.collection else None
    return check_golden(ndcg(rp.collection), live, cfg.verify.max_ndcg_drop)


def rollback(cfg: JobConfig, to: str | None = None) -> dict[str, Any]:
    """Move the alias back to the previous version (or to ``to``) in both stores."""
    spec = VectorSpec(dim=1, quantization="none", sparse=True)
    vfac, tfac = vector_store_factory(cfg, spec), text_store_factory(cfg)
    v, t = vfac(), tfac()
    try:
        live = v.get_alias(cfg.index.name)
        versions = sorted(set(v.list_collections(cfg.index.name + "_v")) & set(t.list_collections(cfg.index.name + "_v")),
                          key=version_number)
        if to is None:
            older = [c for c in versions if version_number(c) < version_number(live or "")]
            if not older:
                raise RuntimeError(f"no version older than {live} is kept (versions: {versions})")
            to = older[-1]
        if to not in versions:
            raise RuntimeError(f"version {to} is not present in both stores (versions: {versions})")
        v.set_alias(cfg.index.name, to)
        t.set_alias(cfg.index.name, to)
    finally:
        v.close()
        t.close()
    return {"alias": cfg.index.name, "from": live, "to": to, "versions": versions}
