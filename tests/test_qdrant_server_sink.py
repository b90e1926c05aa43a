"""The Qdrant server store on qdrant-client's local mode (same API as a server): collection layout,
the store contract, request batching, the retry policy, the bulk-load profile, connection settings
and secrets; and congruence with the embedded store, store-level and through the whole pipeline."""

from __future__ import annotations

import json
import logging
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from indexer import schema
from indexer.config import EdgeStoreConfig, QdrantServerConfig, load_config
from indexer.ids import point_id
from indexer.schema import SparseQuery, VectorSpec
from indexer.stores import qdrant_server as qs
from indexer.stores.base import TransientStoreError
from indexer.stores.qdrant_edge import EdgeVectorStore
from indexer.stores.qdrant_server import QdrantServerStore, is_transient
from tests.conftest import sample_docs, write_parquet

COLL = "chunks_v1"
SECRET = "qk-7f3e9a1c-do-not-log"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def _batch(n: int, spec: VectorSpec, start: int = 0, seed: int = 0, meta: dict | None = None) -> dict:
    """A write batch as the encode stage produces it (dense in storage form, bm25-like sparse)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, spec.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if spec.quantization == "none":
        dense = x
    elif spec.quantization == "binary":
        dense = np.packbits(x > 0, axis=1)
    else:
        dense = np.clip(np.rint(x * 127 + 128), 0, 255).astype(np.uint8)
    ids = [f"doc-{start + i:04d}" for i in range(n)]
    idx = np.empty(n, dtype=object)
    val = np.empty(n, dtype=object)
    for i in range(n):
        terms = rng.choice(50, size=3 + i % 4, replace=False)
        idx[i] = np.sort(terms).astype(np.int32)
        val[i] = rng.uniform(0.5, 2.0, len(terms)).astype(np.float32)
    b = {
        schema.ID: np.array(ids, dtype=object),
        schema.HASH: np.array([f"h{start + i}" for i in range(n)], dtype=object),
        schema.TITLE: np.array([f"title {start + i}" for i in range(n)], dtype=object),
        schema.METADATA: np.array([json.dumps({"source": f"s{i % 3}", **(meta or {})}) for i in range(n)],
                                  dtype=object),
        schema.DENSE: dense,
        schema.SPARSE_INDICES: idx,
        schema.SPARSE_VALUES: val,
    }
    if spec.rescore:
        b[schema.DENSE_RESCORE] = np.clip(np.rint(x * 127 + 128), 0, 255).astype(np.uint8)
    return b


def _cfg(**kw) -> QdrantServerConfig:
    return QdrantServerConfig(**{"payload_indexes": {"source": "keyword"}, **kw})


def _store(tmp_path, spec=None, **kw) -> QdrantServerStore:
    return QdrantServerStore(spec or VectorSpec(dim=8, quantization="none", sparse=True),
                             _cfg(**{"initial_backoff": 0.001, **kw}), local_path=str(tmp_path / "qdrant"))


class Through:
    """Wraps the client: records calls, optionally fails ``upsert`` with queued errors first."""

    def __init__(self, client, upsert_errors=()):
        self._c = client
        self.errors = list(upsert_errors)
        self.calls: list[str] = []
        self.upserts: list[int] = []

    def __getattr__(self, name):
        attr = getattr(self._c, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            self.calls.append(name)
            return attr(*a, **kw)

        return call

    def upsert(self, collection, points, **kw):
        self.calls.append("upsert")
        self.upserts.append(len(points))
        if self.errors:
            raise self.errors.pop(0)
        return self._c.upsert(collection, points=points, **kw)


class ServerEcho(Through):
    """What a server reports and local mode drops: collection-level HNSW ``m``, shards and payload
    indexes (local mode accepts them and ignores them)."""

    def __init__(self, client):
        super().__init__(client)
        self.hnsw_m: dict[str, int] = {}
        self.created: dict[str, dict] = {}
        self.indexes: dict[str, dict] = {}

    def create_collection(self, name, **kw):
        self.calls.append("create_collection")
        self.created[name] = kw
        self.hnsw_m[name] = kw["hnsw_config"].m if kw.get("hnsw_config") else 16
        return self._c.create_collection(name, **kw)

    def update_collection(self, name, **kw):
        self.calls.append("update_collection")
        if kw.get("hnsw_config") is not None and kw["hnsw_config"].m is not None:
            self.hnsw_m[name] = kw["hnsw_config"].m
        return self._c.update_collection(name, **kw)

    def create_payload_index(self, name, field_name, field_schema=None, **kw):
        self.calls.append(f"create_payload_index:{field_name}")
        self.indexes.setdefault(name, {})[field_name] = field_schema
        return self._c.create_payload_index(name, field_name, field_schema=field_schema, **kw)

    def get_collection(self, name):
        info = self._c.get_collection(name)
        info.config.hnsw_config.m = self.hnsw_m.get(name, 16)
        info.config.params.shard_number = self.created.get(name, {}).get("shard_number")
        info.payload_schema = {k: m.PayloadIndexInfo(data_type=v, points=0)
                               for k, v in self.indexes.get(name, {}).items()}
        return info


def _http(status: int, body: bytes = b'{"status":{"error":"boom"}}') -> UnexpectedResponse:
    return UnexpectedResponse(status_code=status, reason_phrase="", content=body, headers=httpx.Headers())


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return self._code.name


# ------------------------------------------------------------------------------------------
# collection layout
# ------------------------------------------------------------------------------------------

def test_collection_layout_float_with_payload_indexes_before_load(tmp_path):
    store = _store(tmp_path, shard_number=2, replication_factor=1)
    store.client = echo = ServerEcho(store.client)
    try:
        store.ensure_collection(COLL)
        info = store.client.get_collection(COLL)
        dense = info.config.params.vectors["dense"]
        assert dense.size == 8 and dense.distance == m.Distance.COSINE and dense.datatype is None
        assert info.config.params.sparse_vectors["sparse"].modifier == m.Modifier.IDF
        assert "dense_rescore" not in info.config.params.vectors
        assert info.config.params.shard_number == 2 and echo.created[COLL]["replication_factor"] == 1
        assert {k: v.data_type for k, v in info.payload_schema.items()} == {
            "id": m.PayloadSchemaType.KEYWORD, "metadata.source": m.PayloadSchemaType.KEYWORD}
        store.upsert(COLL, _batch(5, store.spec))
        first_upsert = echo.calls.index("upsert")
        assert max(i for i, c in enumerate(echo.calls) if c.startswith("create_payload_index")) < first_upsert
        # idempotent: a second ensure neither recreates nor re-indexes
        n_calls = len(echo.calls)
        store.ensure_collection(COLL)
        assert not [c for c in echo.calls[n_calls:] if c.startswith("create")]
    finally:
        store.close()


def test_collection_layout_uint8_codes_and_rescore_vectors(tmp_path):
    spec = VectorSpec(dim=16, quantization="binary", sparse=True, sparse_idf=False, rescore=True)
    store = _store(tmp_path, spec)
    try:
        store.ensure_collection(COLL)
        p = store.client.get_collection(COLL).config.params
        assert p.vectors["dense"].datatype == m.Datatype.UINT8 and p.vectors["dense"].distance == m.Distance.EUCLID
        assert p.vectors["dense"].size == 16  # bits unpacked to 0/1 values
        r = p.vectors["dense_rescore"]
        assert r.datatype == m.Datatype.UINT8 and r.on_disk and r.hnsw_config.m == 0
        assert p.sparse_vectors["sparse"].modifier is None
    finally:
        store.close()


def test_server_side_quantization_keeps_originals_on_disk_and_rescores(tmp_path):
    store = _store(tmp_path, server_quantization="int8")
    try:
        store.ensure_collection(COLL)
        d = store.client.get_collection(COLL).config.params.vectors["dense"]
        sq = d.quantization_config.scalar
        assert sq.type == m.ScalarType.INT8 and sq.quantile == 0.99 and sq.always_ram and d.on_disk
        store.local_path = None  # what a server is asked (local mode searches exactly, without params)
        params = store._search_params(10)
        store.local_path = str(tmp_path / "qdrant")
        assert params.quantization.rescore and params.quantization.oversampling >= 1
    finally:
        store.close()
    # uint8 codes are one byte already: no server quantization on top
    s8 = _store(tmp_path / "u8", VectorSpec(dim=8, quantization="uint8", sparse=False), server_quantization="int8")
    try:
        assert s8.vectors_config()["dense"].quantization_config is None
    finally:
        s8.close()


def test_existing_collection_with_other_vectors_is_refused(tmp_path):
    store = _store(tmp_path)
    store.ensure_collection(COLL)
    store.close()
    other = _store(tmp_path, VectorSpec(dim=8, quantization="int8", sparse=True))
    try:
        with pytest.raises(ValueError, match=f"{COLL}.*other vector settings.*datatype"):
            other.ensure_collection(COLL)
    finally:
        other.close()


# ------------------------------------------------------------------------------------------
# the store contract
# ------------------------------------------------------------------------------------------

def test_upsert_count_retrieve_fetch_delete_aliases_drop(tmp_path):
    store = _store(tmp_path)
    try:
        store.ensure_collection(COLL)
        b = _batch(30, store.spec)
        res = store.upsert(COLL, b)
        assert res.written == 30 and not res.rejects
        store.upsert(COLL, b)  # a retried task: idempotent
        store.finalize(COLL)
        assert store.count(COLL) == 30
        got = store.retrieve(COLL, ["doc-0003", "doc-0029", "missing"])
        assert set(got) == {"doc-0003", "doc-0029"}
        assert got["doc-0003"] == {"id": "doc-0003", "hash": "h3", "metadata": {"source": "s0"}, "title": "title 3"}
        pts = store.client.retrieve(COLL, ids=[point_id("doc-0003")])
        assert pts and pts[0].payload["id"] == "doc-0003"
        vecs = store.fetch_vectors(COLL, ["doc-0003"], "dense")
        np.testing.assert_allclose(vecs["doc-0003"], b[schema.DENSE][3], rtol=1e-5)
        assert store.delete(COLL, ["doc-0003", "doc-0004"]) == 2
        assert store.count(COLL) == 28 and not store.retrieve(COLL, ["doc-0003"])

        store.ensure_collection("chunks_v2")
        store.ensure_collection("other_v1")
        assert store.list_collections("chunks_v") == ["chunks_v1", "chunks_v2"]
        assert store.get_alias("chunks") is None
        store.set_alias("chunks", "chunks_v1")
        assert store.get_alias("chunks") == "chunks_v1"
        store.set_alias("chunks", "chunks_v2")
        assert store.get_alias("chunks") == "chunks_v2"
        with pytest.raises(KeyError, match="chunks_v9"):
            store.set_alias("chunks", "chunks_v9")
        store.drop_collection("chunks_v1")
        store.drop_collection("chunks_v1")  # idempotent
        assert store.list_collections("chunks_v") == ["chunks_v2"]
    finally:
        store.close()
    # persisted, and the folder is released on close
    again = _store(tmp_path)
    try:
        assert again.get_alias("chunks") == "chunks_v2"
        with pytest.raises(RuntimeError, match="another process"):
            _store(tmp_path)
    finally:
        again.close()


def test_bad_rows_become_rejects(tmp_path):
    store = _store(tmp_path)
    try:
        store.ensure_collection(COLL)
        b = _batch(4, store.spec)
        b[schema.METADATA][1] = "[1, 2]"
        res = store.upsert(COLL, b)
        assert res.written == 3 and [i for i, _ in res.rejects] == ["doc-0001"]
        assert store.count(COLL) == 3
    finally:
        store.close()


def test_search_scores_higher_is_better(tmp_path):
    for quant in ("none", "int8", "binary"):
        spec = VectorSpec(dim=16, quantization=quant, sparse=True, rescore=quant == "binary")
        store = _store(tmp_path / quant, spec)
        try:
            store.ensure_collection(COLL)
            b = _batch(40, spec)
            store.upsert(COLL, b)
            hits = store.search_dense(COLL, b[schema.DENSE][7], 5, with_vectors=True)
            assert hits[0].id == "doc-0007" and hits[0].payload["hash"] == "h7"
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert hits[0].score == pytest.approx(1.0 if quant == "none" else 0.0, abs=1e-5)
            np.testing.assert_allclose(hits[0].vectors["dense"], b[schema.DENSE][7], rtol=1e-5)
            if quant == "binary":
                np.testing.assert_array_equal(hits[0].vectors["dense_rescore"], b[schema.DENSE_RESCORE][7])
            q = SparseQuery(b[schema.SPARSE_INDICES][7].tolist(), b[schema.SPARSE_VALUES][7].tolist())
            sp = store.search_sparse(COLL, q, 5)
            assert sp and [h.score for h in sp] == sorted((h.score for h in sp), reverse=True)
            assert store.search_sparse(COLL, SparseQuery([], []), 5) == []
            hy = store.search_hybrid(COLL, b[schema.DENSE][7], q, 5)
            assert hy[0].id == "doc-0007"
        finally:
            store.close()


@pytest.mark.parametrize("spec", [
    VectorSpec(dim=24, quantization="none", sparse=True),
    VectorSpec(dim=24, quantization="int8", sparse=True),
    VectorSpec(dim=24, quantization="binary", sparse=True, sparse_idf=False, rescore=True),
], ids=["none", "int8", "binary-rescore"])
def test_same_results_as_embedded_store(tmp_path, spec):
    """Same layout, same scores: both stores answer every query alike (exact search)."""
    b = _batch(60, spec, seed=3)
    edge = EdgeVectorStore(str(tmp_path / "edge"), spec, EdgeStoreConfig(exact=True))
    server = _store(tmp_path, spec)
    try:
        for s in (edge, server):
            s.ensure_collection(COLL)
            s.upsert(COLL, b)
            s.finalize(COLL)
        queries = _batch(5, spec, seed=11)
        for i in range(5):
            a = edge.search_dense(COLL, queries[schema.DENSE][i], 10, with_vectors=True)
            c = server.search_dense(COLL, queries[schema.DENSE][i], 10, with_vectors=True)
            _assert_same_ranking(a, c)
            vecs = {h.id: h.vectors for h in c}
            for x in a:
                if x.id not in vecs:  # a tie at the cut-off
                    continue
                assert x.vectors.keys() == vecs[x.id].keys()
                for name in x.vectors:
                    np.testing.assert_allclose(x.vectors[name], vecs[x.id][name], rtol=1e-5)
            q = SparseQuery(queries[schema.SPARSE_INDICES][i].tolist(), queries[schema.SPARSE_VALUES][i].tolist())
            _assert_same_ranking(edge.search_sparse(COLL, q, 10), server.search_sparse(COLL, q, 10))
    finally:
        edge.close()
        server.close()


def _assert_same_ranking(a, b, tol=1e-4):
    """Same scores position by position; ids may only differ among hits with tied scores."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, rel=tol, abs=tol)
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and abs(a[j + 1].score - a[i].score) <= tol:
            j += 1
        if j + 1 < len(a):  # the last group may continue past the cut-off
            assert {h.id for h in a[i:j + 1]} == {h.id for h in b[i:j + 1]}, (i, a[i:j + 1], b[i:j + 1])
        i = j + 1


