"""``export_rows``: every store gives back stored chunks as the batch its upsert takes, so writing
the export back restores them exactly (what undo records rely on)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import schema
from indexer.config import TextStoreConfig
from indexer.schema import VectorSpec
from indexer.stores.qdrant_edge import EdgeVectorStore
from indexer.stores.qdrant_server import QdrantServerStore
from indexer.stores.tantivy_text import TantivyTextStore
from tests.test_qdrant_server_sink import _batch as vector_batch
from tests.test_qdrant_server_sink import _cfg as qdrant_cfg

SPECS = [VectorSpec.build(16, "none", "bm25", False), VectorSpec.build(16, "int8", "splade", False),
         VectorSpec.build(16, "binary", "bm25", True), VectorSpec.build(16, "uint8", "none", False)]


def _vector_store(kind: str, tmp_path, spec: VectorSpec):
    if kind == "edge":
        return EdgeVectorStore(str(tmp_path / "edge"), spec)
    return QdrantServerStore(spec, qdrant_cfg(initial_backoff=0.001), local_path=str(tmp_path / "qdrant"))


def same_columns(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        if k in (schema.SPARSE_INDICES, schema.SPARSE_VALUES):
            assert len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k])), k
        elif np.asarray(a[k]).dtype == np.float32:  # Cosine vectors are normalised again on write
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
        else:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k


@pytest.mark.parametrize("kind", ["edge", "qdrant_local"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.quantization}-sparse{s.sparse}-rescore{s.rescore}")
def test_vector_export_round_trips(kind, spec, tmp_path):
    store = _vector_store(kind, tmp_path, spec)
    batch = vector_batch(12, spec, meta={"n": [1, 2]})
    store.ensure_collection("c_v1")
    store.upsert("c_v1", batch)
    store.finalize("c_v1")
    ids = ["doc-0003", "missing", "doc-0000", "doc-0011"]
    out = store.export_rows("c_v1", ids)
    assert list(out[schema.ID]) == ["doc-0003", "doc-0000", "doc-0011"]  # asked order, missing left out
    pos = [3, 0, 11]
    assert list(out[schema.HASH]) == [batch[schema.HASH][i] for i in pos]
    assert list(out[schema.TITLE]) == [batch[schema.TITLE][i] for i in pos]
    assert [json.loads(m) for m in out[schema.METADATA]] == [json.loads(batch[schema.METADATA][i]) for i in pos]
    if spec.quantization == "none":  # unit vectors: stored as written
        np.testing.assert_allclose(out[schema.DENSE], batch[schema.DENSE][pos], rtol=1e-6, atol=1e-6)
    else:
        assert np.array_equal(out[schema.DENSE], batch[schema.DENSE][pos])
    if spec.rescore:
        assert np.array_equal(out[schema.DENSE_RESCORE], batch[schema.DENSE_RESCORE][pos])
    if spec.sparse:
        for k, i in enumerate(pos):
            assert np.array_equal(out[schema.SPARSE_INDICES][k], batch[schema.SPARSE_INDICES][i])
            np.testing.assert_allclose(out[schema.SPARSE_VALUES][k], batch[schema.SPARSE_VALUES][i], rtol=1e-6)
    else:
        assert schema.SPARSE_INDICES not in out

    # Overwrite, then write the export back: the store holds exactly what it held before.
    store.upsert("c_v1", vector_batch(12, spec, seed=9))
    store.finalize("c_v1")
    assert not np.array_equal(store.export_rows("c_v1", ids)[schema.DENSE], out[schema.DENSE])
    store.upsert("c_v1", out)
    store.finalize("c_v1")
    same_columns(store.export_rows("c_v1", ids), out)
    assert store.export_rows("c_v1", [])[schema.ID].tolist() == []
    store.close()


def _text_batch(n: int, suffix: str = "") -> dict:
    return {
        schema.ID: np.array([f"d{i}" for i in range(n)], dtype=object),
        schema.TEXT: np.array([f"text number {i} über alles{suffix}" for i in range(n)], dtype=object),
        schema.TITLE: np.array([f"title {i}" if i % 2 else "" for i in range(n)], dtype=object),
        schema.METADATA: np.array([json.dumps({"k": i, "tags": ["a", "b"]}) for i in range(n)], dtype=object),
        schema.HASH: np.array([f"h{i}{suffix}" for i in range(n)], dtype=object),
    }


def test_tantivy_export_round_trips(tmp_path):
    store = TantivyTextStore(str(tmp_path / "text"), TextStoreConfig())
    store.ensure_collection("c_v1")
    batch = _text_batch(8)
    store.upsert("c_v1", batch)
    store.finalize("c_v1")
    out = store.export_rows("c_v1", ["d5", "nope", "d2"])
    assert list(out[schema.ID]) == ["d5", "d2"]
    assert list(out[schema.TEXT]) == [batch[schema.TEXT][5], batch[schema.TEXT][2]]
    assert list(out[schema.TITLE]) == ["title 5", ""]
    assert list(out[schema.HASH]) == ["h5", "h2"]
    assert json.loads(out[schema.METADATA][0]) == {"k": 5, "tags": ["a", "b"]}

    store.upsert("c_v1", _text_batch(8, " (edited)"))
    store.finalize("c_v1")
    store.upsert("c_v1", out)
    store.finalize("c_v1")
    same_columns(store.export_rows("c_v1", ["d5", "d2"]), out)
    assert store.search_bm25("c_v1", "number 5", k=1)[0].id == "d5"
    assert store.count("c_v1") == 8
    store.close()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.quantization}-sparse{s.sparse}-rescore{s.rescore}")
def test_export_survives_the_undo_records_parquet(spec, tmp_path):
    """An undo record keeps exports as Parquet: read back, they are the same batch and upsert the same points."""
    from indexer.run.undo import columns_to_table, table_to_columns
    from indexer.storage import Storage

    store = _vector_store("edge", tmp_path, spec)
    store.ensure_collection("c_v1")
    store.upsert("c_v1", vector_batch(12, spec, meta={"n": [1, 2]}))
    store.finalize("c_v1")
    ids = [f"doc-{i:04d}" for i in (7, 1, 4)]
    out = store.export_rows("c_v1", ids)
    st = Storage()
    st.write_parquet(str(tmp_path / "u.parquet"), columns_to_table(out))
    back = table_to_columns(st.read_parquet(str(tmp_path / "u.parquet")))
    same_columns(back, out)
    assert {k: np.asarray(v).dtype for k, v in back.items()} == {k: np.asarray(v).dtype for k, v in out.items()}
    store.upsert("c_v1", vector_batch(12, spec, seed=9))
    store.upsert("c_v1", back)
    store.finalize("c_v1")
    same_columns(store.export_rows("c_v1", ids), out)
    store.close()

    text = TantivyTextStore(str(tmp_path / "text"), TextStoreConfig())
    text.ensure_collection("c_v1")
    text.upsert("c_v1", _text_batch(4))
    text.finalize("c_v1")
    exported = text.export_rows("c_v1", ["d3", "d0"])
    same_columns(table_to_columns(columns_to_table(exported)), exported)
    text.close()
