"""Hybrid search over what a run left behind: dense + sparse (vector store) + BM25 (text store),
fused. Queries are encoded with the model, dimension and quantization recorded in the version
manifest of the collection the alias points to, so search always matches the index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .config import FusionKind, JobConfig
from .fusion import dbsf, minmax, rrf
from .layout import Layout, read_version
from .quantize import Calibration, asymmetric_scores, pack_binary, quantize_scalar
from .schema import Hit, SparseQuery, VectorSpec
from .storage import Storage
from .stores.factory import text_store_factory, vector_store_factory

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "sparse", "bm25")
MODEL_MODES = ("dense", "sparse")
"""Modes that read the query through the model's vocabulary (BM25 uses the text analyzer)."""


class SearchError(RuntimeError):
    """No live index, a mode the index can't serve, or a query that can't be answered (blank)."""


@dataclass
class EncodedQuery:
    text: str
    dense: np.ndarray | None = None  # float32, truncated + normalised
    sparse: SparseQuery | None = None
    coverage: float = 1.0  # share of the query's tokens in the model's vocabulary (not [UNK])
    empty: frozenset[str] = frozenset()  # modes whose analysis of the query came out empty (query_empty_modes)


@dataclass
class Settings:
    """How hybrid search fuses the modes (defaults from the config's ``search`` section; eval sweeps vary them)."""

    fusion: FusionKind = FusionKind.rrf
    rrf_k: int = 60
    weights: dict[str, float] = field(default_factory=lambda: {"dense": 1.0, "sparse": 1.0, "bm25": 1.0})
    modes: tuple[str, ...] = ("dense", "sparse", "bm25")
    candidates: int = 100
    min_coverage: float = 0.9  # below this vocabulary coverage a query is fused without MODEL_MODES

    @classmethod
    def from_config(cls, cfg: JobConfig) -> "Settings":
        s = cfg.search
        return cls(s.fusion, s.rrf_k, dict(s.weights), tuple(s.modes), s.candidates, s.min_vocab_coverage)

    def fused_modes(self, coverage: float = 1.0, empty: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """The modes fused for a query whose vocabulary coverage is ``coverage``.

        A model can't represent a query made mostly of tokens it does not know (``[UNK]``): its
        dense vector and model-vocabulary sparse vector are then noise that fusion would mix in.
        Such queries are answered by the remaining modes, leaving out those whose analysis of the
        query came out empty (``empty``: BM25 when the text analyzer kept no term), which could
        only answer nothing; if none remain, by all of them.
        """
        if coverage >= self.min_coverage:
            return self.modes
        rest = tuple(m for m in self.modes if m not in MODEL_MODES and m not in empty)
        return rest or self.modes

    def describe(self) -> dict[str, Any]:
        return {"fusion": self.fusion.value, "rrf_k": self.rrf_k, "weights": dict(self.weights),
                "fused": list(self.modes), "candidates": self.candidates, "min_vocab_coverage": self.min_coverage}


def fuse(per_mode: dict[str, list[Hit]], k: int, settings: Settings, coverage: float = 1.0,
         empty: frozenset[str] = frozenset()) -> list[Hit]:
    """Fuse the per-mode hit lists named in ``settings.modes`` (each cut to ``settings.candidates``).

    ``rrf`` ignores weights; ``weighted_rrf``, ``dbsf`` and ``minmax`` apply them. A mode the
    index does not have (no list in ``per_mode``) is left out, never an error. ``coverage`` is the
    query's vocabulary coverage and ``empty`` the modes whose query analysis came out empty
    (:meth:`Settings.fused_modes`).
    """
    s = settings
    lists = {m: per_mode[m][:s.candidates] for m in s.fused_modes(coverage, empty) if m in per_mode}
    if s.fusion in (FusionKind.dbsf, FusionKind.minmax):
        fn = dbsf if s.fusion == FusionKind.dbsf else minmax
        fused = fn({m: [(h.id, h.score) for h in hs] for m, hs in lists.items()}, s.weights)
    else:
        weights = s.weights if s.fusion == FusionKind.weighted_rrf else None
        fused = rrf({m: [h.id for h in hs] for m, hs in lists.items()}, s.rrf_k, weights)
    return [Hit(doc, score) for doc, score in fused[:k]]


def vocab_coverage(model_ref: str, queries: Sequence[str]) -> list[float]:
    """Per query, the share of its model tokens that are not the tokenizer's unknown token.

    The English MiniLM vocabulary covers SciFact and SQuAD-it queries fully, and 15-80% of the
    tokens of CMRC 2018's Chinese queries (most CJK characters are ``[UNK]``).
    """
    from .encoders.models import load_tokenizer

    tok = load_tokenizer(model_ref)
    unk = tok.unk_token_id
    if unk is None:
        return [1.0] * len(queries)
    ids = tok(list(queries), add_special_tokens=False)["input_ids"]
    return [1.0 - sum(1 for i in x if i == unk) / len(x) if x else 1.0 for x in ids]


def query_empty_modes(text: str, analyzer: str, sparse: SparseQuery | None = None) -> frozenset[str]:
    """The modes whose analysis of ``text`` came out empty: ``bm25`` when the text analyzer keeps no
    term of it (stopwords only; CJK under a per-language analyzer that drops it), ``sparse`` when its
    sparse query has no term. Dense always has a vector; its unknown tokens are ``coverage``'s business."""
    from .analysis import analyze

    out = set()
    if not analyze(text, analyzer):
        out.add("bm25")
    if sparse is not None and not sparse.indices:
        out.add("sparse")
    return frozenset(out)


def check_query(query: str) -> None:
    """Refuse a blank query: every mode would return arbitrary documents for it."""
    if not query.strip():
        raise SearchError("the query is blank: give at least one word to search for")


class Searcher:
    """Opens the live version (alias ``index.name``) of both stores and answers queries."""

    def __init__(self, cfg: JobConfig, collection: str | None = None, device: str = "cpu"):
        self.cfg = cfg
        self.storage = Storage(cfg.corpus.s3)
        self.layout = Layout(cfg.index.dir)
        probe = vector_store_factory(cfg)()
        try:
            self.collection = collection or probe.get_alias(cfg.index.name)
        finally:
            probe.close()
        if not self.collection:
            raise SearchError(f"no live index '{cfg.index.name}' under {cfg.index.dir}: run `indexer run` first")
        self.version = read_version(self.storage, self.layout, self.collection)
        d = self.version["dense"]
        self.dim = int(d["dim"])
        self.quantization = d["quantization"]
        self.calibration = Calibration.from_json(d["calibration"]) if d.get("calibration") else None
        self.spec = VectorSpec.from_version(self.version)
        self.vectors = vector_store_factory(cfg, self.spec)()
        self.text = text_store_factory(cfg)()
        self.device = device
        self._dense_model = None
        self._splade = None
        self.settings = Settings.from_config(cfg)
        self.timings: dict[str, list[float]] = {}

    # -- encoding ---------------------------------------------------------------------------
    @property
    def dense_model(self):
        if self._dense_model is None:
            from .encoders.dense import DenseModel

            m = self.version["model"]
            self._dense_model = DenseModel(m["ref"], self.device, "float32", m["max_seq_length"])
        return self._dense_model

    def encode(self, queries: Sequence[str], dense_dim: int | None = None) -> list[EncodedQuery]:
        """Encode queries for every mode the index has (batched for the dense model).

        Dense vectors are truncated to the index's dimension, or to ``dense_dim`` (eval sweeps ask
        for the model's full dimension and truncate per setting themselves).
        """
        import torch

        from .encoders.sparse import bm25_query

        out = [EncodedQuery(q, coverage=c) for q, c in zip(queries, self.vocab_coverage(queries))]
        emb = self.dense_model.encode_texts(list(queries), prefix=self.version["dense"].get("query_prefix", ""))
        x = torch.nn.functional.normalize(emb[:, : dense_dim or self.dim].float(), dim=1).cpu().numpy()
        for eq, v in zip(out, x):
            eq.dense = v
        kind = self.version["sparse"]["kind"]
        for eq in out:
            if kind == "bm25":
                eq.sparse = bm25_query(eq.text, self.version["model"]["ref"])
            elif kind == "splade":
                if self._splade is None:
                    from .encoders.sparse import SpladeModel

                    self._splade = SpladeModel(self.version["sparse"]["model"], self.device)
                eq.sparse = self._splade.encode_query(eq.text)
            eq.empty = query_empty_modes(eq.text, self.cfg.text_store.analyzer.value, eq.sparse)
        return out

    def vocab_coverage(self, queries: Sequence[str]) -> list[float]:
        return vocab_coverage(self.version["model"]["ref"], queries)

    # -- per-mode retrieval -------------------------------------------------------------------
    def _timed(self, mode: str, fn):
        t0 = time.perf_counter()
        r = fn()
        self.timings.setdefault(mode, []).append(time.perf_counter() - t0)
        return r

    def dense_hits(self, q: EncodedQuery, k: int) -> list[Hit]:
        return self._timed("dense", lambda: self._dense(q.dense, k))

    def _dense(self, v: np.ndarray, k: int) -> list[Hit]:
        qz = self.quantization
        if qz == "none":
            return self.vectors.search_dense(self.collection, v.astype(np.float32), k)
        over = max(k, int(k * self.cfg.dense.oversample))
        if qz in ("int8", "uint8"):
            codes = quantize_scalar(v[None, :], self.calibration)[0]
            hits = self.vectors.search_dense(self.collection, codes, over, with_vectors=True)
            return self._rescore(v, hits, "dense", k)
        bits = pack_binary(v[None, :])[0]
        if self.spec.rescore and self.calibration is not None:
            hits = self.vectors.search_dense(self.collection, bits, over, with_vectors=True)
            return self._rescore(v, hits, "dense_rescore", k)
        hits = self.vectors.search_dense(self.collection, bits, k)
        return hits

    def _rescore(self, v: np.ndarray, hits: list[Hit], name: str, k: int) -> list[Hit]:
        have = [h for h in hits if name in h.vectors]
        if not have:
            return hits[:k]
        codes = np.stack([np.asarray(h.vectors[name], dtype=np.uint8) for h in have])
        scores = asymmetric_scores(v, codes, self.calibration)
        for h, s in zip(have, scores):
            h.score = float(s)
            h.vectors = {}
        return sorted(have, key=lambda h: -h.score)[:k]

    def sparse_hits(self, q: EncodedQuery, k: int) -> list[Hit]:
        if q.sparse is None:
            raise SearchError("this index has no sparse vectors (sparse.kind: none)")
        if not q.sparse.indices:
            return []
        return self._timed("sparse", lambda: self.vectors.search_sparse(self.collection, q.sparse, k))

    def bm25_hits(self, q: EncodedQuery, k: int) -> list[Hit]:
        return self._timed("bm25", lambda: self.text.search_bm25(self.collection, q.text, k))

    def mode_hits(self, q: EncodedQuery, k: int, modes: Sequence[str]) -> dict[str, list[Hit]]:
        fns = {"dense": self.dense_hits, "sparse": self.sparse_hits, "bm25": self.bm25_hits}
        out = {}
        for m in modes:
            if m == "sparse" and q.sparse is None:
                continue
            out[m] = fns[m](q, k)
        return out

    def fuse(self, per_mode: dict[str, list[Hit]], k: int, settings: Settings | None = None,
             coverage: float = 1.0, empty: frozenset[str] = frozenset()) -> list[Hit]:
        return fuse(per_mode, k, settings or self.settings, coverage, empty)

    # -- public -------------------------------------------------------------------------------
    def search(self, query: str, mode: str = "hybrid", k: int = 10, with_text: bool = True) -> list[Hit]:
        if mode not in MODES:
            raise SearchError(f"mode must be one of {MODES}, got {mode!r}")
        check_query(query)
        # BM25 reads the text through the text store's analyzer: no model to load.
        q = EncodedQuery(query) if mode == "bm25" else self.encode([query])[0]
        if mode == "hybrid":
            cand = max(k, self.settings.candidates)
            # a k above the configured pool raises it: k hits, never fewer
            settings = replace(self.settings, candidates=cand)
            used = settings.fused_modes(q.coverage, q.empty)
            hits = self.fuse(self.mode_hits(q, cand, used), k, settings, coverage=q.coverage, empty=q.empty)
        else:
            hits = self.mode_hits(q, k, [mode]).get(mode, [])[:k]
        if with_text:
            self.attach_text(hits)
        return hits

    def attach_text(self, hits: list[Hit]) -> None:
        docs = self.text.retrieve(self.collection, [h.id for h in hits]) if hits else {}
        for h in hits:
            d = docs.get(h.id, {})
            h.payload = {"text": d.get("text", ""), "title": d.get("title", ""), "metadata": d.get("metadata", {})}

    def close(self) -> None:
        self.vectors.close()
        self.text.close()


def hit_json(h: Hit) -> dict[str, Any]:
    return {"id": h.id, "score": round(float(h.score), 6), **h.payload}
