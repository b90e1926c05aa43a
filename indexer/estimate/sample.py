"""Samples for the estimate: a uniform reservoir of rows from a stream of batches, and the token
length of each sampled row (the dense model's tokenizer, special tokens included).

Valid rows of a corpus are sampled by :func:`indexer.sources.parquet.read_valid_rows`; the
reservoir samples rows as a scan streams past them (every row, or the rows to encode).
"""

from __future__ import annotations

import random

import numpy as np

from .. import schema
from ..config import JobConfig
from ..encoders.models import load_tokenizer, tokenizer_info


class Reservoir:
    """A uniform sample of k rows from a stream of batches (algorithm R)."""

    COLUMNS = (schema.ID, schema.TEXT, schema.TITLE, schema.METADATA)

    def __init__(self, k: int, rng: random.Random):
        self.k, self.rng, self.seen = k, rng, 0
        self.rows: list[tuple] = []

    def offer(self, batch: dict[str, np.ndarray], idx) -> None:
        cols = [batch[c] for c in self.COLUMNS]
        for i in idx:
            self.seen += 1
            if len(self.rows) < self.k:
                self.rows.append(tuple(c[i] for c in cols))
            else:
                j = self.rng.randrange(self.seen)
                if j < self.k:
                    self.rows[j] = tuple(c[i] for c in cols)

    def columns(self) -> dict[str, np.ndarray]:
        return {c: np.array([r[n] for r in self.rows], dtype=object) for n, c in enumerate(self.COLUMNS)}


def token_lengths(cfg: JobConfig, sample: dict[str, np.ndarray]) -> tuple[np.ndarray, list[list[int]]]:
    """Tokens per sampled row before truncation (special tokens included) and the content ids."""
    from ..encoders.tokens import document_texts

    if not len(sample.get(schema.ID, [])):
        return np.zeros(0, dtype=np.int64), []
    info = tokenizer_info(cfg.dense.model, cfg.dense.max_seq_length)
    tok = load_tokenizer(cfg.dense.model)
    content = tok(document_texts(sample, cfg.dense.document_prefix), add_special_tokens=False,
                  verbose=False)["input_ids"]
    specials = len(info.prefix_ids) + len(info.suffix_ids)
    return np.array([len(c) + specials for c in content], dtype=np.int64), content
