"""Embedded BM25 text store: tantivy (a Lucene-like engine), one index directory per collection.

Fields: ``id`` (raw term: delete/upsert key), ``text`` and ``title`` (analyzed, stored; BM25 per
field, like a multifield Elasticsearch/Lucene index), ``metadata`` and ``hash`` (stored). Each
upsert commits, so whatever a write call acknowledged survives a crash of the job.
One process may write an index: the pipeline writes through a single actor.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import numpy as np

from .. import schema
from ..analysis import PRETOKENIZED, prepare
from ..config import TextStoreConfig
from ..schema import Hit
from .base import TextStore, WriteResult
from .local import LocalCollections

log = logging.getLogger(__name__)

ANALYZERS = ("english", "italian", "standard")


class TantivyTextStore(TextStore):
    """Versioned tantivy indexes under ``root``."""

    single_writer = True

    def __init__(self, root: str, cfg: TextStoreConfig | None = None):
        self.cfg = cfg or TextStoreConfig()
        self.analyzer = self.cfg.analyzer.value
        self.dirs = LocalCollections(root)
        self._indexes: dict[str, Any] = {}
        self._writers: dict[str, Any] = {}

    # -- index ----------------------------------------------------------------------------
    def _tokenizer(self) -> str:
        """Pre-tokenized analyzers (and ``auto``, which may pick one) index space-joined terms as they are."""
        return "ws_lower" if self.analyzer in (*PRETOKENIZED, "auto") else f"an_{self.analyzer}"

    def _schema(self):
        import tantivy as t

        b = t.SchemaBuilder()
        b.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
        b.add_text_field("text", stored=False, tokenizer_name=self._tokenizer(), index_option="freq")
        b.add_text_field("title", stored=False, tokenizer_name=self._tokenizer(), index_option="freq")
        b.add_text_field("hash", stored=True, tokenizer_name="raw", index_option="basic")
        b.add_bytes_field("doc", stored=True, indexed=False)  # original text, title, metadata (JSON)
        return b.build()

    def _register(self, index) -> None:
        import tantivy as t

        from ..analysis import tantivy_analyzer

        for name in ANALYZERS:
            index.register_tokenizer(f"an_{name}", tantivy_analyzer(name))
        index.register_tokenizer(
            "ws_lower", t.TextAnalyzerBuilder(t.Tokenizer.whitespace()).filter(t.Filter.lowercase()).build())

    def _index(self, collection: str, create: bool = False):
        import tantivy as t

        idx = self._indexes.get(collection)
        if idx is not None:
            return idx
        path = self.dirs.path(collection)
        if not (path / "meta.json").exists():
            if not create:
                raise KeyError(f"text collection {collection!r} does not exist under {self.dirs.root}")
            path.mkdir(parents=True, exist_ok=True)
            idx = t.Index(self._schema(), path=str(path), reuse=False)
        else:
            idx = t.Index.open(str(path))
        self._register(idx)
        self._indexes[collection] = idx
        return idx

    def _writer(self, collection: str):
        w = self._writers.get(collection)
        if w is None:
            w = self._index(collection, create=True).writer(heap_size=self.cfg.writer_heap_mb * 1024 * 1024,
                                                            num_threads=1)
            self._writers[collection] = w
        return w

    # -- lifecycle -------------------------------------------------------------------------
    def ensure_collection(self, collection: str) -> None:
        self._index(collection, create=True)

    def upsert(self, collection: str, batch: dict[str, np.ndarray]) -> WriteResult:
        import tantivy as t

        w = self._writer(collection)
        n = len(batch[schema.ID])
        for i in range(n):
            cid = batch[schema.ID][i]
            w.delete_documents_by_term("id", cid)
            raw_text, raw_title = batch[schema.TEXT][i], batch[schema.TITLE][i] or ""
            text, _ = prepare(raw_text, self.analyzer)
            title, _ = prepare(raw_title, self.analyzer)
            doc = json.dumps({"text": raw_text, "title": raw_title,
                              "metadata": json.loads(batch[schema.METADATA][i] or "{}")}, ensure_ascii=False)
            w.add_document(t.Document(id=cid, text=text, title=title, hash=batch[schema.HASH][i],
                                      doc=doc.encode("utf-8")))
        w.commit()
        return WriteResult(written=n)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        w = self._writer(collection)
        for cid in ids:
            w.delete_documents_by_term("id", cid)
        w.commit()
        return len(ids)

    def finalize(self, collection: str) -> None:
        w = self._writer(collection)
        w.commit()
        w.wait_merging_threads()
        self._writers.pop(collection, None)
        self._index(collection).reload()

    def _searcher(self, collection: str):
        idx = self._index(collection)
        idx.reload()
        return idx.searcher()

    def count(self, collection: str) -> int:
        return int(self._searcher(collection).num_docs)

    def _doc_payload(self, doc) -> dict[str, Any]:
        d = doc.to_dict()
        first = {k: (v[0] if isinstance(v, list) and v else v) for k, v in d.items()}
        src = json.loads(bytes(first.get("doc") or b"{}").decode("utf-8"))
        return {"id": first.get("id"), "text": src.get("text", ""), "title": src.get("title", ""),
                "metadata": src.get("metadata", {}), "hash": first.get("hash")}

    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        import tantivy as t

        if not ids:
            return {}
        idx = self._index(collection)
        s = self._searcher(collection)
        q = t.Query.term_set_query(idx.schema, "id", list(ids))
        res = s.search(q, limit=len(ids))
        out = {}
        for _, addr in res.hits:
            p = self._doc_payload(s.doc(addr))
            out[p["id"]] = p
        return out

    def list_collections(self, prefix: str) -> list[str]:
        return self.dirs.list(prefix)

    def drop_collection(self, collection: str) -> None:
        self._writers.pop(collection, None)
        self._indexes.pop(collection, None)
        self.dirs.drop(collection)

    def get_alias(self, alias: str) -> str | None:
        return self.dirs.get_alias(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        self.dirs.set_alias(alias, collection)

    def close(self) -> None:
        for w in self._writers.values():
            try:
                w.commit()
                w.wait_merging_threads()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._writers.clear()
        self._indexes.clear()

    # -- search ----------------------------------------------------------------------------
    def query_terms(self, query: str) -> list[str]:
        from ..analysis import analyze

        return analyze(query, self.analyzer)

    def search_bm25(self, collection: str, query: str, k: int) -> list[Hit]:
        import tantivy as t

        terms = list(dict.fromkeys(self.query_terms(query)))
        if not terms:
            return []
        idx = self._index(collection)
        clauses = []
        for term in terms:
            clauses.append((t.Occur.Should, t.Query.term_query(idx.schema, "text", term, index_option="freq")))
            tq = t.Query.term_query(idx.schema, "title", term, index_option="freq")
            if self.cfg.title_boost != 1.0:
                tq = t.Query.boost_query(tq, self.cfg.title_boost)
            if self.cfg.title_boost > 0:
                clauses.append((t.Occur.Should, tq))
        s = self._searcher(collection)
        res = s.search(t.Query.boolean_query(clauses), limit=k)
        hits = []
        for score, addr in res.hits:
            p = self._doc_payload(s.doc(addr))
            hits.append(Hit(p["id"], float(score), {"text": p["text"], "title": p["title"], "metadata": p["metadata"]}))
        return hits
