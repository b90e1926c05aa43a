"""The embedded vector store loads a corpus as bounded segments: an index build holds one segment,
never the whole corpus, and every point stays findable."""

from __future__ import annotations

import numpy as np

from indexer import schema
from indexer.schema import SparseQuery, VectorSpec
from indexer.stores.qdrant_edge import EdgeVectorStore
from tests.test_qdrant_server_sink import _batch


def test_load_indexes_bounded_segments_and_finds_every_point(tmp_path):
    spec = VectorSpec.build(16, "none", "bm25", False)
    store = EdgeVectorStore(str(tmp_path / "edge"), spec)
    store.SEGMENT_POINTS = 200
    store.ensure_collection("c_v1")
    batches = [_batch(100, spec, start=100 * b, seed=b) for b in range(7)]
    for b in batches:
        store.upsert("c_v1", b)
    store.finalize("c_v1")
    info = store._shard("c_v1").info()
    # 700 points in segments of 200: three indexed during the load, the tail by finalize; none merged back
    assert info.points_count == 700 and store.count("c_v1") == 700
    assert info.segments_count >= 4, info
    assert info.indexed_vectors_count > 0
    for b in (batches[0], batches[3], batches[6]):
        hits = store.search_dense("c_v1", b[schema.DENSE][7], k=1)
        assert hits[0].id == b[schema.ID][7]
        q = SparseQuery(np.asarray(b[schema.SPARSE_INDICES][5]), np.asarray(b[schema.SPARSE_VALUES][5]))
        assert b[schema.ID][5] in [h.id for h in store.search_sparse("c_v1", q, k=20)]
    store.close()
    reopened = EdgeVectorStore(str(tmp_path / "edge"), spec)  # the shard opens again with the same settings
    reopened.ensure_collection("c_v1")
    assert reopened.count("c_v1") == 700
    reopened.close()