# ------------------------------------------------------------------------------------------
# batching
# ------------------------------------------------------------------------------------------

def test_requests_bounded_by_rows(tmp_path):
    store = _store(tmp_path, batch_rows=10)
    store.client = t = Through(store.client)
    try:
        store.ensure_collection(COLL)
        store.upsert(COLL, _batch(25, store.spec))
        assert t.upserts == [10, 10, 5]
        assert store.count(COLL) == 25
    finally:
        store.close()


def test_requests_bounded_by_bytes(tmp_path):
    spec = VectorSpec(dim=64, quantization="none", sparse=True)
    store = _store(tmp_path, spec, batch_rows=1000, batch_bytes=2048)
    store.client = t = Through(store.client)
    try:
        store.ensure_collection(COLL)
        b = _batch(20, spec)
        b[schema.METADATA][5] = json.dumps({"source": "big", "blob": "x" * 5000})
        store.upsert(COLL, b)
        rows = qs.qc.prepare_rows(spec, b)
        ranges = store.request_ranges(rows)
        assert len(t.upserts) == len(ranges) > 1 and sum(t.upserts) == 20
        for lo, hi in ranges:
            size = sum(store._row_bytes(rows, i) for i in range(lo, hi))
            assert size <= 2048 or hi - lo == 1
        assert (5, 6) in ranges  # larger than the bound: alone
        assert store.count(COLL) == 20
    finally:
        store.close()


