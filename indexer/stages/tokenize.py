"""Tokenize stage (CPU tasks): text -> token ids, so encoder actors only run the model.

Also counts tokens before truncation (for ``truncated`` and cost estimates) and derives the BM25
sparse vector from the same token ids when ``sparse.kind == bm25`` (it needs no model).
"""

from __future__ import annotations

import numpy as np

from .. import schema
from ..encoders.sparse import bm25_weights
from ..encoders.tokens import document_texts, ragged, tokenize_texts
from .base import Stage
from .stats import StageReporter


class Tokenize(Stage):
    """Pipeline stage (CPU tasks): adds input ids, token counts, truncation flags, BM25 sparse."""

    name = "tokenize"

    def __init__(self, model_ref: str, max_seq_length: int | None, document_prefix: str,
                 bm25: dict | None, reporter: StageReporter | None = None):
        super().__init__(reporter)
        self.model_ref = model_ref
        self.max_seq_length = max_seq_length
        self.prefix = document_prefix
        self.bm25 = bm25  # {"k1", "b", "avg_len", "special_ids"} or None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            ids, n_tok, trunc, content = tokenize_texts(document_texts(batch, self.prefix), self.model_ref,
                                                        self.max_seq_length)
            batch[schema.INPUT_IDS] = ragged(ids)
            batch[schema.N_TOKENS] = n_tok
            batch[schema.TRUNCATED] = trunc
            if self.bm25 is not None:
                idx, val = bm25_weights(content, **self.bm25)
                batch[schema.SPARSE_INDICES] = ragged(idx)
                batch[schema.SPARSE_VALUES] = ragged(val)
            extra["tokens"] = int(n_tok.sum())
            extra["truncated"] = int(trunc.sum())
        return batch
