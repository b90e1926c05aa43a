"""The lexical side of a comparison's hybrid rows, built over its own documents (the whole corpus,
a sample, or texts with pseudo-queries taken out), so no index needs to exist yet:

* BM25 from a real tantivy index in a temporary folder, with the config's analyzer and title
  weight (the embedded text store's code; an Elasticsearch text store is compared through it too);
* ``sparse.kind=bm25``: the model tokenizer's BM25 term weights, exactly as the encode stage
  computes them, scored in memory with the IDF the vector store applies
  (``ln(1 + (N - n + 0.5) / (n + 0.5))``, Qdrant's IDF modifier). This one is per model.
"""

from __future__ import annotations

import tempfile
import time
from typing import Sequence

import numpy as np

from .. import schema
from ..config import TextStoreConfig
from ..schema import Hit
from .corpus import EvalCorpus


class TempBM25:
    """A tantivy BM25 index of the comparison's documents, deleted on :meth:`close`."""

    COLLECTION = "compare"

    def __init__(self, corpus: EvalCorpus, cfg: TextStoreConfig):
        from ..stores.tantivy_text import TantivyTextStore

        self._tmp = tempfile.TemporaryDirectory(prefix="indexer-compare-")
        self.store = TantivyTextStore(self._tmp.name, cfg)
        self.store.ensure_collection(self.COLLECTION)
        n = len(corpus.ids)
        for lo in range(0, n, 5000):
            hi = min(n, lo + 5000)
            self.store.upsert(self.COLLECTION, {
                schema.ID: np.asarray(corpus.ids[lo:hi], dtype=object),
                schema.TEXT: np.asarray(corpus.texts[lo:hi], dtype=object),
                schema.TITLE: np.asarray(corpus.titles[lo:hi], dtype=object),
                schema.METADATA: np.asarray(["{}"] * (hi - lo), dtype=object),
                schema.HASH: np.asarray(["0" * 32] * (hi - lo), dtype=object)})
        self.store.finalize(self.COLLECTION)

    def search(self, query: str, k: int) -> tuple[list[Hit], float]:
        t0 = time.perf_counter()
        hits = self.store.search_bm25(self.COLLECTION, query, k)
        return hits, time.perf_counter() - t0

    def close(self) -> None:
        self.store.close()
        self._tmp.cleanup()


class MemorySparseBM25:
    """``sparse.kind=bm25`` over the comparison's documents for one model's tokenizer."""

    def __init__(self, model_ref: str, texts: Sequence[str], ids: Sequence[str], k1: float, b: float,
                 avg_len: float | None):
        from scipy import sparse as sp

        from ..encoders.models import tokenizer_info
        from ..encoders.sparse import average_length, bm25_weights
        from ..encoders.tokens import content_ids

        self.model_ref, self.ids = model_ref, list(ids)
        content = content_ids(list(texts), model_ref)
        info = tokenizer_info(model_ref)
        idx, val = bm25_weights(content, k1, b, avg_len or max(1.0, average_length(content)), info.special_ids)
        rows = np.repeat(np.arange(len(idx)), [len(i) for i in idx])
        cols = np.concatenate(idx) if idx else np.zeros(0, np.int32)
        vals = np.concatenate(val) if val else np.zeros(0, np.float32)
        m = sp.csr_matrix((vals, (rows, cols)), shape=(len(idx), info.vocab_size), dtype=np.float32)
        df = np.asarray((m > 0).sum(axis=0)).ravel().astype(np.float64)
        n = float(len(idx))
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.matrix = (m @ sp.diags(idf)).tocsc()

    def search(self, query: str, k: int) -> tuple[list[Hit], float]:
        from ..encoders.sparse import bm25_query

        t0 = time.perf_counter()
        q = bm25_query(query, self.model_ref)
        if not q.indices:
            return [], time.perf_counter() - t0
        scores = np.asarray(self.matrix[:, q.indices].sum(axis=1)).ravel()
        nz = np.flatnonzero(scores)
        top = nz[np.lexsort((nz, -scores[nz]))][:k]
        return [Hit(self.ids[i], float(scores[i])) for i in top], time.perf_counter() - t0

