"""The indexing job: the only module that wires sources, validation, encoders and stores together.

    plan (footers, duplicate ids) -> read -> validate -> diff -> tokenize -> encode (actor pool)
    -> write -> reconcile -> verify counts -> publish alias -> run manifest

``run`` calls one function per phase; they share a :class:`RunContext`. Everything here runs on
the driver except the Ray Data stages, which run as tasks and actors sized from the cluster's
resources (never hard-coded).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from .. import schema
from ..config import JobConfig, dump_config
from ..encoders.models import resolve_model
from ..layout import Layout, list_runs
from ..schema import VectorSpec
from ..sources.parquet import CorpusPlan, Fragment, plan_corpus
from ..stages.diff import Diff
from ..stages.encode import EncodeSpec
from ..stages.read import rows_dataset
from ..stages.stats import StageReporter, polling, start_stats_actor
from ..stages.tokenize import Tokenize
from ..storage import Storage
from ..stores.base import StoreTarget
from ..stores.datasink import make_datasink
from ..stores.factory import text_store_factory, vector_store_factory
from . import lease, records, resume, undo
from .guard import DeletePlan, GuardVerdict, RunRefused, assess, check_deletes
from .placement import EncodePlacement, cluster_resources, encode_on, init_ray, plan_placement
from .plan import (DenseDims, RunPlan, calibrate_dense, corpus_bm25, decide, dense_dims, export_on_cluster,
                   export_texts, needs_dense_calibration, stored_versions, vector_spec)
from .publish import publish
from .reconcile import (Reconciled, RecordWritten, count_rows, delete_chunks, delete_stale, gone_ids, kept_rows,
                        reconcile)
from .records import RunRecords
from .verify import GateResult, verify_version

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """The run finished but a gate failed (counts, verification); the alias did not move."""

    def __init__(self, message: str, manifest: dict[str, Any]):
        super().__init__(message)
        self.manifest = manifest


@dataclass
class RunContext:
    """What the phases after planning share: the config, where records live, the corpus, the dense
    sizes, the encoder pool, the stores and the run's plan; ``stages`` collects the manifest's timings."""

    cfg: JobConfig
    storage: Storage
    layout: Layout
    corpus: CorpusPlan
    dims: DenseDims
    placement: EncodePlacement
    spec: VectorSpec
    vector_store: StoreTarget
    text_store: StoreTarget
    existing: list[str]  # versions in either store before the run, oldest first
    plan: RunPlan
    started: float  # wall-clock start (time.time())
    stages: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, dict[str, Any]] = field(default_factory=dict)  # the corpus (resume.corpus_fingerprint)
    discarded: resume.Discarded | None = None  # an interrupted attempt on another corpus, discarded
    live_files: dict[str, str] | None = None  # live id -> its file (read once, for the undo record)
    progress: Callable[[dict[str, dict[str, Any]], int], None] | None = None  # (stage stats, input rows)
    export_texts: tuple[str, ...] | None = None  # int8 OpenVINO calibration texts (plan.export_texts)


@dataclass
class WriteOutcome:
    """What the Ray write left behind on the driver."""

    store_rejects: list[tuple[str, str]]  # (chunk id, reason) a store refused
    stage_stats: dict[str, dict[str, Any]]  # per-stage rows, seconds, nodes, tokens ...
    seconds: float  # wall time of the Ray graph
    start: float  # epoch seconds when the Ray graph started (the stages' start/end are epoch seconds too)


def run(cfg: JobConfig, *, full: bool = False, allow_deletes: bool = False,
        store_factories: tuple | None = None,
        progress: Callable[[dict[str, dict[str, Any]], int], None] | None = None) -> dict[str, Any]:
    """Index the corpus; returns the run manifest (also written under ``index.dir/runs``).

    Incremental by default against a live version with the same vector settings; a full build
    writes a new version and moves the alias after the verification gate. An interrupted run is
    resumed by running the same command again. Raises :class:`RunFailed` when the gate fails, and
    :class:`~indexer.run.guard.RunRefused` before writing anything when the run would delete more of the
    live version than ``index.max_delete_fraction`` allows (``allow_deletes`` lets it through), and
    :class:`~indexer.run.lease.IndexLeased` (a ``RunRefused``) at once when another run holds the index's
    lease (:mod:`indexer.run.lease`; held for the whole run, released on the way out).
    ``store_factories`` (vector, text :class:`StoreTarget` s) replaces the configured stores (tests inject
    faults so). ``progress`` is called about every second during the write with the per-stage stats
    so far and the corpus's input rows (the CLI's live display).
    """
    with lease.held(Storage(cfg.corpus.s3), Layout(cfg.index.dir), cfg.index.lease_timeout_s) as held:
        return _run(cfg, held, full=full, allow_deletes=allow_deletes, store_factories=store_factories,
                    progress=progress)


def _run(cfg: JobConfig, held: lease.Lease, *, full: bool, allow_deletes: bool, store_factories: tuple | None,
         progress: Callable[[dict[str, dict[str, Any]], int], None] | None) -> dict[str, Any]:
    """The run, once this process holds the index's lease."""
    ctx = prepare(cfg, full=full, store_factories=store_factories)
    held.name_run(ctx.plan.run_id)
    ctx.progress = progress
    live_hashes = load_live_hashes(ctx)
    deletes, verdict = check_guard(ctx, live_hashes, allow_deletes)  # before anything is written
    ctx.export_texts = export_texts(ctx.cfg, ctx.corpus, ctx.placement)
    calibrate(ctx)
    record_start(ctx)
    todo, skipped = pending_fragments(ctx)
    written = write(ctx, todo, live_hashes)

    # Records of this run (all attempts): the source of exact counts.
    held.check()  # another run took the index over while this one stopped renewing: don't touch the live state
    run_records = records.load_records(ctx.storage, ctx.layout, ctx.plan.run_id)
    reconciled = reconcile(run_records, ctx.corpus, written.store_rejects)
    counts, result = finish_version(ctx, run_records, reconciled, live_hashes, deletes)
    ctx.storage.write_parquet(ctx.layout.rejects(ctx.plan.run_id), reconciled.rejects)
    add_stage_stats(ctx.stages, written, counts)
    version = version_manifest(ctx, counts)
    ctx.storage.write_json(ctx.layout.version_manifest(ctx.plan.collection), version)

    rolled_back = None
    if ctx.plan.mode == "incremental":
        if result.passed:
            undo.prune(ctx.storage, ctx.layout, list_runs(ctx.storage, ctx.layout) + [ctx.plan.run_id],
                       cfg.index.keep_versions)
        elif undo.read_record(ctx.storage, ctx.layout, ctx.plan.run_id):
            # The gate failed on the live version itself: put it back as it was before this run.
            rolled_back = undo.apply(ctx.storage, ctx.layout, ctx.plan.run_id, ctx.vector_store, ctx.text_store)
            log.warning("the gate failed: run %s was rolled back (%s)", ctx.plan.run_id, rolled_back)
    alias_moved = result.passed and ctx.plan.mode == "full"  # the gate fails an empty new version
    dropped = publish(cfg, ctx.vector_store, ctx.text_store, ctx.storage, ctx.layout, ctx.plan.collection,
                      ctx.existing) if alias_moved else []
    manifest = run_manifest(ctx, counts, result, version, skipped=skipped, alias_moved=alias_moved,
                            dropped=dropped)
    manifest["guard"] = verdict.to_json()
    manifest["rolled_back"] = rolled_back is not None
    if rolled_back is not None:
        manifest["rollback"] = rolled_back
    manifest["discarded_attempt"] = ctx.discarded.to_json() if ctx.discarded else None
    manifest["unreadable_files"] = unreadable_report(ctx, deletes)
    finish(ctx, manifest)
    if not result.passed:
        raise RunFailed("; ".join(result.failures), manifest)
    return manifest


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