def test_several_requests_in_flight(tmp_path):
    store = _store(tmp_path, batch_rows=4, parallel=3)
    store.ensure_collection(COLL)
    store.parallel = 3  # local mode writes one request at a time; a server takes several
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "points": 0}

    class Slow:
        def upsert(self, collection, points, **kw):
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.05)
            with lock:
                state["now"] -= 1
                state["points"] += len(points)

        def close(self):
            pass

    real, store.client = store.client, Slow()
    try:
        assert store.upsert(COLL, _batch(24, store.spec)).written == 24
        assert state["points"] == 24 and state["max"] >= 2
    finally:
        store.close()
        real.close()


# ------------------------------------------------------------------------------------------
# retry policy
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status,transient", [(408, True), (429, True), (500, True), (502, True), (503, True),
                                              (400, False), (401, False), (404, False), (409, False)])
def test_transient_classification_http(status, transient):
    assert is_transient(_http(status)) is transient


def test_transient_classification_other():
    assert is_transient(ResponseHandlingException(httpx.ReadTimeout("timed out")))
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        assert is_transient(FakeRpcError(code))
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED):
        assert not is_transient(FakeRpcError(code))
    assert not is_transient(ValueError("bad"))


@pytest.mark.parametrize("errors", [
    [_http(429), _http(503)],
    [ResponseHandlingException(httpx.ReadTimeout("timed out")), FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED)],
], ids=["429-503", "timeouts"])
def test_transient_failures_are_retried_with_backoff(tmp_path, monkeypatch, errors):
    delays = []
    monkeypatch.setattr(qs, "_sleep", delays.append)
    store = _store(tmp_path, max_retries=3, initial_backoff=0.5)
    store.ensure_collection(COLL)
    store.client = t = Through(store.client, errors)
    try:
        assert store.upsert(COLL, _batch(6, store.spec)).written == 6
        assert t.upserts == [6, 6, 6] and delays == [0.5, 1.0]
        assert store.count(COLL) == 6
    finally:
        store.close()


