"""Embedded vector store: the Qdrant engine in-process (``qdrant-edge-py``), one shard per collection.

Named vectors: ``dense`` (float32 cosine; uint8 codes with Euclid distance for int8/uint8; 0/1
bits with Euclid = Hamming for binary) and, for binary with rescoring, ``dense_rescore`` (int8
codes, cold storage, not indexed); sparse vector ``sparse`` (IDF modifier for BM25 weights).
One process may open a shard for writing: the pipeline writes through a single actor.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import numpy as np

from .. import schema
from ..config import EdgeStoreConfig
from ..ids import point_id
from ._local import LocalCollections
from .base import Hit, SparseQuery, VectorSpec, VectorStore, WriteResult

log = logging.getLogger(__name__)


class EdgeVectorStore(VectorStore):
    """Versioned collections of the embedded Qdrant engine under ``root``."""

    single_writer = True

    def __init__(self, root: str, spec: VectorSpec, cfg: EdgeStoreConfig | None = None):
        super().__init__(spec)
        self.cfg = cfg or EdgeStoreConfig()
        self.dirs = LocalCollections(root)
        self._shards: dict[str, Any] = {}

    # -- shards ----------------------------------------------------------------------------
    def _config(self):
        import qdrant_edge as q

        s = self.spec
        hnsw = q.HnswIndexConfig(m=self.cfg.hnsw_m, ef_construct=self.cfg.hnsw_ef_construct, full_scan_threshold=10_000)
        if s.quantization == "none":
            dense = q.EdgeVectorParams(size=s.dim, distance=q.Distance.Cosine)
        else:
            dense = q.EdgeVectorParams(size=s.dim, distance=q.Distance.Euclid, datatype=q.VectorStorageDatatype.Uint8)
        vectors = {"dense": dense}
        if s.rescore:
            vectors["dense_rescore"] = q.EdgeVectorParams(
                size=s.dim, distance=q.Distance.Euclid, datatype=q.VectorStorageDatatype.Uint8,
                memory=q.Memory.Cold,
                hnsw_config=q.HnswIndexConfig(m=0, ef_construct=self.cfg.hnsw_ef_construct, full_scan_threshold=10_000))
        sparse = {"sparse": q.EdgeSparseVectorParams(modifier=q.Modifier.Idf if s.sparse_idf else None)} if s.sparse else None
        return q.EdgeConfig(vectors=vectors, sparse_vectors=sparse, hnsw_config=hnsw)

    def _shard(self, collection: str, create: bool = False):
        import qdrant_edge as q

        sh = self._shards.get(collection)
        if sh is not None:
            return sh
        path = self.dirs.path(collection)
        if path.exists() and any(path.iterdir()):
            sh = q.EdgeShard.load(str(path))
        elif create:
            path.mkdir(parents=True, exist_ok=True)
            sh = q.EdgeShard.create(str(path), self._config())
        else:
            raise KeyError(f"vector collection {collection!r} does not exist under {self.dirs.root}")
        self._shards[collection] = sh
        return sh

    # -- lifecycle -------------------------------------------------------------------------
    def ensure_collection(self, collection: str) -> None:
        self._shard(collection, create=True)

    def _dense(self, v: np.ndarray) -> np.ndarray:
        if self.spec.quantization == "binary":
            return np.unpackbits(np.asarray(v, dtype=np.uint8), axis=-1)[..., : self.spec.dim]
        return np.asarray(v)

    def upsert(self, collection: str, batch: dict[str, np.ndarray]) -> WriteResult:
        import qdrant_edge as q

        sh = self._shard(collection, create=True)
        dense = self._dense(batch[schema.DENSE])
        dense_list = dense.astype(np.float32).tolist()
        rescore = batch.get(schema.DENSE_RESCORE) if self.spec.rescore else None
        has_sparse = self.spec.sparse and schema.SPARSE_INDICES in batch
        points = []
        for i, cid in enumerate(batch[schema.ID]):
            vec: dict[str, Any] = {"dense": dense_list[i]}
            if rescore is not None:
                vec["dense_rescore"] = np.asarray(rescore[i], dtype=np.float32).tolist()
            if has_sparse:
                idx = np.asarray(batch[schema.SPARSE_INDICES][i])
                if len(idx):
                    vec["sparse"] = q.SparseVector(idx.astype(np.int64).tolist(),
                                                   np.asarray(batch[schema.SPARSE_VALUES][i], dtype=np.float32).tolist())
            payload = {"id": cid, "hash": batch[schema.HASH][i], "title": batch[schema.TITLE][i],
                       "metadata": json.loads(batch[schema.METADATA][i] or "{}")}
            pid = batch[schema.POINT_ID][i] if schema.POINT_ID in batch else point_id(cid)
            points.append(q.Point(pid, vec, payload))
        sh.update(q.UpdateOperation.upsert_points(points))
        return WriteResult(written=len(points))

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        import qdrant_edge as q

        sh = self._shard(collection)
        for start in range(0, len(ids), 1000):
            sh.update(q.UpdateOperation.delete_points([point_id(i) for i in ids[start:start + 1000]]))
        return len(ids)

    def finalize(self, collection: str) -> None:
        sh = self._shard(collection, create=True)
        sh.flush()
        sh.optimize()
        sh.flush()

    def count(self, collection: str) -> int:
        import qdrant_edge as q

        return int(self._shard(collection).count(q.CountRequest(exact=True)))

    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        recs = self._shard(collection).retrieve([point_id(i) for i in ids], with_payload=True, with_vector=False)
        return {r.payload["id"]: dict(r.payload) for r in recs if r.payload}

    def list_collections(self, prefix: str) -> list[str]:
        return self.dirs.list(prefix)

    def drop_collection(self, collection: str) -> None:
        sh = self._shards.pop(collection, None)
        if sh is not None:
            sh.close()
        self.dirs.drop(collection)

    def get_alias(self, alias: str) -> str | None:
        return self.dirs.get_alias(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        self.dirs.set_alias(alias, collection)

    def close(self) -> None:
        for sh in self._shards.values():
            try:
                sh.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._shards.clear()

    # -- search ----------------------------------------------------------------------------
    def _query(self, collection: str, query, using: str, k: int, with_vectors: bool) -> list[Hit]:
        import qdrant_edge as q

        params = q.SearchParams(hnsw_ef=max(self.cfg.hnsw_ef, k), exact=self.cfg.exact)
        req = q.QueryRequest(query=q.Query.Nearest(query, using=using), limit=k, with_payload=True,
                             with_vector=with_vectors, params=params)
        hits = []
        for p in self._shard(collection).query(req):
            payload = dict(p.payload or {})
            vecs = {}
            if with_vectors and p.vector:
                for name in ("dense", "dense_rescore"):
                    if name in p.vector:
                        vecs[name] = np.asarray(p.vector[name], dtype=np.float32)
            hits.append(Hit(payload.get("id", str(p.id)), float(p.score), payload, vecs))
        return hits

    def search_dense(self, collection: str, vector: np.ndarray, k: int, with_vectors: bool = False) -> list[Hit]:
        v = self._dense(np.asarray(vector)[None, :])[0] if self.spec.quantization == "binary" else np.asarray(vector)
        hits = self._query(collection, np.asarray(v, dtype=np.float32).tolist(), "dense", k, with_vectors)
        if self.spec.quantization != "none":
            for h in hits:  # Euclid: smaller is closer; report a similarity
                h.score = -h.score
        return hits

    def search_sparse(self, collection: str, query: SparseQuery, k: int) -> list[Hit]:
        import qdrant_edge as q

        return self._query(collection, q.SparseVector(list(query.indices), list(query.values)), "sparse", k, False)

    def fetch_vectors(self, collection: str, ids: Sequence[str], name: str) -> dict[str, np.ndarray]:
        recs = self._shard(collection).retrieve([point_id(i) for i in ids], with_payload=True, with_vector=[name])
        return {r.payload["id"]: np.asarray(r.vector[name], dtype=np.float32) for r in recs if r.vector}