# ------------------------------------------------------------------------------------------
# Before the write
# ------------------------------------------------------------------------------------------

def prepare(cfg: JobConfig, *, full: bool, store_factories: tuple | None) -> RunContext:
    """Connect to Ray, plan the corpus, size the encoder pool, open the stores' catalog and decide
    the run's mode and target collection."""
    started = time.time()
    storage, layout = Storage(cfg.corpus.s3), Layout(cfg.index.dir)
    stages: dict[str, Any] = {}

    # What a user can get wrong (corpus path, dense.dim) fails here, before Ray starts.
    t0 = time.perf_counter()
    corpus = plan_corpus(cfg.corpus)
    stages["plan"] = {"rows": corpus.total_rows, "files": len(corpus.files), "fragments": len(corpus.fragments),
                      "seconds": _since(t0)}
    dims = dense_dims(cfg)
    t0 = time.perf_counter()
    init_ray(cfg)
    stages["ray_init"] = {"seconds": _since(t0)}

    placement = plan_placement(cfg, *cluster_resources())
    log.info("encoder pool: %s", placement)
    spec = vector_spec(cfg, dims.stored)
    vector_store, text_store = store_factories or (vector_store_factory(cfg, spec), text_store_factory(cfg))
    existing, live = stored_versions(cfg, vector_store, text_store)
    run_plan = decide(cfg, storage, layout, live, existing, full)
    fingerprint = resume.corpus_fingerprint(corpus, cfg.corpus)
    discarded = None
    if run_plan.resumed:
        state = records.read_state(storage, layout, cfg.index.name)
        change = resume.still_true(state, fingerprint)
        if change is not None:
            discarded = resume.discard(storage, layout, state, change)
            if discarded.mode == "incremental" and undo.read_record(storage, layout, discarded.run_id):
                undo.apply(storage, layout, discarded.run_id, vector_store, text_store)
                discarded = dataclasses.replace(discarded, dirty=frozenset(), undone=True)
            storage.delete_prefix(layout.run_dir(discarded.run_id))
            if discarded.mode == "full" and discarded.collection != live:
                drop_version(vector_store, text_store, discarded.collection)  # never live: nothing to keep
                existing = [c for c in existing if c != discarded.collection]
            run_plan = decide(cfg, storage, layout, live, existing, full, resume=False)
    log.info("run %s: %s into %s (%s)", run_plan.run_id, run_plan.mode, run_plan.collection, run_plan.reason)
    return RunContext(cfg, storage, layout, corpus, dims, placement, spec, vector_store, text_store, existing,
                      run_plan, started, stages, fingerprint=fingerprint, discarded=discarded)


