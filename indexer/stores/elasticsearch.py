"""Elasticsearch BM25 text store: one index per collection, the alias names the live one.

The same contract as the embedded tantivy store (:mod:`indexer.stores.tantivy_text`), on a server
that any number of write tasks share (a client per task, no single-writer actor).

Index layout (explicit mappings, ``dynamic: strict`` so a stray field is a reject, not a mapping):

* ``id``, ``hash``: keyword. The chunk id is also the document ``_id``: a retried write overwrites.
* ``text``, ``title``: analyzed text, BM25 with ``bm25_k1`` / ``bm25_b`` (the index's default
  similarity); the title is boosted by ``title_boost`` at query time.
* ``metadata``: ``flattened``. Corpus metadata has no fixed schema, and a dynamic object would
  map each new key (mapping explosion) and refuse a chunk whose value type differs from the first
  one seen (``year: 2020`` then ``year: "n/a"``). Flattened indexes every leaf as a keyword, so
  exact-value filters work and nothing is refused for its type; there are no numeric ranges or
  full-text matches on metadata. Leaves longer than 8191 characters are kept in ``_source`` but not
  indexed (Lucene refuses terms over 32766 bytes).
* ``_source`` holds id, hash, text, title and metadata: ``retrieve`` and search hits return them.

Analyzers, mirroring :mod:`indexer.analysis` (documents and queries use the field's analyzer):

* ``english``: standard tokenizer, English possessive, lowercase, Lucene's English stopwords,
  Snowball English (``porter2``, the stemmer tantivy uses; the built-in ``english`` analyzer has
  Porter 1), tokens over 63 characters dropped.
* ``italian``: standard tokenizer, Italian elision, lowercase, Italian stopwords, Snowball Italian
  (the built-in ``italian`` analyzer has ``light_italian``).
* ``standard``: standard tokenizer, lowercase.
* ``cjk``: the built-in ``cjk`` analyzer: overlapping character bigrams of CJK runs, not the jieba
  words of the embedded store. Bigrams need no dictionary and match any two-character sequence,
  so recall is higher and precision lower than with word segmentation (``smartcn`` or ``kuromoji``
  are plugins, not in every cluster).
* ``multilingual``: standard tokenizer, ``cjk_width``, English possessive, lowercase, ``cjk_bigram``
  (Han and hiragana; Hangul words and katakana runs kept whole, as the embedded store keeps them),
  Lucene's English stopwords, Snowball English, tokens over 63 characters dropped. Words of
  space-delimited scripts get the ``english`` terms; Han runs are overlapping bigrams (single
  characters stand alone) where the embedded store has jieba words: the same trade as ``cjk``.
* ``auto``: ``text`` and ``title`` use the English analyzer and carry a ``.cjk`` sub-field with the
  ``cjk`` analyzer; a query that is mostly CJK searches the sub-fields. The embedded store decides
  per document, this one per query: a CJK query also matches the CJK parts of English documents.

Small differences remain: the standard tokenizer (Unicode word boundaries) keeps ``3.14`` and
``don't`` as single tokens where the embedded tokenizer splits on every non-alphanumeric character.

Writes go through ``elasticsearch.helpers.streaming_bulk`` (chunks bounded by ``chunk_docs`` and
``chunk_bytes``). This store is the only layer that retries: a request failing on a connection
error, timeout, 429 or 5xx, and documents refused with such a status, are sent again with
exponential backoff (``initial_backoff`` doubling up to ``max_backoff``, at most ``max_retries``
times; only the documents still pending are resent), then :class:`TransientStoreError` names the
request and what to do. The client and ``streaming_bulk`` do not retry on their own. Documents
refused for good (mapping errors) come back as rejects. The bulk load runs with
``refresh_interval: -1`` and no replicas; ``finalize`` restores both and refreshes.

Credentials come from the environment variables the config names (an API key, else basic auth);
they are handed to the client and never stored on the store, logged, or put in messages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import schema
from ..config import Analyzer, ElasticsearchConfig, TextStoreConfig
from ..layout import version_number
from ..schema import Hit
from .base import TextStore, TransientStoreError, WriteResult, retry_transient

log = logging.getLogger(__name__)

SOURCE_FIELDS = ["id", "hash", "text", "title", "metadata"]
MGET_IDS = 1000  # ids per _mget request
METADATA_IGNORE_ABOVE = 8191  # characters; 4 bytes each stays under Lucene's 32766-byte term limit
_sleep = time.sleep  # the backoff's clock (tests record delays instead of waiting)


class ElasticsearchStoreError(RuntimeError):
    """A request Elasticsearch refused for good (auth, TLS, bad request): retrying won't help."""