def test_retry_after_is_honoured(tmp_path, monkeypatch):
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    delays = []
    monkeypatch.setattr(qs, "_sleep", delays.append)
    store = _store(tmp_path, initial_backoff=0.5)
    store.ensure_collection(COLL)
    store.client = Through(store.client, [ResourceExhaustedResponse("rate limited", 3)])
    try:
        assert store.upsert(COLL, _batch(2, store.spec)).written == 2 and delays == [3.0]
    finally:
        store.close()


def test_exhausted_retries_raise_transient_error(tmp_path, monkeypatch):
    monkeypatch.setattr(qs, "_sleep", lambda s: None)
    store = _store(tmp_path, max_retries=2)
    store.ensure_collection(COLL)
    store.client = t = Through(store.client, [_http(503)] * 10)
    try:
        with pytest.raises(TransientStoreError, match=f"{COLL}.*doc-0000.*2 retries"):
            store.upsert(COLL, _batch(3, store.spec))
        assert len(t.upserts) == 3
    finally:
        store.close()


def test_refused_request_fails_at_once_naming_collection_and_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(qs, "_sleep", lambda s: pytest.fail("a 400 must not be retried"))
    store = _store(tmp_path, batch_rows=2)
    store.ensure_collection(COLL)
    t = Through(store.client, [])
    store.client = t
    store.upsert(COLL, _batch(2, store.spec))  # the first request goes through
    t.errors = [_http(400, b'{"status":{"error":"Wrong input: vector dimension error"}}')]
    try:
        with pytest.raises(RuntimeError) as ei:
            store.upsert(COLL, _batch(2, store.spec, start=10))
        assert not isinstance(ei.value, TransientStoreError)
        msg = str(ei.value)
        assert COLL in msg and "doc-0010" in msg and "not retried" in msg and "dimension error" in msg
        assert t.upserts == [2, 2]
    finally:
        store.close()


