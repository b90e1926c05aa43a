"""Store contracts and the Ray Data sink that writes to them.

A *store* is one engine (embedded or server) that holds versioned collections and an alias that
names the live one. Vector stores hold dense + sparse vectors with the chunk payload; text stores
hold text + metadata for BM25. Both are written by :class:`StoreDatasink`, which follows Ray's
sink lifecycle: ``on_write_start`` creates the collection idempotently, ``write`` upserts chunks
(deterministic ids: a retried task is harmless), ``on_write_complete`` finalises (flush, restore
bulk-load settings) and aggregates counts.

Stores that allow one writer process (the embedded engines) are written through a single
:class:`SingleWriter` actor pinned to the driver's node, so concurrent write tasks on any node of a
cluster never open the files twice.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]


@dataclass
class Hit:
    """One search result: chunk id, score, and the stored fields (text, title, metadata)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # only when asked for (rescoring)


@dataclass
class SparseQuery:
    indices: list[int]
    values: list[float]


@dataclass
class VectorSpec:
    """What a vector collection stores; derived from the config and the model on the driver."""

    dim: int  # dense dimension after Matryoshka truncation
    quantization: str  # none | int8 | uint8 | binary
    sparse: bool  # a sparse vector named 'sparse' with the IDF modifier
    sparse_idf: bool = True  # IDF applied by the store (bm25 term weights); False for SPLADE
    rescore: bool = False  # an extra 'dense_rescore' uint8 vector (int8 codes) for binary mode


@dataclass
class WriteResult:
    """What one write call did. ``rejects`` holds (id, reason) of rows the store refused terminally."""

    written: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: "WriteResult") -> "WriteResult":
        return WriteResult(self.written + other.written, self.rejects + other.rejects, self.seconds + other.seconds)


class TransientStoreError(RuntimeError):
    """A failure worth retrying (timeouts, 408/429/5xx)."""


class Store(abc.ABC):
    """Common lifecycle of a versioned store. Collections are named '<index.name>_v<N>'."""

    single_writer: bool = False
    """True when only one process may write at a time (embedded engines)."""

    @abc.abstractmethod
    def ensure_collection(self, collection: str) -> None:
        """Create the collection if missing (idempotent); apply the bulk-load profile."""

    @abc.abstractmethod
    def upsert(self, collection: str, batch: Batch) -> WriteResult:
        """Write chunks (idempotent by id). Terminal per-row failures come back as rejects."""

    @abc.abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Delete chunks by chunk id; returns how many were asked to be deleted."""

    @abc.abstractmethod
    def finalize(self, collection: str) -> None:
        """Make everything written durable and searchable; restore bulk-load settings."""

    @abc.abstractmethod
    def count(self, collection: str) -> int:
        """Exact number of chunks in the collection."""

    @abc.abstractmethod
    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored fields of the given chunk ids (missing ids are absent from the result)."""

    @abc.abstractmethod
    def list_collections(self, prefix: str) -> list[str]:
        """Collections whose name starts with prefix."""

    @abc.abstractmethod
    def drop_collection(self, collection: str) -> None:
        """Delete a collection (idempotent)."""

    @abc.abstractmethod
    def get_alias(self, alias: str) -> str | None:
        """The collection the alias points to, or None."""

    @abc.abstractmethod
    def set_alias(self, alias: str, collection: str) -> None:
        """Point the alias at collection atomically."""

    def close(self) -> None:
        """Release clients and file handles."""


