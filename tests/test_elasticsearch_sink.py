"""The Elasticsearch text store against a loopback HTTP server speaking the part of the REST API it
uses: the real client and ``streaming_bulk`` on the wire, every request recorded, failures injected
(429s, per-item mapping errors, 5xx, auth). Ends with the whole job writing into that server."""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import re
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest

from indexer import schema
from indexer.config import ConfigError, TextStoreConfig, config_from_dict, dump_config, load_config
from indexer.stores.base import TransientStoreError
from indexer.stores.elasticsearch import ElasticsearchStoreError, ElasticsearchTextStore, index_body

# --------------------------------------------------------------------------------------------
# A fake Elasticsearch


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class Index:
    settings: dict[str, Any]
    mappings: dict[str, Any]
    docs: dict[str, dict] = field(default_factory=dict)  # realtime (get/mget)
    searchable: dict[str, dict] = field(default_factory=dict)  # as of the last refresh (count/search)


def _error(status: int, etype: str, reason: str) -> tuple[int, dict]:
    return status, {"error": {"root_cause": [{"type": etype, "reason": reason}], "type": etype, "reason": reason},
                    "status": status}


class FakeElasticsearch:
    """Elasticsearch 9.x REST API subset, in memory, on 127.0.0.1 at a random port."""

    def __init__(self, tls: tuple[str, str] | None = None):
        self.indices: dict[str, Index] = {}
        self.aliases: dict[str, set[str]] = {}
        self.requests: list[Request] = []
        self.failures: list[tuple[str, int, str]] = []  # (path regex, status, error type), each used once
        self.item_errors: dict[str, tuple[int, str, str]] = {}  # id -> (status, type, reason), every time
        self.item_errors_once: dict[str, tuple[int, str, str]] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                req = Request(self.command, unquote(parts.path), parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
                status, payload = fake.handle(req)
                out = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/vnd.elasticsearch+json;compatible-with=9")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:  # (certificate chain file, key file)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- inspection -----------------------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))]

    def bulk_calls(self) -> list[Request]:
        return self.calls(None, r"/_bulk$")

    def fail_next(self, path: str, status: int, etype: str, times: int = 1) -> None:
        self.failures.extend([(path, status, etype)] * times)

    # -- routing ----------------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(req)
            for i, (pattern, status, etype) in enumerate(self.failures):
                if re.search(pattern, req.path):
                    del self.failures[i]
                    return _error(status, etype, f"injected {status}")
            try:
                return self._route(req)
            except KeyError as e:
                return _error(404, "index_not_found_exception", f"no such index [{e.args[0]}]")

    def _resolve(self, name: str) -> str:
        if name in self.indices:
            return name
        targets = self.aliases.get(name, set())
        if len(targets) == 1:
            return next(iter(targets))
        raise KeyError(name)

    def _route(self, req: Request) -> tuple[int, Any]:
        seg = [s for s in req.path.split("/") if s]
        m = req.method
        if not seg:
            return 200, {"name": "fake", "cluster_name": "fake", "version": {"number": "9.1.5", "build_flavor": "default"},
                         "tagline": "You Know, for Search"}
        if seg[-1] == "_bulk":
            return self._bulk(req)
        if seg == ["_aliases"]:
            return self._update_aliases(req.json()["actions"])
        if seg[0] == "_alias" and len(seg) == 2:
            found = {i: {"aliases": {seg[1]: {}}} for i in sorted(self.aliases.get(seg[1], ()))}
            return (200, found) if found else (404, {"error": f"alias [{seg[1]}] missing", "status": 404})
        if seg[:2] == ["_resolve", "index"]:
            names = sorted(n for n in self.indices if fnmatch.fnmatchcase(n, seg[2]))
            return 200, {"indices": [{"name": n, "attributes": ["open"],
                                      "aliases": sorted(a for a, t in self.aliases.items() if n in t)} for n in names],
                         "aliases": [], "data_streams": []}
        name = seg[0]
        if len(seg) == 1:
            if m == "HEAD":
                return (200 if name in self.indices else 404), None
            if m == "PUT":
                if name in self.indices:
                    return _error(400, "resource_already_exists_exception", f"index [{name}] already exists")
                body = req.json() or {}
                self.indices[name] = Index(body.get("settings", {}), body.get("mappings", {}))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            if m == "DELETE":
                if name not in self.indices:
                    raise KeyError(name)
                del self.indices[name]
                for targets in self.aliases.values():
                    targets.discard(name)
                return 200, {"acknowledged": True}
        action = seg[1]
        if action == "_alias" and m == "GET":
            if name not in self.indices:
                raise KeyError(name)
            return 200, {name: {"aliases": {a: {} for a, t in self.aliases.items() if name in t}}}
        idx = self.indices[self._resolve(name)]
        if action == "_settings" and m == "PUT":
            body = req.json()
            idx.settings.setdefault("index", {}).update(body.get("index", body))
            return 200, {"acknowledged": True}
        if action == "_refresh":
            idx.searchable = dict(idx.docs)
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if action == "_count":
            return 200, {"count": len(idx.searchable)}
        if action == "_mget":
            out = []
            for i in (req.json() or {}).get("ids", []):
                doc = idx.docs.get(i)
                out.append({"_index": name, "_id": i, "found": doc is not None, **({"_source": doc} if doc else {})})
            return 200, {"docs": out}
        if action == "_search":
            return 200, self._search(idx, req.json() or {})
        return _error(400, "illegal_argument_exception", f"fake does not implement {m} {req.path}")

    def _bulk(self, req: Request) -> tuple[int, Any]:
        lines, items = req.ndjson(), []
        i = 0
        while i < len(lines):
            (op, meta), = lines[i].items()
            source = lines[i + 1] if op != "delete" else None
            i += 1 if op == "delete" else 2
            cid, index = meta["_id"], meta.get("_index")
            err = self.item_errors.get(cid) or self.item_errors_once.pop(cid, None)
            if err:
                status, etype, reason = err
                items.append({op: {"_index": index, "_id": cid, "status": status,
                                   "error": {"type": etype, "reason": reason}}})
                continue
            if index not in self.indices:  # a real cluster would auto-create it with dynamic mappings
                items.append({op: {"_index": index, "_id": cid, "status": 404,
                                   "error": {"type": "index_not_found_exception", "reason": f"no such index [{index}]"}}})
                continue
            docs = self.indices[index].docs
            if op == "delete":
                found = docs.pop(cid, None) is not None
                items.append({op: {"_index": index, "_id": cid, "status": 200 if found else 404,
                                   "result": "deleted" if found else "not_found"}})
            else:
                created = cid not in docs
                docs[cid] = source
                items.append({op: {"_index": index, "_id": cid, "status": 201 if created else 200,
                                   "result": "created" if created else "updated"}})
        return 200, {"took": 1, "errors": any("error" in next(iter(it.values())) for it in items), "items": items}

    def _update_aliases(self, actions: list[dict]) -> tuple[int, Any]:
        for a in actions:  # validate everything first: the request applies all or nothing
            (kind, spec), = a.items()
            if spec["index"] not in self.indices:
                raise KeyError(spec["index"])
            if kind == "remove" and spec["index"] not in self.aliases.get(spec["alias"], set()):
                return _error(404, "aliases_not_found_exception", f"aliases [{spec['alias']}] missing")
        for a in actions:
            (kind, spec), = a.items()
            targets = self.aliases.setdefault(spec["alias"], set())
            (targets.add if kind == "add" else targets.discard)(spec["index"])
        return 200, {"acknowledged": True}

    @staticmethod
    def _search(idx: Index, body: dict) -> dict:
        mm = body["query"]["multi_match"]
        terms = re.findall(r"\w+", mm["query"].lower())
        scored = []
        for cid, doc in idx.searchable.items():
            score = 0.0
            for f in mm["fields"]:
                name, _, boost = f.partition("^")
                words = re.findall(r"\w+", str(doc.get(name.split(".")[0], "")).lower())
                score += sum(words.count(t) for t in terms) * float(boost or 1)
            if score:
                scored.append((score, cid, doc))
        scored.sort(key=lambda x: (-x[0], x[1]))
        hits = [{"_index": "x", "_id": cid, "_score": s, "_source": d} for s, cid, d in scored[:body.get("size", 10)]]
        return {"took": 1, "timed_out": False, "hits": {"max_score": hits[0]["_score"] if hits else None, "hits": hits}}


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def fake():
    f = FakeElasticsearch()
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    for var in ("ES_API_KEY", "ES_USERNAME", "ES_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _cfg(fake: FakeElasticsearch, **es: Any) -> TextStoreConfig:
    base = {"hosts": [fake.url], "shards": 2, "replicas": 1, "chunk_docs": 500, "max_retries": 3,
            "initial_backoff": 0.01, "max_backoff": 0.02}
    base.update(es)
    return TextStoreConfig.model_validate({"kind": "elasticsearch", "bm25_k1": 1.1, "bm25_b": 0.6,
                                           "title_boost": 2.0, "elasticsearch": base})


def _batch(n: int, start: int = 0, text_len: int = 0) -> dict[str, np.ndarray]:
    ids = [f"doc-{i:03d}" for i in range(start, start + n)]
    pad = " filler" * (text_len // 7)
    return {
        schema.ID: np.array(ids, dtype=object),
        schema.TEXT: np.array([f"text of document {i} about parsing json{pad}" for i in range(start, start + n)],
                              dtype=object),
        schema.TITLE: np.array([f"title {i}" for i in range(start, start + n)], dtype=object),
        schema.METADATA: np.array([json.dumps({"module": "json", "n": i}) for i in range(start, start + n)], dtype=object),
        schema.HASH: np.array([f"h{i}" for i in range(start, start + n)], dtype=object),
    }


def _bulk_ids(req: Request) -> list[str]:
    return [next(iter(line.values()))["_id"] for line in req.ndjson() if set(line) & {"index", "delete", "create"}]


# --------------------------------------------------------------------------------------------
# Index definition


def test_index_created_with_mappings_analyzer_similarity_and_bulk_profile(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    store.close()
    (create,) = fake.calls("PUT", r"^/chunks_v1$")
    body = create.json()
    idx = body["settings"]["index"]
    assert idx["number_of_shards"] == 2
    assert idx["number_of_replicas"] == 0 and idx["refresh_interval"] == "-1"  # bulk-load profile
    assert idx["similarity"]["default"] == {"type": "BM25", "k1": 1.1, "b": 0.6}
    english = body["settings"]["analysis"]["analyzer"]["indexer_english"]
    filters = body["settings"]["analysis"]["filter"]
    assert english["tokenizer"] == "standard"
    assert [filters.get(f, {"type": f}) for f in english["filter"][:4]] == [
        {"type": "stemmer", "language": "possessive_english"}, {"type": "lowercase"},
        {"type": "stop", "stopwords": "_english_"}, {"type": "stemmer", "language": "porter2"}]
    props = body["mappings"]["properties"]
    assert body["mappings"]["dynamic"] == "strict"
    assert props["id"] == {"type": "keyword"} and props["hash"] == {"type": "keyword"}
    assert props["text"] == props["title"] == {"type": "text", "analyzer": "indexer_multilingual"}  # the default
    assert props["metadata"]["type"] == "flattened"


def test_multilingual_analyzer_bigrams_cjk_and_analyzes_the_rest_as_english(fake):
    """The default analyzer's chain: CJK width folding and bigrams (Hangul and katakana words kept whole,
    as the embedded store keeps them), then english's possessive, lowercase, stopwords and porter2."""
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    store.close()
    analysis = fake.calls("PUT", r"^/chunks_v1$")[0].json()["settings"]["analysis"]
    chain = analysis["analyzer"]["indexer_multilingual"]
    assert chain["tokenizer"] == "standard"
    assert [analysis["filter"].get(f, {"type": f}) for f in chain["filter"]] == [
        {"type": "cjk_width"}, {"type": "stemmer", "language": "possessive_english"}, {"type": "lowercase"},
        {"type": "cjk_bigram", "ignored_scripts": ["hangul", "katakana"]}, {"type": "stop", "stopwords": "_english_"},
        {"type": "stemmer", "language": "porter2"}, {"type": "length", "max": 63}]
    assert store.search_fields("北京大学 iPhone") == ["text", "title^2"]  # one field for every script


@pytest.mark.parametrize("analyzer, field_analyzer, sub", [
    ("english", "indexer_english", None), ("italian", "indexer_italian", None),
    ("standard", "indexer_standard", None), ("cjk", "cjk", None), ("auto", "indexer_english", "cjk"),
    ("multilingual", "indexer_multilingual", None)])
def test_analyzer_per_config(analyzer, field_analyzer, sub):
    body = index_body(TextStoreConfig(kind="elasticsearch", analyzer=analyzer))
    text = body["mappings"]["properties"]["text"]
    assert text["analyzer"] == field_analyzer
    assert (text.get("fields") or {}).get("cjk", {}).get("analyzer") == sub
    defined = body["settings"]["analysis"]["analyzer"]
    assert field_analyzer in defined or field_analyzer == "cjk"  # cjk is built in
    if analyzer == "italian":
        chain = [body["settings"]["analysis"]["filter"].get(f, {}).get("type", f) for f in defined[field_analyzer]["filter"]]
        assert chain[:4] == ["elision", "lowercase", "stop", "stemmer"]


def test_auto_analyzer_searches_cjk_subfields_for_cjk_queries(fake):
    store = ElasticsearchTextStore(TextStoreConfig(kind="elasticsearch", analyzer="auto", title_boost=1.5,
                                                   elasticsearch={"hosts": [fake.url]}))
    assert store.search_fields("parse json") == ["text", "title^1.5"]
    assert store.search_fields("解析 JSON 文档") == ["text.cjk", "title.cjk^1.5"]
    store.close()


def test_existing_index_gets_bulk_profile_live_index_keeps_replicas(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    store.ensure_collection("chunks_v1")  # idempotent: the second call finds it and applies the profile
    assert fake.indices["chunks_v1"].settings["index"]["number_of_replicas"] == 0
    assert fake.calls("PUT", r"/_settings$")[-1].json() == {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}
    store.finalize("chunks_v1")
    store.set_alias("chunks", "chunks_v1")
    store.ensure_collection("chunks_v1")  # an incremental run writes into the live index
    assert fake.calls("PUT", r"/_settings$")[-1].json() == {"index": {"refresh_interval": "-1"}}
    store.close()


def test_finalize_restores_settings_then_refreshes(fake):
    store = ElasticsearchTextStore(_cfg(fake, replicas=2, refresh_interval="5s"))
    store.ensure_collection("chunks_v1")
    store.upsert("chunks_v1", _batch(5))
    assert fake.indices["chunks_v1"].searchable == {}  # refresh is off during the load
    n_before = len(fake.requests)
    store.finalize("chunks_v1")
    after = fake.requests[n_before:]
    assert [(r.method, r.path) for r in after] == [("PUT", "/chunks_v1/_settings"), ("POST", "/chunks_v1/_refresh")]
    assert after[0].json() == {"index": {"refresh_interval": "5s", "number_of_replicas": 2}}
    assert fake.indices["chunks_v1"].settings["index"]["refresh_interval"] == "5s"
    assert len(fake.indices["chunks_v1"].searchable) == 5
    assert store.count("chunks_v1") == 5
    store.close()


# --------------------------------------------------------------------------------------------
# Bulk writes


def test_bulk_ids_are_chunk_ids_and_chunks_bounded_by_docs(fake):
    store = ElasticsearchTextStore(_cfg(fake, chunk_docs=4))
    store.ensure_collection("chunks_v1")
    res = store.upsert("chunks_v1", _batch(10))
    assert res.written == 10 and res.rejects == []
    bulks = fake.bulk_calls()
    assert [len(_bulk_ids(r)) for r in bulks] == [4, 4, 2]
    assert [i for r in bulks for i in _bulk_ids(r)] == [f"doc-{i:03d}" for i in range(10)]
    action, source = bulks[0].ndjson()[:2]
    assert action == {"index": {"_index": "chunks_v1", "_id": "doc-000"}}
    assert source == {"id": "doc-000", "hash": "h0", "text": "text of document 0 about parsing json",
                      "title": "title 0", "metadata": {"module": "json", "n": 0}}
    store.upsert("chunks_v1", _batch(10))  # a retried task writes the same ids again: no duplicates
    assert store.count("chunks_v1") == 10
    store.close()


def test_bulk_chunks_bounded_by_bytes(fake):
    store = ElasticsearchTextStore(_cfg(fake, chunk_bytes=2048))
    store.ensure_collection("chunks_v1")
    assert store.upsert("chunks_v1", _batch(12, text_len=400)).written == 12
    bulks = fake.bulk_calls()
    assert len(bulks) > 3
    assert all(len(r.body) <= 2048 for r in bulks), [len(r.body) for r in bulks]
    assert sum(len(_bulk_ids(r)) for r in bulks) == 12
    store.close()


def test_429_retried_with_backoff_then_succeeds(fake, monkeypatch):
    import indexer.stores.elasticsearch as es_module

    sleeps, real_sleep = [], time.sleep
    monkeypatch.setattr(es_module, "_sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    store = ElasticsearchTextStore(_cfg(fake, max_retries=3, initial_backoff=0.01, max_backoff=0.015))
    store.ensure_collection("chunks_v1")
    fake.fail_next(r"/_bulk$", 429, "es_rejected_execution_exception", times=2)
    res = store.upsert("chunks_v1", _batch(3))
    assert res.written == 3 and res.rejects == []
    assert len(fake.bulk_calls()) == 3  # two rejected, one accepted: the transport itself did not retry
    assert sleeps == [0.01, 0.015]  # 0.01, then doubled and capped at max_backoff
    assert store.count("chunks_v1") == 3
    store.close()


def test_per_item_429_resends_only_that_document(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    fake.item_errors_once["doc-001"] = (429, "es_rejected_execution_exception", "queue full")
    assert store.upsert("chunks_v1", _batch(3)).written == 3
    assert [_bulk_ids(r) for r in fake.bulk_calls()] == [["doc-000", "doc-001", "doc-002"], ["doc-001"]]
    store.close()


def test_429_past_max_retries_is_transient(fake):
    store = ElasticsearchTextStore(_cfg(fake, max_retries=1))
    store.ensure_collection("chunks_v1")
    fake.fail_next(r"/_bulk$", 429, "es_rejected_execution_exception", times=2)
    with pytest.raises(TransientStoreError, match="429"):
        store.upsert("chunks_v1", _batch(2))
    assert len(fake.bulk_calls()) == 2
    store.close()


def test_item_mapping_error_goes_to_rejects_and_is_not_retried(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    fake.item_errors["doc-002"] = (400, "document_parsing_exception", "[1:52] failed to parse field [metadata]")
    res = store.upsert("chunks_v1", _batch(5))
    assert res.written == 4
    assert len(res.rejects) == 1
    cid, reason = res.rejects[0]
    assert cid == "doc-002"
    assert "HTTP 400" in reason and "document_parsing_exception" in reason and "failed to parse field [metadata]" in reason
    assert len(fake.bulk_calls()) == 1
    store.finalize("chunks_v1")
    assert store.count("chunks_v1") == 4
    store.close()


def test_5xx_and_unreachable_cluster_are_transient(fake):
    store = ElasticsearchTextStore(_cfg(fake, max_retries=1, initial_backoff=0.01))
    store.ensure_collection("chunks_v1")
    fake.fail_next(r"/_bulk$", 500, "internal_server_error", times=2)
    with pytest.raises(TransientStoreError, match="still failing after 1 retries.*HTTP 500.*then rerun"):
        store.upsert("chunks_v1", _batch(2))
    assert len(fake.bulk_calls()) == 2
    fake.item_errors["doc-000"] = (503, "unavailable_shards_exception", "primary shard is not active")
    with pytest.raises(TransientStoreError, match="unavailable_shards_exception"):
        store.upsert("chunks_v1", _batch(2))
    assert [_bulk_ids(r) for r in fake.bulk_calls()[2:]] == [["doc-000", "doc-001"], ["doc-000"]]
    store.close()

    fake.close()  # nothing listens there any more
    gone = ElasticsearchTextStore(_cfg(fake, max_retries=0))
    with pytest.raises(TransientStoreError, match="unreachable"):
        gone.upsert("chunks_v1", _batch(2))
    gone.close()


def test_one_5xx_is_retried_by_the_store_alone(fake):
    """A whole bulk request failing once is sent again by the store; the client itself does not retry."""
    store = ElasticsearchTextStore(_cfg(fake, max_retries=2, initial_backoff=0.01))
    store.ensure_collection("chunks_v1")
    fake.fail_next(r"/_bulk$", 503, "unavailable")
    assert store.upsert("chunks_v1", _batch(3)).written == 3
    assert len(fake.bulk_calls()) == 2
    store.close()


def test_upsert_creates_a_missing_index_with_its_mappings(fake):
    """A write never lets the cluster auto-create the index with dynamic mappings."""
    store = ElasticsearchTextStore(_cfg(fake))
    assert store.upsert("chunks_v7", _batch(2)).written == 2
    assert fake.indices["chunks_v7"].mappings["dynamic"] == "strict"
    store.close()


# --------------------------------------------------------------------------------------------
# Versions, aliases, reads


def test_alias_swap_is_one_atomic_request(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    for c in ("chunks_v1", "chunks_v2", "other_v1"):
        store.ensure_collection(c)
    assert store.get_alias("chunks") is None
    store.set_alias("chunks", "chunks_v1")
    assert fake.calls("POST", "/_aliases$")[-1].json() == {"actions": [{"add": {"index": "chunks_v1", "alias": "chunks"}}]}
    store.set_alias("chunks", "chunks_v2")
    assert fake.calls("POST", "/_aliases$")[-1].json() == {"actions": [
        {"remove": {"index": "chunks_v1", "alias": "chunks"}}, {"add": {"index": "chunks_v2", "alias": "chunks"}}]}
    assert store.get_alias("chunks") == "chunks_v2"
    assert fake.aliases["chunks"] == {"chunks_v2"}
    with pytest.raises(KeyError, match="chunks_v9"):
        store.set_alias("chunks", "chunks_v9")
    assert store.get_alias("chunks") == "chunks_v2"
    assert store.list_collections("chunks_v") == ["chunks_v1", "chunks_v2"]
    store.drop_collection("chunks_v1")
    store.drop_collection("chunks_v1")  # idempotent
    assert store.list_collections("chunks_v") == ["chunks_v2"]
    store.close()


def test_retrieve_search_delete_count(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    store.upsert("chunks_v1", _batch(6))
    store.finalize("chunks_v1")
    got = store.retrieve("chunks_v1", ["doc-001", "doc-004", "missing"])
    assert set(got) == {"doc-001", "doc-004"}
    assert got["doc-004"] == {"id": "doc-004", "text": "text of document 4 about parsing json", "title": "title 4",
                              "metadata": {"module": "json", "n": 4}, "hash": "h4"}
    hits = store.search_bm25("chunks_v1", "title 3", k=2)
    assert hits[0].id == "doc-003" and hits[0].payload["text"].startswith("text of document 3")
    assert hits[0].payload["metadata"] == {"module": "json", "n": 3}
    (search,) = fake.calls(None, r"/_search$")
    assert search.json()["query"] == {"multi_match": {"query": "title 3", "fields": ["text", "title^2"],
                                                      "type": "most_fields"}}
    assert search.json()["size"] == 2
    assert store.search_bm25("chunks_v1", "   ", k=5) == []
    assert store.delete("chunks_v1", ["doc-000", "doc-005", "never-there"]) == 3
    assert store.count("chunks_v1") == 4
    store.close()


# --------------------------------------------------------------------------------------------
# Credentials


def _leaks(secret: str, *texts: str) -> list[str]:
    return [t[:200] for t in texts if secret in t]


def test_api_key_sent_from_env_and_never_shown(fake, monkeypatch, caplog):
    secret = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    monkeypatch.setenv("ES_KEY_FOR_TEST", secret)
    caplog.set_level(logging.DEBUG)
    cfg = _cfg(fake, api_key_env="ES_KEY_FOR_TEST")
    store = ElasticsearchTextStore(cfg)
    store.ensure_collection("chunks_v1")
    store.upsert("chunks_v1", _batch(2))
    assert {r.headers.get("authorization") for r in fake.requests} == {f"ApiKey {secret}"}
    fake.fail_next(r"/_bulk$", 401, "security_exception")
    with pytest.raises(ElasticsearchStoreError) as err:
        store.upsert("chunks_v1", _batch(2))
    assert "ES_KEY_FOR_TEST" in str(err.value)  # says where the key comes from, not what it is
    fake.fail_next(r"/_bulk$", 500, "internal_server_error", times=4)  # past max_retries=3
    with pytest.raises(TransientStoreError) as transient:
        store.upsert("chunks_v1", _batch(2))
    texts = [caplog.text, repr(store), str(store), json.dumps(dump_config(config_from_dict({"text_store": cfg.model_dump(mode="json")}))),
             *("".join(traceback.format_exception(e.value)) for e in (err, transient))]
    assert not _leaks(secret, *texts)
    assert "api key from $ES_KEY_FOR_TEST" in repr(store)
    store.close()


def test_basic_auth_sent_from_env_and_never_shown(fake, monkeypatch, caplog):
    user, password = "indexer", "correct-horse-battery-staple"
    monkeypatch.setenv("ES_USERNAME", user)
    monkeypatch.setenv("ES_PASSWORD", password)
    caplog.set_level(logging.DEBUG)
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert {r.headers.get("authorization") for r in fake.requests} == {f"Basic {token}"}
    fake.fail_next(r"/_count$", 401, "security_exception")
    with pytest.raises(ElasticsearchStoreError) as err:
        store.count("chunks_v1")
    texts = [caplog.text, repr(store), "".join(traceback.format_exception(err.value))]
    assert not _leaks(password, *texts) and not _leaks(token, *texts)
    store.close()

    monkeypatch.delenv("ES_PASSWORD")
    with pytest.raises(ElasticsearchStoreError, match=r"\$ES_USERNAME and \$ES_PASSWORD"):
        ElasticsearchTextStore(_cfg(fake))


def test_api_key_as_id_and_key_is_encoded(fake, monkeypatch):
    monkeypatch.setenv("ES_API_KEY", "key-id-1:raw-key-material-2")
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    token = base64.b64encode(b"key-id-1:raw-key-material-2").decode()
    assert {r.headers.get("authorization") for r in fake.requests} == {f"ApiKey {token}"}
    assert "raw-key-material-2" not in repr(store)
    store.close()


def _certificates(tmp_path) -> tuple[str, str, str]:
    """(CA file, server certificate chain file, server key file) for 127.0.0.1."""
    pytest.importorskip("cryptography")
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca: bool, extra=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                          crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if not ca:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                                critical=False)
        for ext in extra:
            b = b.add_extension(ext, critical=False)
        return b.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "indexer test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(), ca_key,
                 False, [x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                         x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    return str(tmp_path / "ca.pem"), str(tmp_path / "server.pem"), str(tmp_path / "server.key")


def test_tls_is_verified_against_ca_certs(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    fake = FakeElasticsearch(tls=(cert, key))
    try:
        unknown_ca = ElasticsearchTextStore(_cfg(fake, max_retries=0))
        with pytest.raises(ElasticsearchStoreError, match="ca_certs"):
            unknown_ca.ensure_collection("chunks_v1")
        unknown_ca.close()
        assert "chunks_v1" not in fake.indices
        store = ElasticsearchTextStore(_cfg(fake, ca_certs=ca))
        store.ensure_collection("chunks_v1")
        assert store.upsert("chunks_v1", _batch(2)).written == 2
        store.close()
    finally:
        fake.close()


def test_credentials_in_host_urls_are_refused():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"text_store": {"elasticsearch": {"hosts": ["https://admin:s3cr3t-pw@es.internal:9200"]}}})
    assert "credentials" in str(err.value) and "s3cr3t-pw" not in str(err.value)


# --------------------------------------------------------------------------------------------
# The whole job writing into the fake cluster


@pytest.mark.usefixtures("ray_local")
def test_pipeline_writes_elasticsearch(fake, tmp_path):
    from indexer.run.pipeline import run
    from indexer.sample_corpus import stdlib_chunks
    from tests.conftest import write_parquet

    docs = []
    for c in stdlib_chunks():
        docs.append({"id": c["id"], "title": c["title"], "text": c["text"][:300], "module": c["module"]})
        if len(docs) == 40:
            break
    write_parquet(tmp_path / "corpus" / "a.parquet", docs[:30])
    write_parquet(tmp_path / "corpus" / "b.parquet", [*docs[30:], {"id": "bad", "title": "t", "text": " ", "module": "x"}])
    cfg = load_config("configs/local.yaml", [
        f"corpus.path={tmp_path / 'corpus'}", "corpus.sample=false", f"index.dir={tmp_path / 'index'}",
        "encode.block_rows=64", "text_store.kind=elasticsearch", f"text_store.elasticsearch.hosts=[{fake.url}]",
        "text_store.elasticsearch.chunk_docs=16", "text_store.elasticsearch.replicas=1"])
    m = run(cfg)
    c = m["counts"]
    assert m["status"] == "succeeded" and m["alias_moved"]
    assert c["input"] == 41 and c["rejected"] == 1 and c["indexed"] == c["text_store"] == c["vector_store"] == 40
    coll = m["versions"]["built"]
    index = fake.indices[coll]
    assert sorted(index.docs) == sorted(d["id"] for d in docs)
    assert index.docs[docs[0]["id"]]["metadata"] == {"module": docs[0]["module"]}
    assert fake.aliases[cfg.index.name] == {coll}
    assert index.settings["index"]["refresh_interval"] == "1s" and index.settings["index"]["number_of_replicas"] == 1
    assert all(len(_bulk_ids(r)) <= 16 for r in fake.bulk_calls())
    assert m["verification"]["checks"]["sample"]["ok"]


def test_export_rows_round_trips(fake):
    store = ElasticsearchTextStore(_cfg(fake))
    store.ensure_collection("chunks_v1")
    store.upsert("chunks_v1", _batch(5))
    store.finalize("chunks_v1")
    out = store.export_rows("chunks_v1", ["doc-003", "missing", "doc-001"])
    assert list(out[schema.ID]) == ["doc-003", "doc-001"]
    assert list(out[schema.TEXT]) == ["text of document 3 about parsing json", "text of document 1 about parsing json"]
    assert list(out[schema.HASH]) == ["h3", "h1"] and list(out[schema.TITLE]) == ["title 3", "title 1"]
    assert [json.loads(m) for m in out[schema.METADATA]] == [{"module": "json", "n": 3}, {"module": "json", "n": 1}]
    store.upsert("chunks_v1", {k: v[1:2] for k, v in _batch(2, start=2).items()} | {schema.ID: np.array(["doc-003"], dtype=object)})
    store.upsert("chunks_v1", out)  # writing the export back restores the documents as they were
    store.finalize("chunks_v1")
    assert store.retrieve("chunks_v1", ["doc-003"])["doc-003"]["hash"] == "h3"
    assert _bulk_ids(fake.calls(None, r"/_bulk$")[-1]) == ["doc-003", "doc-001"]
    store.close()