def drop_version(vector_store: StoreTarget, text_store: StoreTarget, collection: str) -> None:
    """Drop a version from both stores."""
    vectors, text = vector_store(), text_store()
    try:
        vectors.drop_collection(collection)
        text.drop_collection(collection)
    finally:
        vectors.close()
        text.close()


def written_ids(ctx: RunContext) -> list[str]:
    """Ids the run will write (new or changed), from its diff records."""
    from ..schema import CHANGED, NEW

    rows = records.load_records(ctx.storage, ctx.layout, ctx.plan.run_id).rows
    return [i for i, st in zip(rows.column("id").to_pylist(), rows.column("state").to_pylist()) if st in (NEW, CHANGED)]


def record_undo(ctx: RunContext, live_hashes: pa.Table, ids: list[str]) -> None:
    """Add ``ids`` to the incremental run's undo record before it overwrites or deletes them."""
    if ctx.plan.mode != "incremental" or ctx.plan.collection != ctx.plan.live_before:
        return
    t0 = time.perf_counter()
    if ctx.live_files is None:
        ctx.live_files = records.read_hash_files(ctx.storage, ctx.layout, ctx.plan.live_before) or {}
    n = undo.record_before(ctx.storage, ctx.layout, ctx.plan.run_id, ctx.plan.collection, ctx.vector_store,
                           ctx.text_store, ids, records.hashes_as_dict(live_hashes), ctx.live_files)
    st = ctx.stages.setdefault("undo_record", {"rows": 0, "seconds": 0.0})
    st["rows"] += n
    st["seconds"] = round(st["seconds"] + time.perf_counter() - t0, 3)