class VectorStore(Store):
    """A store of dense + sparse vectors with the chunk payload."""

    def __init__(self, spec: VectorSpec):
        self.spec = spec

    @abc.abstractmethod
    def search_dense(self, collection: str, vector: np.ndarray, k: int, with_vectors: bool = False) -> list[Hit]:
        """Nearest chunks to a query vector in storage form (float32, uint8 codes, or packed bits).

        With ``with_vectors`` each hit carries its stored vectors (``dense`` and, when the spec has
        one, ``dense_rescore``) in storage form, for rescoring."""

    @abc.abstractmethod
    def search_sparse(self, collection: str, query: SparseQuery, k: int) -> list[Hit]:
        """Best chunks by sparse dot product (IDF applied by the store when configured)."""

    def fetch_vectors(self, collection: str, ids: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """Stored vectors by chunk id (used for rescoring). Optional."""
        raise NotImplementedError


class TextStore(Store):
    """A BM25 text store."""

    @abc.abstractmethod
    def search_bm25(self, collection: str, query: str, k: int) -> list[Hit]:
        """Best chunks by BM25 over text (and title when present)."""


# --------------------------------------------------------------------------------------------
# Writing through Ray Data
# --------------------------------------------------------------------------------------------

StoreFactory = Callable[[], Store]
"""A picklable zero-argument callable that opens a store (a client per task / actor)."""


def retry_transient(fn: Callable[[], Any], *, retries: int, base_delay: float = 0.5, max_delay: float = 30.0,
                    what: str = "request", transient: Callable[[BaseException], bool] | None = None,
                    retry_after: Callable[[BaseException], float | None] | None = None,
                    describe: Callable[[BaseException], str] = str,
                    sleep: Callable[[float], Any] | None = None) -> Any:
    """Run ``fn``; on a transient failure retry with exponential backoff, then raise
    :class:`TransientStoreError`. Other failures propagate unchanged.

    ``transient`` tells which exceptions are worth a retry (default: :class:`TransientStoreError`);
    ``retry_after`` may read a server's requested delay (honoured up to ``max_delay``); ``describe``
    renders an error for logs and the final message (e.g. with secrets redacted); ``sleep`` is the
    backoff's clock (default ``time.sleep``).
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:
            if not (transient(e) if transient else isinstance(e, TransientStoreError)):
                raise
            attempt += 1
            if attempt > retries:
                raise TransientStoreError(f"{what} still failing after {retries} retries: {describe(e)}") from e
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            asked = retry_after(e) if retry_after else None
            if asked is not None:
                delay = max(delay, min(asked, max_delay))
            first_line = (describe(e).splitlines() or [type(e).__name__])[0]
            log.warning("%s failed transiently (%s); retry %d/%d in %.1fs", what, first_line, attempt, retries, delay)
            (sleep or time.sleep)(delay)


class SingleWriter:
    """Ray actor body that owns the only writer of a single-writer store."""

    def __init__(self, factory: StoreFactory, collection: str):
        self._store = factory()
        self._collection = collection
        self._store.ensure_collection(collection)

    def upsert(self, batch: Batch) -> WriteResult:
        t0 = time.perf_counter()
        res = self._store.upsert(self._collection, batch)
        res.seconds = time.perf_counter() - t0
        return res

    def delete(self, ids: list[str]) -> int:
        return self._store.delete(self._collection, ids)

    def finalize(self) -> int:
        self._store.finalize(self._collection)
        return self._store.count(self._collection)

    def close(self) -> None:
        self._store.close()


def start_single_writer(factory: StoreFactory, collection: str, name: str):
    """Start (or reuse) the named writer actor on the driver's node, where the embedded files live."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    actor_cls = ray.remote(SingleWriter)
    return actor_cls.options(
        name=name,
        get_if_exists=True,
        num_cpus=0,
        max_restarts=3,
        max_task_retries=3,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(factory, collection)


class StoreDatasink:
    """Ray Data sink writing chunks to one or more stores in a single pass over the data.

    Built lazily as a subclass of ``ray.data.Datasink`` (see :func:`make_datasink`) so importing
    this module does not import Ray.
    """


def _to_numpy_batch(block) -> Batch:
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_batch_format("numpy")


def make_datasink(targets: list[tuple[str, StoreFactory, str, bool]], run_tag: str, reporter=None,
                  after_block: Callable[[Batch], None] | None = None, retries: int = 5):
    """Build a Ray ``Datasink`` that writes every block to each target.

    ``targets`` holds ``(label, store_factory, collection, single_writer)``. Each write task returns
    ``{label: WriteResult}``; ``on_write_complete`` finalises every store and records the totals in
    ``sink.results`` (label -> WriteResult) and ``sink.counts`` (label -> count after finalising).
    Transient store errors are retried with backoff (``retries``); ``after_block`` runs once every
    store has acknowledged a block (the pipeline records progress there).
    """
    import ray
    from ray.data import Datasink

    class _StoresDatasink(Datasink):
        def __init__(self):
            self.targets = targets
            self.results: dict[str, WriteResult] = {}
            self.counts: dict[str, int] = {}
            self._writers: dict[str, Any] = {}

        def get_name(self) -> str:
            return "Write"

        def on_write_start(self, schema=None) -> None:
            for label, factory, collection, single in self.targets:
                if single:
                    self._writers[label] = start_single_writer(factory, collection, f"indexer-writer-{label}-{run_tag}")
                else:
                    store = factory()
                    try:
                        store.ensure_collection(collection)
                    finally:
                        store.close()

        def write(self, blocks: Iterable, ctx) -> dict[str, WriteResult]:
            out = {label: WriteResult() for label, *_ in self.targets}
            opened: dict[str, Store] = {}
            try:
                for block in blocks:
                    batch = _to_numpy_batch(block)
                    n = len(next(iter(batch.values()), []))
                    if not n:
                        continue
                    start, t0 = time.time(), time.perf_counter()
                    for label, factory, collection, single in self.targets:
                        if single:
                            writer = ray.get_actor(f"indexer-writer-{label}-{run_tag}")
                            res = retry_transient(lambda: ray.get(writer.upsert.remote(batch)), retries=retries,
                                                  what=f"{label} write")
                        else:
                            store = opened.get(label) or opened.setdefault(label, factory())
                            t1 = time.perf_counter()
                            res = retry_transient(lambda: store.upsert(collection, batch), retries=retries,
                                                  what=f"{label} write")
                            res.seconds = time.perf_counter() - t1
                        out[label] = out[label].merge(res)
                    if after_block is not None:
                        after_block(batch)
                    if reporter is not None and reporter.actor is not None:
                        from ..stats import _node_id

                        reporter.actor.record.remote("write", n, time.perf_counter() - t0, start, time.time(),
                                                     _node_id(), None)
            finally:
                for store in opened.values():
                    store.close()
            return out

        def on_write_complete(self, write_result) -> None:
            totals = {label: WriteResult() for label, *_ in self.targets}
            for per_task in write_result.write_returns:
                for label, res in per_task.items():
                    totals[label] = totals[label].merge(res)
            self.results = totals
            for label, factory, collection, single in self.targets:
                if single:
                    writer = self._writers[label]
                    self.counts[label] = ray.get(writer.finalize.remote())
                    ray.get(writer.close.remote())
                    ray.kill(writer)
                else:
                    store = factory()
                    try:
                        store.finalize(collection)
                        self.counts[label] = store.count(collection)
                    finally:
                        store.close()

        def on_write_failed(self, error: Exception) -> None:
            for label, *_rest in self.targets:
                w = self._writers.get(label)
                if w is not None:
                    try:
                        ray.get(w.finalize.remote())
                        ray.get(w.close.remote())
                    except Exception:  # noqa: BLE001 - best effort on the failure path
                        pass
                    ray.kill(w)

    return _StoresDatasink()