# --------------------------------------------------------------------------------------------
# Index definition
# --------------------------------------------------------------------------------------------

ITALIAN_ARTICLES = ["c", "l", "all", "dall", "dell", "nell", "sull", "coll", "pell", "gl", "agl", "dagl", "degl",
                    "negl", "sugl", "un", "m", "t", "s", "v", "d"]


def analysis_settings() -> dict[str, Any]:
    """Custom analyzers (``indexer_english``, ``indexer_italian``, ``indexer_standard``,
    ``indexer_multilingual``); ``cjk`` is built in."""
    return {
        "filter": {
            "indexer_max_length": {"type": "length", "max": 63},
            "indexer_english_possessive": {"type": "stemmer", "language": "possessive_english"},
            "indexer_english_stop": {"type": "stop", "stopwords": "_english_"},
            "indexer_english_stemmer": {"type": "stemmer", "language": "porter2"},
            "indexer_italian_elision": {"type": "elision", "articles": ITALIAN_ARTICLES, "articles_case": True},
            "indexer_italian_stop": {"type": "stop", "stopwords": "_italian_"},
            "indexer_italian_stemmer": {"type": "stemmer", "language": "italian"},
            "indexer_cjk_bigram": {"type": "cjk_bigram", "ignored_scripts": ["hangul", "katakana"]},
        },
        "analyzer": {
            "indexer_english": {
                "type": "custom", "tokenizer": "standard",
                "filter": ["indexer_english_possessive", "lowercase", "indexer_english_stop",
                           "indexer_english_stemmer", "indexer_max_length"],
            },
            "indexer_italian": {
                "type": "custom", "tokenizer": "standard",
                "filter": ["indexer_italian_elision", "lowercase", "indexer_italian_stop", "indexer_italian_stemmer",
                           "indexer_max_length"],
            },
            "indexer_standard": {"type": "custom", "tokenizer": "standard",
                                 "filter": ["lowercase", "indexer_max_length"]},
            "indexer_multilingual": {
                "type": "custom", "tokenizer": "standard",
                "filter": ["cjk_width", "indexer_english_possessive", "lowercase", "indexer_cjk_bigram",
                           "indexer_english_stop", "indexer_english_stemmer", "indexer_max_length"],
            },
        },
    }


def field_analyzer(analyzer: Analyzer) -> str:
    """The Elasticsearch analyzer of the ``text`` and ``title`` fields."""
    return {Analyzer.english: "indexer_english", Analyzer.italian: "indexer_italian",
            Analyzer.standard: "indexer_standard", Analyzer.cjk: "cjk", Analyzer.auto: "indexer_english",
            Analyzer.multilingual: "indexer_multilingual"}[analyzer]


