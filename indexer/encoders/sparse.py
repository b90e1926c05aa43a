"""Sparse encoders.

* ``bm25``: term frequencies of the model tokenizer's ids, saturated as in BM25
  (``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``); the vector store applies IDF
  (Qdrant's IDF modifier), so a dot product with a query of ones is the BM25 score.
* ``splade``: learned sparse vectors from a sentence-transformers ``SparseEncoder``, loaded inside
  the encoder actor (documents) and by the searcher (queries). Two kinds of models work unchanged:
  SPLADE (``naver/splade-cocondenser-ensembledistil``: an MLM head + max pooling on both sides)
  and inference-free document-side models (``opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill``:
  documents through the MLM head, queries through a static per-token weight table, so queries cost no
  model forward). ``encode_document`` / ``encode_query`` route to the right side. Set
  ``sparse.kind: splade`` and ``sparse.model: <hub name or local folder>``; the values are stored as
  weights (no IDF modifier in the vector store).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..schema import SparseQuery


def bm25_weights(content_ids: Iterable[list[int]], k1: float, b: float, avg_len: float,
                 special_ids: Iterable[int] = ()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """BM25-saturated term weights per document (indices sorted, special tokens dropped)."""
    special = np.asarray(sorted(set(special_ids)), dtype=np.int64)
    idx_out, val_out = [], []
    for ids in content_ids:
        a = np.asarray(ids, dtype=np.int64)
        if len(special):
            a = a[~np.isin(a, special)]
        terms, tf = np.unique(a, return_counts=True)
        dl = float(len(a))
        denom = tf + k1 * (1.0 - b + b * dl / avg_len)
        idx_out.append(terms.astype(np.int32))
        val_out.append((tf * (k1 + 1.0) / denom).astype(np.float32))
    return idx_out, val_out


def bm25_query(text: str, model_ref: str) -> SparseQuery:
    """Query side of ``bm25``: each distinct token once with weight 1 (IDF comes from the store)."""
    from .models import load_tokenizer, tokenizer_info

    tok = load_tokenizer(model_ref)
    special = set(tokenizer_info(model_ref).special_ids)
    ids = sorted({i for i in tok(text, add_special_tokens=False)["input_ids"] if i not in special})
    return SparseQuery(indices=ids, values=[1.0] * len(ids))


def average_length(content_ids: Iterable[list[int]]) -> float:
    lens = [len(x) for x in content_ids]
    return float(np.mean(lens)) if lens else 1.0


class SpladeModel:
    """sentence-transformers ``SparseEncoder`` wrapper: documents and queries -> (indices, values)."""

    def __init__(self, model_ref: str, device: str = "cpu", max_seq_length: int | None = None):
        from sentence_transformers import SparseEncoder

        from .models import resolve_model

        self.model = SparseEncoder(resolve_model(model_ref), device=device)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length

    @staticmethod
    def _rows(emb) -> tuple[list[np.ndarray], list[np.ndarray]]:
        emb = emb.coalesce().cpu()
        rows = emb.indices()[0].numpy()
        cols = emb.indices()[1].numpy().astype(np.int32)
        vals = emb.values().float().numpy().astype(np.float32)
        n = emb.shape[0]
        order = np.argsort(rows, kind="stable")
        rows, cols, vals = rows[order], cols[order], vals[order]
        bounds = np.searchsorted(rows, np.arange(n + 1))
        return ([cols[bounds[i]:bounds[i + 1]] for i in range(n)],
                [vals[bounds[i]:bounds[i + 1]] for i in range(n)])

    def encode_documents(self, texts: list[str], batch_size: int = 32):
        emb = self.model.encode_document(texts, batch_size=batch_size, convert_to_sparse_tensor=True,
                                         show_progress_bar=False)
        return self._rows(emb)

    def encode_query(self, text: str) -> SparseQuery:
        emb = self.model.encode_query([text], convert_to_sparse_tensor=True, show_progress_bar=False)
        idx, val = self._rows(emb)
        return SparseQuery(indices=idx[0].tolist(), values=val[0].tolist())