def dirty_ids(ctx: RunContext) -> frozenset[str]:
    """Chunks a discarded attempt of an incremental run may have written into the live version."""
    d = ctx.discarded
    return d.dirty if d is not None and d.mode == "incremental" and d.collection == ctx.plan.collection \
        else frozenset()


def prepare_encoder(ctx: RunContext) -> float:
    """Before the first encode of a run (once): CPU encoders running OpenVINO find the export in the
    cache (made here, by a task on the cluster, when missing; int8 calibrates on ``ctx.export_texts``).
    Recorded as ``stages.dense_export``; returns its seconds (0 when already done or not OpenVINO)."""
    if "dense_export" in ctx.stages:
        return 0.0
    t0 = time.perf_counter()
    done = export_on_cluster(ctx.cfg, ctx.placement, ctx.export_texts)
    if not done:
        return 0.0
    ctx.stages["dense_export"] = {**done, "seconds": _since(t0)}
    return time.perf_counter() - t0


def calibrate(ctx: RunContext) -> None:
    """A new full build computes BM25 parameters and dense quantization ranges from a sample of the
    corpus; an incremental or resumed run keeps the ones its plan carries."""
    t0 = time.perf_counter()
    if not ctx.plan.resumed and ctx.plan.mode == "full":
        ctx.plan.bm25 = corpus_bm25(ctx.cfg, ctx.corpus)
        if needs_dense_calibration(ctx.cfg):
            t0 += prepare_encoder(ctx)  # the export is not calibration time
        ctx.plan.calibration = calibrate_dense(ctx.cfg, ctx.corpus, ctx.placement, ctx.dims.stored, ctx.storage,
                                               ctx.export_texts)
    ctx.stages["calibrate"] = {"seconds": _since(t0)}


def record_start(ctx: RunContext) -> None:
    """Write the run state that lets the next invocation resume this run if it is interrupted."""
    p = ctx.plan
    records.write_state(ctx.storage, ctx.layout, ctx.cfg.index.name, {
        "run_id": p.run_id, "mode": p.mode, "collection": p.collection, "live_before": p.live_before,
        "status": "running", "fingerprint": records.fingerprint_json(ctx.cfg.vector_fingerprint()),
        "calibration": p.calibration, "bm25": p.bm25, "started_at": time.time(),
        "corpus": resume.digest(ctx.fingerprint), "corpus_files": ctx.fingerprint})


def load_live_hashes(ctx: RunContext) -> pa.Table | None:
    """The live version's (id, hash) manifest on an incremental run; None on a full build."""
    if ctx.plan.mode == "incremental" and ctx.plan.live_before:
        return records.read_hashes(ctx.storage, ctx.layout, ctx.plan.live_before)
    return None


def live_chunk_count(ctx: RunContext) -> int:
    """Chunks of the live version as its vector store counts them (when it has no hash manifest)."""
    vectors = ctx.vector_store()
    try:
        return vectors.count(ctx.plan.live_before)
    finally:
        vectors.close()


def check_guard(ctx: RunContext, live_hashes: pa.Table | None,
                allow_deletes: bool) -> tuple[DeletePlan, GuardVerdict]:
    """The deletion guard (:mod:`indexer.run.guard`) on the plan's numbers; raises
    :class:`~indexer.run.guard.RunRefused` when it refuses. Returns what the run will delete and keep."""
    p, corpus = ctx.plan, ctx.corpus
    live_ids: list[str] = []
    live_files, live_count = None, None
    if p.live_before:
        table = live_hashes if live_hashes is not None else records.read_hashes(ctx.storage, ctx.layout,
                                                                                p.live_before)
        live_ids = table.column("id").to_pylist()
        if corpus.unreadable_files and p.mode == "incremental":
            live_files = records.read_hash_files(ctx.storage, ctx.layout, p.live_before)
        if not live_ids:
            live_count = live_chunk_count(ctx)
    deletes, counts = assess(p.mode, live_ids, live_files, corpus.ids,
                             {b.file for b in corpus.unreadable_files}, live_count)
    verdict = check_deletes(counts, ctx.cfg.index.max_delete_fraction, allow_deletes)
    log.info("deletion guard: %s", verdict.message)
    if verdict.refused:
        raise RunRefused(verdict)
    return deletes, verdict