# ------------------------------------------------------------------------------------------
# bulk-load profile
# ------------------------------------------------------------------------------------------

def test_indexing_deferred_during_load_and_restored_by_finalize(tmp_path):
    store = _store(tmp_path, hnsw_m=24)
    store.client = echo = ServerEcho(store.client)
    try:
        store.ensure_collection(COLL)
        assert store.client.get_collection(COLL).config.hnsw_config.m == 0
        store.upsert(COLL, _batch(10, store.spec))
        assert store.client.get_collection(COLL).config.hnsw_config.m == 0
        store.finalize(COLL)
        assert store.client.get_collection(COLL).config.hnsw_config.m == 24
        assert echo.calls.count("update_collection") == 1
        # a later load into the existing (live) collection keeps its graph
        store.ensure_collection(COLL)
        store.upsert(COLL, _batch(5, store.spec, start=100))
        store.finalize(COLL)
        assert store.client.get_collection(COLL).config.hnsw_config.m == 24
        assert echo.calls.count("update_collection") == 1
    finally:
        store.close()


def test_finalize_waits_for_green(tmp_path, monkeypatch):
    polls = []
    monkeypatch.setattr(qs, "_sleep", polls.append)
    store = _store(tmp_path)
    store.ensure_collection(COLL)
    statuses = [m.CollectionStatus.YELLOW, m.CollectionStatus.GREY, m.CollectionStatus.YELLOW,
                m.CollectionStatus.GREEN]

    class Status(Through):
        def get_collection(self, name):
            info = self._c.get_collection(name)
            info.status = statuses.pop(0) if statuses else m.CollectionStatus.GREEN
            return info

    store.client = t = Status(store.client)
    try:
        store.wait_ready(COLL)
        assert len(polls) == 3 and t.calls.count("update_collection") == 1  # grey: optimizers nudged once
        statuses[:] = [m.CollectionStatus.RED]
        with pytest.raises(RuntimeError, match=f"{COLL}.*red"):
            store.wait_ready(COLL)
        statuses[:] = [m.CollectionStatus.YELLOW] * 100
        with pytest.raises(RuntimeError, match=f"{COLL}.*still yellow.*ready_timeout"):
            store.wait_ready(COLL, timeout=0.0)
    finally:
        store.close()


