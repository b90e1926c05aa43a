"""The sweep's dense side in memory: every indexed chunk's full-dimension float vector (read back
from the index, or encoded once and cached), and an exact search over one storage form of them
that mirrors the vector store's."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import schema
from ..quantize import Calibration, asymmetric_scores, calibrate, pack_binary, quantize_scalar, truncate_normalize
from ..search import Searcher
from .axes import DenseSetting

log = logging.getLogger(__name__)


def one_blas_thread():
    """Single-threaded BLAS while timing one query at a time: a query's matrix-vector product is
    memory-bound, and BLAS threads fighting over a few shared cores only add noise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: timings are noisier without it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


class MemoryDenseIndex:
    """Document vectors in one storage form, searched exactly like the vector store searches them.

    ``docs`` are the full-dimension float vectors. Calibration (int8/uint8 ranges) comes from the
    first ``calibration_sample`` vectors after truncation, as in the pipeline, and the same
    calibration quantizes the queries.
    """

    def __init__(self, docs: np.ndarray, setting: DenseSetting, calibration_sample: int = 10_000,
                 calibration_quantile: float = 0.999):
        self.s = setting
        x = truncate_normalize(docs, setting.dim)
        self.calibration: Calibration | None = None
        self.float: np.ndarray | None = None
        self.codes: np.ndarray | None = None
        self.bits: np.ndarray | None = None
        kind = setting.first_stage if setting.first_stage in ("int8", "uint8") else setting.rescore_with
        if kind in ("int8", "uint8"):
            self.calibration = calibrate(x[:calibration_sample], kind, calibration_quantile)
            codes = quantize_scalar(x, self.calibration)
            self.codes = codes
            self._codes_f = codes.astype(np.float32)
            self._codes_sq = (self._codes_f ** 2).sum(axis=1)
        if setting.first_stage == "none" or setting.rescore_with == "float":
            self.float = x
        if setting.first_stage == "binary":
            self.bits = pack_binary(x)

    def search_timed(self, queries, qids, doc_ids: list[str], depth: int
                     ) -> tuple[dict[str, list[schema.Hit]], dict[str, float]]:
        """Hits and seconds per query (``queries[n]`` is the vector of ``qids[n]``), one at a time
        with single-threaded BLAS, as the sweep and the model comparison both time them."""
        hits: dict[str, list[schema.Hit]] = {}
        seconds: dict[str, float] = {}
        with one_blas_thread():
            for qid, vector in zip(qids, queries):
                t = time.perf_counter()
                idx, scores = self.search(vector, depth)
                seconds[qid] = time.perf_counter() - t
                hits[qid] = [schema.Hit(doc_ids[j], float(s)) for j, s in zip(idx, scores)]
        return hits, seconds

    def search(self, query: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and scores (higher is better) of the best ``depth`` documents."""
        s = self.s
        q = truncate_normalize(query[None, :], s.dim)[0]
        n = len(self.float if self.float is not None else self.codes if self.codes is not None else self.bits)
        if s.first_stage == "none":
            return _top(self.float @ q, depth)
        over = min(n, max(depth, int(depth * (s.oversample or 1.0))) if s.rescore_with else depth)
        if s.first_stage in ("int8", "uint8"):
            qc = quantize_scalar(q[None, :], self.calibration)[0].astype(np.float32)
            first = -(self._codes_sq - 2.0 * (self._codes_f @ qc))  # -(squared Euclid) + const
        else:
            qb = pack_binary(q[None, :])[0]
            first = -np.sqrt(np.bitwise_count(np.bitwise_xor(self.bits, qb)).sum(axis=1).astype(np.float32))
        idx, scores = _top(first, over)
        if s.rescore_with is None:
            return idx[:depth], scores[:depth]
        if s.rescore_with == "float":
            rescored = self.float[idx] @ q
        else:
            rescored = asymmetric_scores(q, self.codes[idx], self.calibration)
        order = np.argsort(-rescored, kind="stable")[:depth]
        return idx[order], rescored[order]


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


def corpus_rows(searcher: Searcher) -> tuple[list[str], list[str]]:
    """(ids, texts as encoded) of the corpus's valid rows, read from ``corpus.path``."""
    from ..encoders.tokens import document_texts
    from ..sources.parquet import plan_corpus, read_valid_rows

    cfg = searcher.cfg
    rows = read_valid_rows(plan_corpus(cfg.corpus), cfg.corpus, None)
    if not rows:
        return [], []
    return [str(x) for x in rows[schema.ID]], document_texts(rows, cfg.dense.document_prefix)


def document_vectors(searcher: Searcher, encode_batch_tokens: int = 16384,
                     progress: Callable[[str], None] | None = None) -> tuple[list[str], np.ndarray, str]:
    """Full-dimension float vectors of every indexed chunk: (ids, matrix, source).

    ``source`` is ``index`` when they were read back from a float index at the model's dimension,
    ``cache`` or ``encoded`` otherwise (the encode is cached under ``index.dir/cache/``).
    """
    full_dim = int(searcher.version["model"]["dim"])
    ids, texts = corpus_rows(searcher)
    if searcher.quantization == "none" and searcher.dim == full_dim:
        try:
            got: dict[str, np.ndarray] = {}
            for lo in range(0, len(ids), 1000):
                got.update(searcher.vectors.fetch_vectors(searcher.collection, ids[lo:lo + 1000], "dense"))
            have = [i for i in ids if i in got]
            if have:
                if len(have) < len(ids):
                    log.warning("%d corpus rows are not in the index; the sweep uses the %d indexed ones",
                                len(ids) - len(have), len(have))
                return have, np.stack([got[i] for i in have]).astype(np.float32), "index"
        except NotImplementedError:
            pass
    cache = None
    if not searcher.cfg.index.dir.startswith("s3://"):
        cache = Path(searcher.cfg.index.dir) / "cache" / f"{searcher.collection}-dense-{full_dim}.npz"
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            if list(z["ids"]) == ids:
                return ids, z["vectors"], "cache"
    if progress:
        progress(f"encoding {len(ids)} documents at {full_dim} dimensions (once; cached)")
    import torch

    from ..encoders.tokens import tokenize_texts

    model = searcher.dense_model
    tok_ids, _, _, _ = tokenize_texts(texts, model.model_ref, model.info.max_seq_length)
    out = []
    for lo in range(0, len(tok_ids), 2048):
        emb = model.embed_ids(tok_ids[lo:lo + 2048], encode_batch_tokens)
        out.append(torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy())
    vecs = np.concatenate(out) if out else np.zeros((0, full_dim), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.asarray(ids), vectors=vecs)
    return ids, vecs, "encoded"