def unreadable_report(ctx: RunContext, deletes: DeletePlan) -> list[dict[str, Any]]:
    """The files that could not be read, why, and how many of their live chunks were kept."""
    if not ctx.corpus.unreadable_files:
        return []
    per_file: dict[str | None, int] = {}
    for i in deletes.kept_unreadable:
        f = deletes.kept_files.get(i)
        per_file[f] = per_file.get(f, 0) + 1
    return [{"file": b.file, "reason": b.reason, "kept_rows": per_file.get(b.file, 0)}
            for b in ctx.corpus.unreadable_files]


def pending_fragments(ctx: RunContext) -> tuple[list[Fragment], int]:
    """Fragments left to process and how many were skipped: a resumed run skips the fragments an
    earlier attempt of it finished."""
    earlier = records.load_records(ctx.storage, ctx.layout, ctx.plan.run_id) if ctx.plan.resumed else None
    done = earlier.completed_fragments(ctx.corpus.fragments) if earlier else set()
    return [f for f in ctx.corpus.fragments if f.key not in done], len(done)


# ------------------------------------------------------------------------------------------
# The write (Ray)
# ------------------------------------------------------------------------------------------

def diffed_rows(ctx: RunContext, fragments: list[Fragment], live_ref: Any, reporter: StageReporter):
    """The Ray Dataset of the fragments' new and changed rows: read -> validate -> diff (which
    records every valid row's state, rejects recorded by validation)."""
    cfg, cpus, run_id = ctx.cfg, ctx.placement.task_cpus, ctx.plan.run_id
    ds = rows_dataset(fragments, cfg.corpus, ctx.layout.rejects_parts(run_id), ctx.storage, reporter, cpus)
    return Diff(live_ref, records.rows_dir(ctx.layout, run_id), ctx.storage, reporter).apply(ds, num_cpus=cpus)


def fragments_to_encode(ctx: RunContext, fragments: list[Fragment], live_ref: Any,
                        reporter: StageReporter) -> list[Fragment]:
    """Incremental runs diff first, without the encoder pool: only fragments with new or changed
    rows go on to be encoded, so a rerun with nothing to encode starts no encoder and loads no
    model weights. Those fragments are read again by the write; their records are rewritten
    identically (records keep one per file and row)."""
    for _ in diffed_rows(ctx, fragments, live_ref, reporter).select_columns([schema.ID]).iter_batches(
            batch_size=None):
        pass
    done = records.load_records(ctx.storage, ctx.layout, ctx.plan.run_id).completed_fragments(fragments)
    return [f for f in fragments if f.key not in done]


def chunk_dataset(ctx: RunContext, fragments: list[Fragment], live_ref: Any, reporter: StageReporter,
                  read_reporter: StageReporter | None = None):
    """The Ray Dataset of encoded chunks: read -> validate -> diff -> tokenize -> encode
    (``read_reporter``, default ``reporter``, counts the first three)."""
    cfg, cpus = ctx.cfg, ctx.placement.task_cpus
    ds = diffed_rows(ctx, fragments, live_ref, reporter if read_reporter is None else read_reporter)
    ds = Tokenize(cfg.dense.model, cfg.dense.max_seq_length, cfg.dense.document_prefix, ctx.plan.bm25,
                  reporter).apply(ds, num_cpus=cpus)
    encode_spec = EncodeSpec.from_config(cfg, device=ctx.placement.device, torch_threads=ctx.placement.torch_threads,
                                         dim=ctx.dims.stored, quantization=ctx.spec.quantization,
                                         calibration=ctx.plan.calibration, export_texts=ctx.export_texts)
    return encode_on(ctx.placement, ds, encode_spec, cfg.encode.block_rows, reporter)


