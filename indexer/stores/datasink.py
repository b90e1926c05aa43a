"""The Ray Data sink that writes every block to each store in a single pass over the data.

:class:`StoreDatasink` follows Ray's sink lifecycle: ``on_write_start`` creates the collections
idempotently, ``write`` upserts chunks (deterministic ids: a retried task is harmless),
``on_write_complete`` finalises (flush, restore bulk-load settings) and aggregates counts. With no
input left to write, :meth:`StoreDatasink.finalize_only` runs the same start and finish without a
Ray Data write.

Stores that allow one writer process (the embedded engines) are written through a single
:class:`SingleWriter` actor pinned to the driver's node, so concurrent write tasks on any node of a
cluster never open the files twice.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Iterable

import ray
from ray.data import Datasink

from ..schema import Columns
from .base import Store, StoreFactory, StoreTarget, WriteResult


class SingleWriter:
    """Ray actor body that owns the only writer of a single-writer store."""

    def __init__(self, factory: StoreFactory, collection: str):
        self._store = factory()
        self._collection = collection
        self._store.ensure_collection(collection)

    def upsert(self, batch: Columns) -> WriteResult:
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


def _to_numpy_batch(block) -> Columns:
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_batch_format("numpy")


class StoreDatasink(Datasink):
    """Ray Data sink writing chunks to one or more stores in a single pass over the data.

    ``targets`` holds ``(label, store_target, collection)``. Each write task returns
    ``{label: WriteResult}``; finishing finalises every store and records the totals in
    ``results`` (label -> WriteResult) and ``counts`` (label -> count after finalising).
    The sink does not retry a write: each store's client retries its own requests within its
    configured budget, so a dead store fails the run in that time; ``after_block`` runs once every
    store has acknowledged a block (the pipeline records progress there). ``reporter`` is anything
    with a ``measure(stage, rows)`` context manager (the run's stage statistics).
    """

    def __init__(self, targets: list[tuple[str, StoreTarget, str]], run_tag: str, reporter=None,
                 after_block: Callable[[Columns], None] | None = None):
        self.targets = targets
        self.run_tag = run_tag
        self.reporter = reporter
        self.after_block = after_block
        self.results: dict[str, WriteResult] = {}
        self.counts: dict[str, int] = {}
        self.finalize_seconds: dict[str, float] = {}  # label -> seconds from the start of finishing to its end
        self._writers: dict[str, Any] = {}

    def get_name(self) -> str:
        return "Write"

    def _writer_name(self, label: str) -> str:
        return f"indexer-writer-{label}-{self.run_tag}"

    def on_write_start(self, schema=None) -> None:
        for label, target, collection in self.targets:
            if target.single_writer:
                self._writers[label] = start_single_writer(target.factory, collection, self._writer_name(label))
            else:
                store = target()
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
                measure = self.reporter.measure("write", n) if self.reporter is not None else nullcontext({})
                with measure as extra:
                    extra["blocks"] = 1
                    for label, res in self._upsert_all(batch, opened).items():
                        out[label] = out[label].merge(res)
                    if self.after_block is not None:
                        self.after_block(batch)
        finally:
            for store in opened.values():
                store.close()
        return out

    def _upsert_all(self, batch: Columns, opened: dict[str, Store]) -> dict[str, WriteResult]:
        """Write one block to every store: the writer actors' calls go out first (one copy of the
        block in the object store for all of them) and run while this task writes to the stores it
        opened itself; returns once every store acknowledged the block."""
        pending = {}
        single = [label for label, target, _ in self.targets if target.single_writer]
        if single:
            ref = ray.put(batch)
            pending = {label: ray.get_actor(self._writer_name(label)).upsert.remote(ref) for label in single}
        results: dict[str, WriteResult] = {}
        for label, target, collection in self.targets:
            if not target.single_writer:
                store = opened.get(label) or opened.setdefault(label, target())
                t1 = time.perf_counter()
                res = store.upsert(collection, batch)
                res.seconds = time.perf_counter() - t1
                results[label] = res
        for label, res in zip(pending, ray.get(list(pending.values()))):
            results[label] = res
        return {label: results[label] for label, *_ in self.targets}

    def on_write_complete(self, write_result) -> None:
        self._finish(write_result.write_returns)

    def finalize_only(self) -> None:
        """Open and finalise every store when nothing is left to write (all fragments done, or no
        input): the collections exist and are finalised, with empty results, as after a write."""
        self.on_write_start()
        self._finish([])

    def _finish(self, write_returns: list[dict[str, WriteResult]]) -> None:
        """Aggregate the write tasks' results, then finalise each store and count what it holds."""
        totals = {label: WriteResult() for label, *_ in self.targets}
        for per_task in write_returns:
            for label, res in per_task.items():
                totals[label] = totals[label].merge(res)
        self.results = totals
        t0 = time.perf_counter()
        finishing = {label: self._writers[label].finalize.remote()  # the writer actors finalise in parallel
                     for label, target, _ in self.targets if target.single_writer}
        for label, target, collection in self.targets:
            if not target.single_writer:
                store = target()
                try:
                    store.finalize(collection)
                    self.counts[label] = store.count(collection)
                finally:
                    store.close()
                self.finalize_seconds[label] = round(time.perf_counter() - t0, 3)
        label_of = {ref: label for label, ref in finishing.items()}
        waiting = list(finishing.values())
        while waiting:  # in the order they finish, so each store's seconds are its own
            (ref,), waiting = ray.wait(waiting, num_returns=1)
            label = label_of[ref]
            self.counts[label] = ray.get(ref)
            self.finalize_seconds[label] = round(time.perf_counter() - t0, 3)
            writer = self._writers[label]  # done: its memory goes now, not when the slowest store is done
            ray.get(writer.close.remote())
            ray.kill(writer)

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


def make_datasink(targets: list[tuple[str, StoreTarget, str]], run_tag: str, reporter=None,
                  after_block: Callable[[Columns], None] | None = None) -> StoreDatasink:
    """The sink writing every block to each ``(label, store_target, collection)``; see :class:`StoreDatasink`.
    ``run_tag`` names the run's writer actors."""
    return StoreDatasink(targets, run_tag, reporter, after_block)