# ------------------------------------------------------------------------------------------
# connection settings and secrets
# ------------------------------------------------------------------------------------------

class FakeClient:
    """Stands in for ``QdrantClient`` against a server: records its options, answers scripted errors."""

    made: list[dict] = []
    probe_errors: list[Exception] = []
    upsert_error: Exception | None = None

    def __init__(self, **kw):
        FakeClient.made.append(kw)
        self.kw = kw

    def get_collections(self):
        if self.kw.get("prefer_grpc") and FakeClient.probe_errors:
            raise FakeClient.probe_errors.pop(0)
        return m.CollectionsResponse(collections=[])

    def upsert(self, *a, **kw):
        raise FakeClient.upsert_error

    def close(self):
        pass


@pytest.fixture
def fake_server(monkeypatch):
    import qdrant_client

    FakeClient.made, FakeClient.probe_errors, FakeClient.upsert_error = [], [], None
    monkeypatch.setattr(qdrant_client, "QdrantClient", FakeClient)
    monkeypatch.setattr(qs, "_sleep", lambda s: None)
    return FakeClient


def test_connection_from_config_with_grpc_preferred(fake_server, monkeypatch):
    monkeypatch.setenv("QDRANT_API_KEY", SECRET)
    store = QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig(url="https://q.example:6333",
                                                                              timeout=7.5, grpc_port=7334))
    kw = fake_server.made[-1]
    assert kw["url"] == "https://q.example:6333" and kw["prefer_grpc"] and kw["grpc_port"] == 7334
    assert kw["timeout"] == 8 and kw["api_key"] == SECRET and "verify" not in kw  # default: verify, system CAs
    assert store.transport == "grpc" and len(fake_server.made) == 1