def write(ctx: RunContext, fragments: list[Fragment], live_hashes: pa.Table | None) -> WriteOutcome:
    """Run the chunk dataset of ``fragments`` into both stores; with nothing to write, the stores are
    still opened and finalised."""
    import ray

    run_id = ctx.plan.run_id
    live_ref = None
    if live_hashes is not None:
        live = records.hashes_as_dict(live_hashes)
        for i in dirty_ids(ctx) & live.keys():  # a discarded attempt may have overwritten it: rewrite it
            live[i] = ""
        live_ref = ray.put(live)
    stats_actor = start_stats_actor()
    reporter = StageReporter(stats_actor)
    read_reporter = None
    show = (lambda snap: ctx.progress(snap, ctx.corpus.total_rows)) if ctx.progress else None
    t0 = time.perf_counter()
    with polling(stats_actor, show):
        if fragments and live_ref is not None:
            fragments = fragments_to_encode(ctx, fragments, live_ref, reporter)
            read_reporter = StageReporter()  # the diff pass counted reading, validation and diff
            record_undo(ctx, live_hashes, written_ids(ctx))
        if fragments:  # something to encode: the export first, outside the pipeline's time
            t0 += prepare_encoder(ctx)
        ds = chunk_dataset(ctx, fragments, live_ref, reporter, read_reporter)
        sink = make_datasink(
            [("vectors", ctx.vector_store, ctx.plan.collection), ("text", ctx.text_store, ctx.plan.collection)],
            run_id, reporter, after_block=RecordWritten(ctx.storage, records.written_dir(ctx.layout, run_id)),
        )
        if fragments:
            ds.write_datasink(sink, ray_remote_args={"num_cpus": ctx.placement.task_cpus})
        else:
            sink.finalize_only()
    seconds = time.perf_counter() - t0
    stage_stats = ray.get(stats_actor.snapshot.remote())
    ray.kill(stats_actor)
    if sink.finalize_seconds:  # flush, index build and merges after the last block, per store
        stage_stats["finalize"] = {"seconds": max(sink.finalize_seconds.values()), **sink.finalize_seconds}
    return WriteOutcome([r for res in sink.results.values() for r in res.rejects], stage_stats, seconds,
                        round(time.time() - seconds, 3))


# ------------------------------------------------------------------------------------------
# After the write
# ------------------------------------------------------------------------------------------

def finish_version(ctx: RunContext, run_records: RunRecords, reconciled: Reconciled, live_hashes: pa.Table | None,
                   deletes: DeletePlan) -> tuple[dict[str, int], GateResult]:
    """Delete what the new version must not hold (never the chunks of unreadable files), count it, run the
    gate and, when it passed, write the version's hash manifest."""
    collection = ctx.plan.collection
    t0 = time.perf_counter()
    vectors, text = ctx.vector_store(), ctx.text_store()
    try:
        if live_hashes is not None and ctx.plan.mode == "incremental":
            vectors.close()  # single-writer engines: the undo export opens them itself
            text.close()
            record_undo(ctx, live_hashes, gone_ids(live_hashes, reconciled.rows, reconciled.refused,
                                                   deletes.kept_unreadable))
            vectors, text = ctx.vector_store(), ctx.text_store()
        deleted = delete_stale(vectors, text, collection, reconciled, live_hashes, deletes.kept_unreadable)
        orphans = sorted(dirty_ids(ctx) - set(live_hashes.column("id").to_pylist() if live_hashes is not None else [])
                         - set(reconciled.rows.column("id").to_pylist()))
        if orphans:  # written by a discarded attempt, in neither the live version nor the corpus
            delete_chunks(vectors, text, collection, orphans)
        ctx.stages["delete"] = {"rows": deleted, "orphans": len(orphans), "seconds": _since(t0)}
        kept = kept_rows(live_hashes, reconciled.rows, deletes.kept_unreadable, deletes.kept_files)
        version_rows = pa.concat_tables([reconciled.rows.select(["id", "hash", "file"]).cast(kept.schema), kept])
        hashes = records.hashes_as_dict(version_rows)
        counts = count_rows(ctx.corpus.total_rows, run_records, reconciled, deleted,
                            vectors.count(collection), text.count(collection), kept.num_rows)
        t0 = time.perf_counter()
        result = verify_version(ctx.cfg, counts, hashes, vectors, text, collection, ctx.plan.live_before)
        ctx.stages["verify"] = {"seconds": _since(t0)}
        if result.passed:  # the hash manifest moves only after the gate passed
            records.write_hashes(ctx.storage, ctx.layout, collection, version_rows)
    finally:
        vectors.close()
        text.close()
    return counts, result