def index_body(cfg: TextStoreConfig) -> dict[str, Any]:
    """Settings and mappings of a new collection, created with the bulk-load profile."""
    es = cfg.elasticsearch
    text_field: dict[str, Any] = {"type": "text", "analyzer": field_analyzer(cfg.analyzer)}
    if cfg.analyzer == Analyzer.auto:
        text_field["fields"] = {"cjk": {"type": "text", "analyzer": "cjk"}}
    return {
        "settings": {
            "index": {
                "number_of_shards": es.shards,
                "number_of_replicas": 0,  # bulk-load profile; finalize restores es.replicas
                "refresh_interval": "-1",  # ... and es.refresh_interval
                "similarity": {"default": {"type": "BM25", "k1": cfg.bm25_k1, "b": cfg.bm25_b}},
            },
            "analysis": analysis_settings(),
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "hash": {"type": "keyword"},
                "text": text_field,
                "title": dict(text_field),
                "metadata": {"type": "flattened", "ignore_above": METADATA_IGNORE_ABOVE},
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------

def _credentials(es: ElasticsearchConfig) -> tuple[str, dict[str, Any]]:
    """(a description safe to print, client keyword arguments) from the configured environment variables."""
    api_key = os.environ.get(es.api_key_env)
    if api_key:
        # The encoded key Elasticsearch returns, or 'id:api_key' (base64 never contains ':').
        key: str | tuple[str, str] = tuple(api_key.split(":", 1)) if ":" in api_key else api_key  # type: ignore[assignment]
        return f"api key from ${es.api_key_env}", {"api_key": key}
    user, password = os.environ.get(es.username_env), os.environ.get(es.password_env)
    if user and password:
        return f"basic auth from ${es.username_env}/${es.password_env}", {"basic_auth": (user, password)}
    if user or password:
        raise ElasticsearchStoreError(
            f"basic auth needs both ${es.username_env} and ${es.password_env} set (or an API key in ${es.api_key_env})")
    return "none", {}


def _is_transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _reason(error: Any) -> str:
    """'type: reason (caused by: type: reason)' from an Elasticsearch error object."""
    if not isinstance(error, dict):
        return str(error)
    out = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        out += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return out


def _api_detail(e: Exception) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict) and body.get("error"):
        return _reason(body["error"])
    return str(getattr(e, "message", "") or type(e).__name__)


class ElasticsearchTextStore(TextStore):
    """Versioned Elasticsearch indexes '<index.name>_v<N>' behind the alias '<index.name>'."""

    single_writer = False

    def __init__(self, cfg: TextStoreConfig | None = None):
        try:
            from elasticsearch import Elasticsearch
        except ImportError as e:  # pragma: no cover - a core dependency
            raise ImportError("text_store.kind=elasticsearch needs the `elasticsearch` package "
                              "(pip install 'elasticsearch>=8.12,<10')") from e
        self.cfg = cfg or TextStoreConfig()
        self.es = self.cfg.elasticsearch
        self.analyzer = self.cfg.analyzer
        self._auth, auth_kwargs = _credentials(self.es)
        self._ready: set[str] = set()  # collections this instance saw exist
        self._client = Elasticsearch(
            self.es.hosts,
            request_timeout=self.es.request_timeout,
            max_retries=0,  # retries are this store's (see _call), with backoff
            retry_on_timeout=False,
            verify_certs=True,
            ca_certs=self.es.ca_certs,
            **auth_kwargs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hosts={self.es.hosts!r}, auth={self._auth!r}, analyzer={self.analyzer.value!r})"

    # -- errors ----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one client call; retry transient failures with backoff within the configured budget,
        raise terminal ones at once saying what to fix."""
        return self._retrying(what, lambda: self._once(what, fn))

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        return retry_transient(fn, retries=self.es.max_retries, base_delay=self.es.initial_backoff,
                               max_delay=self.es.max_backoff, what=f"elasticsearch {what}",
                               sleep=lambda d: _sleep(d), hint=self._retry_hint())

    def _retry_hint(self) -> str:
        return (f"check that Elasticsearch at {', '.join(self.es.hosts)} is up and accepting requests "
                "(text_store.elasticsearch.max_retries and max_backoff set how long to wait), then rerun: "
                "the run resumes where it stopped")

    def _once(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one client call once; map its failure to transient (retry) or terminal (say what to fix)."""
        from elasticsearch import ApiError
        from elastic_transport import TlsError, TransportError

        try:
            return fn()
        except ApiError as e:
            status = e.meta.status if e.meta is not None else 0
            if _is_transient(status):
                raise TransientStoreError(f"elasticsearch {what}: HTTP {status} {_api_detail(e)}") from e
            raise self._terminal(what, status, e) from e
        except TlsError as e:
            raise ElasticsearchStoreError(
                f"elasticsearch {what}: TLS verification against {self.es.hosts} failed ({type(e).__name__}); "
                "set text_store.elasticsearch.ca_certs to the CA bundle that signed the cluster's certificate") from e
        except TransportError as e:  # connection refused/reset, timeouts
            raise TransientStoreError(f"elasticsearch {what}: {self.es.hosts} unreachable ({type(e).__name__}: {e})") from e

    def _terminal(self, what: str, status: int, e: Exception) -> ElasticsearchStoreError:
        detail = _api_detail(e)
        hint = ""
        if status == 401:
            hint = (f"; check the credentials (auth: {self._auth}; an API key goes in ${self.es.api_key_env}, "
                    f"basic auth in ${self.es.username_env} / ${self.es.password_env})")
        elif status == 403:
            hint = "; the API key / user lacks a privilege on this index (needs create_index, write, manage, read)"
        elif status == 413:
            hint = "; lower text_store.elasticsearch.chunk_bytes"
        return ElasticsearchStoreError(f"elasticsearch {what}: HTTP {status} {detail}{hint}")

    # -- lifecycle -------------------------------------------------------------------------
    def _exists(self, collection: str) -> bool:
        return bool(self._call(f"exists {collection}", lambda: self._client.indices.exists(index=collection)))

    def _create(self, collection: str) -> bool:
        """Create the index with its mappings and the bulk-load profile; False when it already exists."""
        from elasticsearch import BadRequestError

        body = index_body(self.cfg)
        try:
            self._call(f"create {collection}", lambda: self._client.indices.create(
                index=collection, settings=body["settings"], mappings=body["mappings"]))
        except ElasticsearchStoreError as e:
            cause = e.__cause__
            if isinstance(cause, BadRequestError) and cause.error == "resource_already_exists_exception":
                return False
            raise
        log.info("created elasticsearch index %s (analyzer %s, bm25 k1=%s b=%s)", collection,
                 field_analyzer(self.analyzer), self.cfg.bm25_k1, self.cfg.bm25_b)
        return True

    def _aliases_of(self, collection: str) -> list[str]:
        from elasticsearch import NotFoundError

        try:
            resp = self._client.indices.get_alias(index=collection)
        except NotFoundError:
            return []
        return sorted(resp.body.get(collection, {}).get("aliases", {}))

    def ensure_collection(self, collection: str) -> None:
        """Create the index (idempotent) and apply the bulk-load profile.

        An index that already exists gets ``refresh_interval: -1``; its replicas drop to 0 only
        when no alias points at it (an incremental run writes into the live index, which keeps
        its redundancy while it serves searches)."""
        if not self._create(collection):
            settings: dict[str, Any] = {"refresh_interval": "-1"}
            served = self._call(f"aliases of {collection}", lambda: self._aliases_of(collection))
            if not served:
                settings["number_of_replicas"] = 0
            self._call(f"bulk-load settings of {collection}",
                       lambda: self._client.indices.put_settings(index=collection, settings={"index": settings}))
        self._ready.add(collection)

    def _docs(self, collection: str, batch: dict[str, np.ndarray], rejects: list[tuple[str, str]]) -> Iterable[dict]:
        titles = batch.get(schema.TITLE)
        for i, cid in enumerate(batch[schema.ID]):
            cid = str(cid)
            raw_meta = batch[schema.METADATA][i] if schema.METADATA in batch else None
            try:
                metadata = json.loads(raw_meta) if raw_meta else {}
            except (TypeError, ValueError) as e:
                rejects.append((cid, f"metadata is not valid JSON: {e}"))
                continue
            yield {
                "_op_type": "index",
                "_index": collection,
                "_id": cid,
                "_source": {
                    "id": cid,
                    "hash": str(batch[schema.HASH][i]),
                    "text": str(batch[schema.TEXT][i]),
                    "title": str(titles[i] or "") if titles is not None else "",
                    "metadata": metadata if isinstance(metadata, dict) else {"value": metadata},
                },
            }

    def _bulk(self, what: str, actions: Iterable[dict], ok_status: tuple[int, ...] = ()) -> tuple[int, list]:
        """Send actions with streaming_bulk; returns (acknowledged, failed items as (id, status, error)).

        Documents refused with a transient status, or not acknowledged when a whole request failed
        transiently, are sent again (only those) with backoff, within the same budget as any request."""
        from elasticsearch.helpers import streaming_bulk

        pending = list(actions)
        done, failed = 0, []

        def attempt() -> None:
            nonlocal done, pending
            settled: set[str] = set()
            transient: list[tuple[str, int, Any]] = []
            try:
                for ok, item in streaming_bulk(
                    self._client, pending,
                    chunk_size=self.es.chunk_docs, max_chunk_bytes=self.es.chunk_bytes,
                    raise_on_error=False, raise_on_exception=True, max_retries=0,
                ):
                    info = next(iter(item.values()))
                    cid, status = str(info.get("_id")), int(info.get("status", 500))
                    if ok or status in ok_status:
                        done += 1
                        settled.add(cid)
                    elif _is_transient(status):
                        transient.append((cid, status, info.get("error")))
                    else:
                        failed.append((cid, status, info.get("error")))
                        settled.add(cid)
            finally:
                pending = [a for a in pending if str(a["_id"]) not in settled]
            if transient:
                cid, status, error = transient[0]
                raise TransientStoreError(f"{len(transient)} document(s) refused transiently "
                                          f"(e.g. {cid}: HTTP {status} {_reason(error)})")

        self._retrying(what, lambda: self._once(what, attempt))
        return done, failed

    def upsert(self, collection: str, batch: dict[str, np.ndarray]) -> WriteResult:
        if collection not in self._ready:
            if not self._exists(collection):
                self._create(collection)
            self._ready.add(collection)
        rejects: list[tuple[str, str]] = []
        written, failed = self._bulk(f"bulk write to {collection}", self._docs(collection, batch, rejects))
        for cid, status, error in failed:
            rejects.append((cid, f"elasticsearch refused the document (HTTP {status}): {_reason(error)}"))
        if rejects:
            log.warning("elasticsearch %s: %d of %d chunks refused (e.g. %s: %s)", collection, len(rejects),
                        len(batch[schema.ID]), *rejects[0])
        return WriteResult(written=written, rejects=rejects)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        actions = ({"_op_type": "delete", "_index": collection, "_id": str(cid)} for cid in ids)
        _, failed = self._bulk(f"bulk delete in {collection}", actions, ok_status=(404,))
        if failed:
            cid, status, error = failed[0]
            raise ElasticsearchStoreError(f"elasticsearch delete in {collection}: {len(failed)} id(s) not deleted "
                                          f"(e.g. {cid}: HTTP {status} {_reason(error)})")
        return len(ids)

    def finalize(self, collection: str) -> None:
        """Restore the serving settings (refresh interval, replicas), then refresh."""
        settings = {"index": {"refresh_interval": self.es.refresh_interval, "number_of_replicas": self.es.replicas}}
        self._call(f"restore settings of {collection}",
                   lambda: self._client.indices.put_settings(index=collection, settings=settings))
        self._call(f"refresh {collection}", lambda: self._client.indices.refresh(index=collection))

    def count(self, collection: str) -> int:
        self._call(f"refresh {collection}", lambda: self._client.indices.refresh(index=collection))
        resp = self._call(f"count {collection}", lambda: self._client.count(index=collection))
        return int(resp["count"])

    @staticmethod
    def _payload(cid: str, src: dict[str, Any]) -> dict[str, Any]:
        return {"id": src.get("id", cid), "text": src.get("text", ""), "title": src.get("title", ""),
                "metadata": src.get("metadata") or {}, "hash": src.get("hash")}

    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = [str(i) for i in ids]
        for start in range(0, len(ids), MGET_IDS):
            part = ids[start:start + MGET_IDS]
            resp = self._call(f"mget from {collection}",
                              lambda: self._client.mget(index=collection, ids=part, source=SOURCE_FIELDS))
            for doc in resp["docs"]:
                if doc.get("found"):
                    out[doc["_id"]] = self._payload(doc["_id"], doc.get("_source") or {})
        return out

    def list_collections(self, prefix: str) -> list[str]:
        resp = self._call(f"list {prefix}*", lambda: self._client.indices.resolve_index(
            name=f"{prefix}*", expand_wildcards="open,closed"))
        return sorted(i["name"] for i in resp["indices"] if i["name"].startswith(prefix))

    def drop_collection(self, collection: str) -> None:
        from elasticsearch import NotFoundError

        def drop() -> None:
            try:
                self._client.indices.delete(index=collection)
            except NotFoundError:
                pass

        self._call(f"delete {collection}", drop)
        self._ready.discard(collection)

    def _alias_targets(self, alias: str) -> list[str]:
        from elasticsearch import NotFoundError

        try:
            resp = self._client.indices.get_alias(name=alias)
        except NotFoundError:
            return []
        return sorted(resp.body, key=_version_key)

    def get_alias(self, alias: str) -> str | None:
        targets = self._call(f"get alias {alias}", lambda: self._alias_targets(alias))
        if len(targets) > 1:
            log.warning("alias %s points at %d indexes %s; using the newest", alias, len(targets), targets)
        return targets[-1] if targets else None

    def set_alias(self, alias: str, collection: str) -> None:
        """One ``_aliases`` request removes the alias from its old index and adds it to the new one,
        so searchers never see the alias missing or on two indexes."""
        from elasticsearch import NotFoundError

        current = self._call(f"get alias {alias}", lambda: self._alias_targets(alias))
        actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": alias}} for old in current
                                         if old != collection]
        actions.append({"add": {"index": collection, "alias": alias}})
        try:
            self._call(f"move alias {alias}", lambda: self._client.indices.update_aliases(actions=actions))
        except ElasticsearchStoreError as e:
            if isinstance(e.__cause__, NotFoundError):
                raise KeyError(f"can't point alias {alias!r} at missing elasticsearch index {collection!r}") from e
            raise
        log.info("elasticsearch alias %s -> %s (was %s)", alias, collection, current or None)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    # -- search ----------------------------------------------------------------------------
    def search_fields(self, query: str) -> list[str]:
        """Fields a query searches: text and the boosted title (``.cjk`` sub-fields for CJK queries in auto)."""
        from ..analysis import is_mostly_cjk

        suffix = ".cjk" if self.analyzer == Analyzer.auto and is_mostly_cjk(query) else ""
        fields = [f"text{suffix}"]
        boost = self.cfg.title_boost
        if boost > 0:
            fields.append(f"title{suffix}" if boost == 1.0 else f"title{suffix}^{boost:g}")
        return fields

    def search_bm25(self, collection: str, query: str, k: int) -> list[Hit]:
        """Sum of the BM25 scores of text and boosted title (``most_fields``), any query term matching,
        as the embedded store's boolean query of per-field term clauses does."""
        if not query.strip():
            return []
        q = {"multi_match": {"query": query, "fields": self.search_fields(query), "type": "most_fields"}}
        resp = self._call(f"search {collection}", lambda: self._client.search(
            index=collection, query=q, size=k, source=["id", "text", "title", "metadata"], track_total_hits=False))
        hits = []
        for h in resp["hits"]["hits"]:
            p = self._payload(h["_id"], h.get("_source") or {})
            hits.append(Hit(p["id"], float(h["_score"] or 0.0),
                            {"text": p["text"], "title": p["title"], "metadata": p["metadata"]}))
        return hits


def _version_key(name: str) -> tuple[int, str]:
    """Sort key of index names: by version number (the one parser in the layout), then by name."""
    return (version_number(name), name)