def test_rest_fallback_when_grpc_unreachable(fake_server, caplog):
    fake_server.probe_errors = [FakeRpcError(grpc.StatusCode.UNAVAILABLE)]
    with caplog.at_level(logging.WARNING, logger="indexer"):
        store = QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig())
    assert store.transport == "rest" and [k["prefer_grpc"] for k in fake_server.made] == [True, False]
    assert "using REST" in caplog.text
    fake_server.made.clear()
    QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig(prefer_grpc=False))
    assert [k["prefer_grpc"] for k in fake_server.made] == [False]
    fake_server.made.clear()
    fake_server.probe_errors = [FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED)]  # busy, but gRPC works
    assert QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig()).transport == "grpc"
    fake_server.probe_errors = [FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)]
    with pytest.raises(RuntimeError, match="refused the first request"):
        QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig())


def test_tls_verifies_against_configured_ca(fake_server, tmp_path):
    ca = _self_signed_ca(tmp_path / "ca.pem")
    QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig(url="https://q.internal:6333", ca_file=str(ca)))
    kw = fake_server.made[-1]
    ctx = kw["verify"]
    assert ctx.verify_mode.name == "CERT_REQUIRED" and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "indexer test CA"),),)]
    assert kw["grpc_options"]["root_certificates"] == ca.read_bytes()
    with pytest.raises(ValueError, match="ca_file"):
        QdrantServerStore(VectorSpec(8, "none", True), QdrantServerConfig(ca_file=str(tmp_path / "missing.pem")))


def test_api_key_never_in_repr_logs_or_errors(fake_server, monkeypatch, caplog):
    monkeypatch.setenv("MY_QDRANT_KEY", SECRET)
    cfg = QdrantServerConfig(api_key_env="MY_QDRANT_KEY", max_retries=2)
    with caplog.at_level(logging.DEBUG):
        store = QdrantServerStore(VectorSpec(8, "none", True), cfg)
        assert fake_server.made[-1]["api_key"] == SECRET
        assert SECRET not in repr(store) and SECRET not in str(cfg) and SECRET not in repr(cfg.model_dump())
        echoed = f'{{"status":{{"error":"rejected key {SECRET}"}}}}'.encode()
        fake_server.upsert_error = _http(503, echoed)  # a proxy echoing the header back
        with pytest.raises(TransientStoreError) as transient:
            store.upsert(COLL, _batch(2, store.spec))
        fake_server.upsert_error = _http(400, echoed)
        with pytest.raises(RuntimeError) as terminal:
            store.upsert(COLL, _batch(2, store.spec))
        fake_server.upsert_error = _http(401, echoed)
        with pytest.raises(PermissionError) as auth:
            store.upsert(COLL, _batch(2, store.spec))
    for e in (transient.value, terminal.value, auth.value):
        assert SECRET not in str(e) and "***" in str(e)
    assert "$MY_QDRANT_KEY" in str(auth.value)
    assert "retry 1/2" in caplog.text and SECRET not in caplog.text