def add_stage_stats(stages: dict[str, Any], written: WriteOutcome, counts: dict[str, int]) -> None:
    """Per-stage stats of the Ray graph, the whole graph's rate, and the encoder's padding share."""
    for name, st in written.stage_stats.items():
        stages[name] = st
    stages["pipeline"] = {"rows": counts["encoded"], "seconds": round(written.seconds, 3), "start": written.start,
                          "rows_per_s": round(counts["encoded"] / max(written.seconds, 1e-9), 2)}
    enc = written.stage_stats.get("encode", {})
    if enc.get("tokens"):
        stages["encode"]["padding_share"] = round(
            enc.get("padding_tokens", 0) / max(1, enc["tokens"] + enc.get("padding_tokens", 0)), 4)


def version_manifest(ctx: RunContext, counts: dict[str, int]) -> dict[str, Any]:
    """The encoding settings of the version (``versions/<collection>.json``): what search needs."""
    cfg, p = ctx.cfg, ctx.plan
    return {
        "collection": p.collection,
        "run_id": p.run_id,
        "model": {"ref": cfg.dense.model, "path": resolve_model(cfg.dense.model), "dim": ctx.dims.model,
                  "max_seq_length": ctx.dims.max_seq_length},
        "dense": {"dim": ctx.dims.stored, "quantization": ctx.spec.quantization, "calibration": p.calibration,
                  "rescore": ctx.spec.rescore, "query_prefix": cfg.dense.query_prefix},
        "sparse": {"kind": cfg.sparse.kind.value, "model": cfg.sparse.model, "bm25": p.bm25},
        "text": {"analyzer": cfg.text_store.analyzer.value},
        "fingerprint": cfg.vector_fingerprint(),
        "count": counts["indexed"],
    }


def run_manifest(ctx: RunContext, counts: dict[str, int], result: GateResult, version: dict[str, Any], *,
                 skipped: int, alias_moved: bool, dropped: list[str]) -> dict[str, Any]:
    """The run manifest (``runs/<run_id>/manifest.json``): config, counts, stages, gate, versions."""
    p = ctx.plan
    return {
        "run_id": p.run_id,
        "status": "succeeded" if result.passed else "failed",
        "failures": result.failures,
        "mode": p.mode,
        "mode_reason": p.reason,
        "resumed": p.resumed,
        "skipped_fragments": skipped,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctx.started)),
        "seconds": round(time.time() - ctx.started, 3),
        "config": dump_config(ctx.cfg),
        "model": version["model"],
        "dense": version["dense"],
        "sparse": version["sparse"],
        "text": version["text"],
        "counts": counts,
        "rejects_path": ctx.layout.rejects(p.run_id),
        "stages": ctx.stages,
        "verification": result.to_json(),
        "placement": ctx.placement.__dict__,
        # An incremental run writes into the live version: it serves the result once the gate passed.
        "versions": {"before": p.live_before, "built": p.collection,
                     "after": p.collection if result.passed else p.live_before, "dropped": dropped},
        "alias_moved": alias_moved,
    }


def finish(ctx: RunContext, manifest: dict[str, Any]) -> None:
    """Write the run manifest, mark the run finished (nothing left to resume), drop its task parts."""
    p = ctx.plan
    ctx.storage.write_json(ctx.layout.run_manifest(p.run_id), manifest)
    records.write_state(ctx.storage, ctx.layout, ctx.cfg.index.name, {
        "run_id": p.run_id, "status": manifest["status"], "collection": p.collection, "finished_at": time.time()})
    records.delete_run_parts(ctx.storage, ctx.layout, p.run_id)
