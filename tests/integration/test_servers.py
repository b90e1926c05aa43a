"""The whole job against real servers (``docker compose -f infra/compose.yaml up -d``).

Each test runs when its server's URL is set and is skipped otherwise:

* ``ES_URL`` (e.g. ``http://localhost:9200``): Elasticsearch as the text store. Credentials, when
  the cluster has security on, come from ``ES_API_KEY`` or ``ES_USERNAME`` / ``ES_PASSWORD``; a
  private CA from ``ES_CA_CERTS``.
* ``QDRANT_URL`` (e.g. ``http://localhost:6333``): Qdrant as the vector store. The API key, when
  the server has one, comes from ``QDRANT_API_KEY``; a private CA from ``QDRANT_CA_FILE``.

Run with ``.venv/bin/pytest -q -m integration tests/integration``. Every test writes under a fresh
index name and deletes what it created.
"""

from __future__ import annotations

import os
import uuid

import pytest

from indexer.config import load_config
from indexer.run.pipeline import run
from tests.conftest import sample_docs, write_parquet

ES_URL = os.environ.get("ES_URL")


def _job(tmp_path, prefix: str, *extra: str) -> tuple[str, list[dict], list[str]]:
    """A unique alias, 80 sample docs written as the corpus, and the job overrides for them."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    docs = sample_docs(80, 600)
    write_parquet(tmp_path / "corpus" / "a.parquet", docs)
    overrides = [f"corpus.path={tmp_path / 'corpus'}", "corpus.sample=false", f"index.dir={tmp_path / 'index'}",
                 f"index.name={name}", "encode.block_rows=64", *extra]
    return name, docs, overrides


@pytest.mark.integration
@pytest.mark.skipif(not ES_URL, reason="set ES_URL (e.g. http://localhost:9200) to run against Elasticsearch")
@pytest.mark.usefixtures("ray_local")
def test_elasticsearch_text_store_full_and_incremental_job(tmp_path):
    from indexer.search import Searcher
    from indexer.stores.elasticsearch import ElasticsearchTextStore

    name, docs, overrides = _job(
        tmp_path, "it-es", "text_store.kind=elasticsearch", f"text_store.elasticsearch.hosts=[{ES_URL}]",
        "text_store.elasticsearch.replicas=0", "text_store.elasticsearch.chunk_docs=32")
    if os.environ.get("ES_CA_CERTS"):
        overrides.append(f"text_store.elasticsearch.ca_certs={os.environ['ES_CA_CERTS']}")
    cfg = load_config("configs/local.yaml", overrides)
    store = ElasticsearchTextStore(cfg.text_store)
    try:
        m = run(cfg)
        c = m["counts"]
        assert m["status"] == "succeeded" and m["alias_moved"], m["failures"]
        assert c["input"] == c["indexed"] == c["text_store"] == c["vector_store"] == 80 and c["rejected"] == 0
        built = m["versions"]["built"]
        assert store.get_alias(name) == built
        assert store.count(name) == 80  # through the alias
        settings = store._client.indices.get_settings(index=built)[built]["settings"]["index"]
        assert settings["refresh_interval"] == "1s" and settings["number_of_replicas"] == "0"
        assert settings["similarity"]["default"]["k1"] == str(cfg.text_store.bm25_k1)

        target = docs[7]
        hits = store.search_bm25(name, target["text"][:200], k=5)
        assert hits and hits[0].id == target["id"]
        assert hits[0].payload["text"] == target["text"]
        assert hits[0].payload["metadata"] == {"module": target["module"]}
        s = Searcher(cfg)
        try:
            assert s.search(target["text"][:200], mode="bm25", k=5)[0].id == target["id"]
            assert s.search(target["text"][:200], mode="hybrid", k=5)[0].id == target["id"]
        finally:
            s.close()

        # Incremental: one chunk changed, one gone.
        changed = dict(docs[3], text=docs[3]["text"] + " zymurgical addendum")
        write_parquet(tmp_path / "corpus" / "a.parquet", [changed, *docs[:3], *docs[4:-1]])
        m2 = run(cfg)
        assert m2["mode"] == "incremental" and m2["status"] == "succeeded", m2["failures"]
        assert m2["counts"]["deleted"] == 1 and m2["counts"]["changed"] == 1
        assert store.count(name) == 79
        assert store.retrieve(name, [docs[-1]["id"]]) == {}
        assert store.search_bm25(name, "zymurgical", k=3)[0].id == changed["id"]
    finally:
        for coll in store.list_collections(name + "_v"):
            store.drop_collection(coll)
        store.close()


QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.mark.integration
@pytest.mark.skipif(not QDRANT_URL, reason="set QDRANT_URL (e.g. http://localhost:6333) to run against Qdrant")
@pytest.mark.usefixtures("ray_local")
def test_qdrant_vector_store_full_job(tmp_path):
    from qdrant_client import models as qm

    from indexer.run.plan import vector_spec
    from indexer.search import Searcher
    from indexer.stores.qdrant_server import QdrantServerStore

    name, docs, overrides = _job(
        tmp_path, "it-qdrant", "vector_store.kind=qdrant", f"vector_store.qdrant.url={QDRANT_URL}",
        "vector_store.qdrant.batch_rows=16", "vector_store.qdrant.payload_indexes={module: keyword}",
        "vector_store.qdrant.exact=true")
    if os.environ.get("QDRANT_CA_FILE"):
        overrides.append(f"vector_store.qdrant.ca_file={os.environ['QDRANT_CA_FILE']}")
    cfg = load_config("configs/local.yaml", overrides)
    store = QdrantServerStore(vector_spec(cfg, 384), cfg.vector_store.qdrant)
    try:
        m = run(cfg)
        c = m["counts"]
        assert m["status"] == "succeeded" and m["alias_moved"], m["failures"]
        assert c["input"] == c["indexed"] == c["vector_store"] == c["text_store"] == 80 and c["rejected"] == 0
        built = m["versions"]["built"]
        assert store.get_alias(name) == built and store.count(built) == 80
        info = store.client.get_collection(built)
        assert info.status == qm.CollectionStatus.GREEN
        assert info.config.hnsw_config.m == cfg.vector_store.qdrant.hnsw_m  # restored after the load
        assert {"id", "metadata.module"} <= set(info.payload_schema)
        assert info.config.params.sparse_vectors["sparse"].modifier == qm.Modifier.IDF

        target = docs[7]
        s = Searcher(cfg)
        try:
            q = s.encode([target["text"][:200]])[0]
            hits = store.search_dense(built, q.dense, 5)
            assert hits and hits[0].id == target["id"] and hits[0].payload["metadata"] == {"module": target["module"]}
            for mode in ("dense", "sparse", "hybrid"):
                assert s.search(target["text"][:200], mode=mode, k=5)[0].id == target["id"], mode
        finally:
            s.close()
    finally:
        for coll in store.list_collections(name + "_v"):
            store.drop_collection(coll)
        store.close()