def _self_signed_ca(path):
    x509 = pytest.importorskip("cryptography.x509")
    from datetime import datetime, timedelta, timezone

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "indexer test CA")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# ------------------------------------------------------------------------------------------
# congruence through the whole pipeline
# ------------------------------------------------------------------------------------------

def _docs(n: int) -> list[dict]:
    return sample_docs(n, 400)


def _tie_canonical(hits, tol=1e-4):
    """Hits with every run of tied scores put in id order (engines break ties arbitrarily)."""
    out, i = [], 0
    while i < len(hits):
        j = i
        while j + 1 < len(hits) and abs(hits[j + 1].score - hits[i].score) <= tol:
            j += 1
        out.extend(sorted(hits[i:j + 1], key=lambda h: h.id))
        i = j + 1
    return out


def test_pipeline_congruent_with_embedded_store(tmp_path, ray_local):
    """The same corpus indexed into the embedded engine and through qdrant-client answers every
    mode alike (exact search on both; ties may come back in any order)."""
    from indexer.run.pipeline import run
    from indexer.search import Searcher

    docs = _docs(200)
    write_parquet(tmp_path / "corpus" / "a.parquet", docs)
    common = [f"corpus.path={tmp_path / 'corpus'}", "corpus.sample=false", "encode.block_rows=200",
              "verify.sample_ids=20", "vector_store.qdrant.payload_indexes={module: keyword}"]
    cfgs = {
        "edge": load_config("configs/local.yaml", [*common, f"index.dir={tmp_path / 'edge'}",
                                                   "vector_store.kind=edge", "vector_store.edge.exact=true"]),
        "qdrant_local": load_config("configs/local.yaml", [*common, f"index.dir={tmp_path / 'qlocal'}",
                                                           "vector_store.kind=qdrant_local"]),
    }
    for cfg in cfgs.values():
        man = run(cfg)
        assert man["status"] == "succeeded" and man["counts"]["indexed"] == 200
        assert man["counts"]["vector_store"] == 200
    queries = [docs[3]["text"][:150], docs[120]["title"], "read and write files on disk", "json encoder"]
    got = {}
    for kind, cfg in cfgs.items():
        s = Searcher(cfg)
        try:
            enc = s.encode(queries)
            per_query = []
            for q in enc:
                modes = s.mode_hits(q, cfg.search.candidates, ("dense", "sparse", "bm25"))
                canon = {mode: _tie_canonical(hits) for mode, hits in modes.items()}
                per_query.append({"dense": modes["dense"][:15], "sparse": modes["sparse"][:15],
                                  "hybrid": s.fuse(canon, 15), "candidates": modes})
            got[kind] = per_query
            top = s.search(queries[0], mode="hybrid", k=1, with_text=False)
            assert top[0].id == docs[3]["id"], kind
        finally:
            s.close()
    for edge, local in zip(got["edge"], got["qdrant_local"]):
        for mode in ("dense", "sparse"):
            _assert_same_ranking(edge[mode], local[mode])
            _assert_same_ranking(edge["candidates"][mode], local["candidates"][mode])
        # hybrid: fused from the same candidate lists, ties in a canonical order
        assert [h.id for h in edge["hybrid"]] == [h.id for h in local["hybrid"]]
        assert [h.score for h in edge["hybrid"]] == pytest.approx([h.score for h in local["hybrid"]], rel=1e-6)
    assert got["qdrant_local"][0]["dense"][0].id == docs[3]["id"]
