"""Embedded vector store: the Qdrant engine in-process (``qdrant-edge-py``), one shard per collection.

Each collection is the shard directory ``root/<collection>``; aliases live in ``root/aliases.json``
(replaced atomically). Layout of a point: see :mod:`indexer.stores.qdrant_common`.

Bulk loading: the engine applies updates to an appendable segment, held in memory, and only
builds HNSW graphs (and the sparse inverted index) when :meth:`EdgeShard.optimize` runs. A load
flushes and optimizes every ``SEGMENT_POINTS`` points, which turns the appendable segment into an
indexed one on disk and starts a fresh one; the optimizer's ``max_segment_size`` is one such
segment, so it never merges them back. No build then holds more than one segment, whatever the
corpus size (one build over a whole corpus held it all: its memory grew with the corpus), and
:meth:`finalize` only indexes the last one. The WAL stays on: a write that returned survives a
crash of the writer, which the run records of the pipeline rely on; the flushes also keep the WAL
from growing with the corpus.

The engine locks a shard for one process: the pipeline writes through a single actor
(``single_writer``), and searchers open the shard once nobody writes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from ..config import EdgeStoreConfig
from ..ids import point_id
from ..schema import Columns, Hit, SparseQuery, VectorSpec
from . import qdrant_common as qc
from .base import VectorStore, WriteResult
from .local import LocalCollections

log = logging.getLogger(__name__)


def _edge():
    try:
        import qdrant_edge
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the embedded vector store needs qdrant-edge-py: pip install 'qdrant-edge-py>=0.9'") from e
    return qdrant_edge


class EdgeVectorStore(VectorStore):
    """Versioned collections of the embedded Qdrant engine under ``root``.

    Open shards are cached per instance; :meth:`close` releases them (and the engine's lock).
    Dense scores are "higher is better": cosine similarity, or the negated Euclid distance for
    uint8 codes and bits.
    """

    single_writer = True
    """The engine locks a shard's WAL: one process may open it at a time."""

    UPDATE_POINTS = 4096
    """Points per engine update call (bounds the Python objects alive at once)."""
    SEGMENT_POINTS = 50_000
    """Points per indexed segment of a load: written between a flush and an optimize (bounds the
    memory of an index build, the appendable segment and the WAL)."""
    SEGMENTS = 8
    """The optimizer's target segment count (it only merges segments smaller than one load segment)."""
    FULL_SCAN_KB = 10_000
    """Below this many KB of vectors a segment is searched by brute force (Qdrant's default)."""

    def __init__(self, root: str, spec: VectorSpec | None, cfg: EdgeStoreConfig | None = None):
        super().__init__(spec)
        if spec is not None:  # None: opened for catalog operations only
            qc.check_spec(spec)
        self.cfg = cfg or EdgeStoreConfig()
        self.root = str(root)
        self.dirs = LocalCollections(self.root)
        self._shards: dict[str, Any] = {}
        self._unflushed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"EdgeVectorStore(root={self.root!r}, {self._spec_repr()})"

    # -- shards ----------------------------------------------------------------------------
    def _config(self):
        q = _edge()
        s = self.spec
        hnsw = q.HnswIndexConfig(m=self.cfg.hnsw_m, ef_construct=self.cfg.hnsw_ef_construct,
                                 full_scan_threshold=self.FULL_SCAN_KB)
        if s.quantization == "none":
            dense = q.EdgeVectorParams(size=s.dim, distance=q.Distance.Cosine)
        else:
            dense = q.EdgeVectorParams(size=s.dim, distance=q.Distance.Euclid, datatype=q.VectorStorageDatatype.Uint8)
        vectors = {qc.DENSE: dense}
        if s.rescore:
            # Read only for the candidates of a search: on disk (mmap), no HNSW graph (m=0).
            vectors[qc.DENSE_RESCORE] = q.EdgeVectorParams(
                size=s.dim, distance=q.Distance.Euclid, datatype=q.VectorStorageDatatype.Uint8, memory=q.Memory.Cold,
                hnsw_config=q.HnswIndexConfig(m=0, ef_construct=self.cfg.hnsw_ef_construct,
                                              full_scan_threshold=self.FULL_SCAN_KB))
        sparse = None
        if s.sparse:
            sparse = {qc.SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf if s.sparse_idf else None)}
        return q.EdgeConfig(vectors=vectors, sparse_vectors=sparse, hnsw_config=hnsw, optimizers=self._optimizers())

    def _optimizers(self):
        """Segments of at most ``SEGMENT_POINTS`` points' dense vectors: the optimizer neither merges
        load segments nor leaves one of them unindexed (Qdrant indexes from 10 MB by default)."""
        s = self.spec
        # the engine's form (qdrant_common.dense_matrix): a byte per bit for binary, unlike the packed
        # bits quantize.bytes_per_vector counts
        point_bytes = s.dim * (4 if s.quantization == "none" else 1) + (s.dim if s.rescore else 0)
        kb = max(1, self.SEGMENT_POINTS * point_bytes // 1024)
        return _edge().EdgeOptimizersConfig(max_segment_size=kb, indexing_threshold=min(kb, self.FULL_SCAN_KB),
                                            default_segment_number=self.SEGMENTS)

    def _exists(self, collection: str) -> bool:
        path = self.dirs.path(collection)
        return path.is_dir() and any(path.iterdir())

    def _open(self, collection: str, config=None):
        q = _edge()
        path = str(self.dirs.path(collection))
        try:
            return q.EdgeShard.load(path, config) if config is not None else q.EdgeShard.load(path)
        except Exception as e:
            msg = str(e)
            if "WouldBlock" in msg or "lock" in msg.lower():
                raise RuntimeError(f"vector collection {collection!r} at {path} is open in another process (a "
                                   f"running writer?); the embedded engine allows one process per shard") from e
            if "incompatible" in msg.lower():
                raise ValueError(f"vector collection {collection!r} at {path} was built with other vector settings "
                                 f"than dim={self.spec.dim}, quantization={self.spec.quantization!r}: {msg}") from e
            raise

    def _shard(self, collection: str):
        sh = self._shards.get(collection)
        if sh is None:
            if not self._exists(collection):
                raise KeyError(f"vector collection {collection!r} does not exist under {self.root}")
            sh = self._shards[collection] = self._open(collection)
        return sh

    # -- lifecycle -------------------------------------------------------------------------
    def ensure_collection(self, collection: str) -> None:
        """Create the shard, or open an existing one checking that its vectors match the spec."""
        if collection in self._shards:
            return
        q = _edge()
        path = self.dirs.path(collection)
        if self._exists(collection):
            self._shards[collection] = self._open(collection, self._config())
            return
        path.mkdir(parents=True, exist_ok=True)
        self._shards[collection] = q.EdgeShard.create(str(path), self._config())
        log.info("created vector collection %s (dim=%d, %s, sparse=%s, rescore=%s)", path, self.spec.dim,
                 self.spec.quantization, self.spec.sparse, self.spec.rescore)

    def _points(self, rows: qc.Rows, lo: int, hi: int) -> list:
        q = _edge()
        point, sparse_vector = q.Point, q.SparseVector
        dense, rescore, sparse = rows.dense, rows.rescore, rows.sparse
        pids, payloads = rows.point_ids, rows.payloads
        out = []
        for i in range(lo, hi):
            # memoryview: the engine reads the row without a Python float per value
            vec: dict[str, Any] = {qc.DENSE: memoryview(dense[i])}
            if rescore is not None:
                vec[qc.DENSE_RESCORE] = memoryview(rescore[i])
            if sparse is not None and sparse[i] is not None:
                vec[qc.SPARSE] = sparse_vector(*sparse[i])
            out.append(point(pids[i], vec, payloads[i]))
        return out

    def upsert(self, collection: str, batch: Columns) -> WriteResult:
        """Write a batch (idempotent: point ids are uuid5 of chunk ids)."""
        t0 = time.perf_counter()
        rows = qc.prepare_rows(self.spec, batch)
        if not len(rows):
            return WriteResult(0, rows.rejects, time.perf_counter() - t0)
        if collection not in self._shards:
            self.ensure_collection(collection)
        sh = self._shards[collection]
        q = _edge()
        for lo in range(0, len(rows), self.UPDATE_POINTS):
            hi = min(len(rows), lo + self.UPDATE_POINTS)
            try:
                sh.update(q.UpdateOperation.upsert_points(self._points(rows, lo, hi)))
            except Exception as e:
                raise RuntimeError(f"upsert into vector collection {collection!r} failed for {hi - lo} points "
                                   f"starting at chunk {rows.chunk_ids[lo]!r} (point {rows.point_ids[lo]}): {e}") from e
        self._unflushed[collection] = self._unflushed.get(collection, 0) + len(rows)
        if self._unflushed[collection] >= self.SEGMENT_POINTS:  # index this segment, start the next
            sh.flush()
            sh.optimize()
            self._unflushed[collection] = 0
        return WriteResult(len(rows), rows.rejects, time.perf_counter() - t0)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        q = _edge()
        sh = self._shard(collection)
        ids = list(ids)
        for lo in range(0, len(ids), 1000):
            sh.update(q.UpdateOperation.delete_points([point_id(i) for i in ids[lo:lo + 1000]]))
        return len(ids)

    def finalize(self, collection: str) -> None:
        """Flush, index what the load left unindexed (optimize: the last segment, merges of small
        segments, vacuuming deletes), flush again."""
        sh = self._shards.get(collection)
        if sh is None:
            self.ensure_collection(collection)
            sh = self._shards[collection]
        t0 = time.perf_counter()
        sh.flush()
        sh.optimize()
        sh.flush()
        self._unflushed[collection] = 0
        info = sh.info()
        log.info("finalized vector collection %s: %d points, %d segments, %d indexed vectors in %.1fs", collection,
                 info.points_count, info.segments_count, info.indexed_vectors_count, time.perf_counter() - t0)

    def count(self, collection: str) -> int:
        q = _edge()
        return int(self._shard(collection).count(q.CountRequest(exact=True)))

    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        sh = self._shard(collection)
        ids = list(ids)
        out: dict[str, dict[str, Any]] = {}
        for lo in range(0, len(ids), 1000):
            for r in sh.retrieve([point_id(i) for i in ids[lo:lo + 1000]], with_payload=True, with_vector=False):
                if r.payload:
                    out[r.payload["id"]] = dict(r.payload)
        return out

    def export_rows(self, collection: str, ids: Sequence[str]) -> Columns:
        """Stored points of ``ids`` with payload and every vector, as an upsert batch."""
        sh = self._shard(collection)
        ids = [str(i) for i in ids]
        recs = []
        for lo in range(0, len(ids), 1000):
            recs.extend(sh.retrieve([point_id(i) for i in ids[lo:lo + 1000]], with_payload=True, with_vector=True))
        return qc.export_columns(self.spec, recs, ids)

    def list_collections(self, prefix: str) -> list[str]:
        return self.dirs.list(prefix)

    def drop_collection(self, collection: str) -> None:
        self._release(collection)
        self.dirs.drop(collection)

    def get_alias(self, alias: str) -> str | None:
        return self.dirs.get_alias(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        self.dirs.set_alias(alias, collection)

    def _release(self, collection: str) -> None:
        sh = self._shards.pop(collection, None)
        self._unflushed.pop(collection, None)
        if sh is not None:
            try:
                sh.flush()
            finally:
                sh.close()

    def close(self) -> None:
        """Flush and close every open shard (releases the engine's lock on them)."""
        for collection in list(self._shards):
            try:
                self._release(collection)
            except Exception:  # noqa: BLE001 - closing the others matters more
                log.warning("closing vector collection %s failed", collection, exc_info=True)

    # -- search ----------------------------------------------------------------------------
    def _query(self, collection: str, query, using: str, k: int, with_vectors: bool) -> list:
        q = _edge()
        params = q.SearchParams(hnsw_ef=max(self.cfg.hnsw_ef, k), exact=self.cfg.exact)
        names = [qc.DENSE] + ([qc.DENSE_RESCORE] if self.spec.rescore else [])
        req = q.QueryRequest(query=q.Query.Nearest(query, using=using), limit=k, with_payload=True,
                             with_vector=names if with_vectors else False, params=params)
        return self._shard(collection).query(req)

    def _hits(self, points, dense: bool, with_vectors: bool) -> list[Hit]:
        return qc.to_hits(self.spec, points, dense, with_vectors)

    def search_dense(self, collection: str, vector: np.ndarray, k: int, with_vectors: bool = False) -> list[Hit]:
        """Nearest chunks to ``vector`` in storage form (float32, uint8 codes, or packed bits).

        With ``with_vectors`` each hit carries ``dense`` (and ``dense_rescore``) in storage form;
        for ``binary`` that is the packed bits, as written."""
        v = qc.query_vector(self.spec, vector)
        return self._hits(self._query(collection, memoryview(v), qc.DENSE, k, with_vectors), True, with_vectors)

    def search_sparse(self, collection: str, query: SparseQuery, k: int) -> list[Hit]:
        """Best chunks by sparse dot product (IDF weighting by the engine when the spec says so)."""
        if not self.spec.sparse:
            raise ValueError("this vector collection has no sparse vectors (spec.sparse is False)")
        if not len(query.indices):
            return []
        q = _edge()
        sv = q.SparseVector(np.asarray(query.indices).tolist(), np.asarray(query.values, dtype=np.float32).tolist())
        return self._hits(self._query(collection, sv, qc.SPARSE, k, False), False, False)

    def fetch_vectors(self, collection: str, ids: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """Stored vectors (storage form) of the given chunk ids."""
        recs = self._shard(collection).retrieve([point_id(i) for i in ids], with_payload=True, with_vector=[name])
        return {r.payload["id"]: qc.storage_form(self.spec, name, r.vector[name])
                for r in recs if r.payload and r.vector and name in r.vector}
