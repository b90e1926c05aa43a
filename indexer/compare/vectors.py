"""One encode pass per model: every document's full-dimension float vector, reused for every
dimension and quantization of the comparison.

Where the vectors come from, cheapest first:

1. the comparison cache, ``index.dir/cache/compare/<model>.npz``, keyed per document by a hash of
   the model, its token limit and the exact text encoded, so a sample, a new seed or texts with
   pseudo-queries taken out re-encode only the documents whose text is new;
2. the live index, when it was built by this model with float vectors at the model's dimension
   (as ``eval --sweep`` reads them back), for documents whose text is the corpus's own;
3. the model, for the rest (the encode stage's tokenization and token-budget batches).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config import JobConfig

log = logging.getLogger(__name__)

ENCODE_ROWS = 2048


@dataclass
class DocumentVectors:
    """Full-dimension, L2-normalised document vectors (rows in corpus order) and where they came from."""

    vectors: np.ndarray
    sources: dict[str, int]  # "cache" / "index" / "encoded" -> documents
    encode_seconds: float = 0.0

    @property
    def label(self) -> str:
        return ", ".join(f"{n:,} {s}" for s, n in self.sources.items() if n) or "none"


def text_key(model_ref: str, max_seq_length: int, text: str) -> str:
    return hashlib.sha1(f"{model_ref}\0{max_seq_length}\0{text}".encode("utf-8")).hexdigest()[:20]


def cache_path(cfg: JobConfig, model_ref: str) -> Path | None:
    if cfg.index.dir.startswith("s3://"):
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_ref.rsplit("/", 1)[-1])[:60]
    digest = hashlib.sha1(model_ref.encode()).hexdigest()[:8]
    return Path(cfg.index.dir) / "cache" / "compare" / f"{slug}-{digest}.npz"


def _from_live_index(cfg: JobConfig, model_ref: str, full_dim: int, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Float vectors of ``ids`` read back from the live index when this model built it at full dimension."""
    from ..encoders.models import resolve_model
    from ..search import SearchError, Searcher

    try:
        s = Searcher(cfg)
    except (SearchError, KeyError, FileNotFoundError, OSError, ValueError):
        return {}
    try:
        m = s.version.get("model", {})
        if (s.quantization != "none" or s.dim != full_dim or int(m.get("dim", 0)) != full_dim
                or resolve_model(str(m.get("ref"))) != resolve_model(model_ref)):
            return {}
        got: dict[str, np.ndarray] = {}
        for lo in range(0, len(ids), 1000):
            got.update(s.vectors.fetch_vectors(s.collection, list(ids[lo:lo + 1000]), "dense"))
        return got
    except NotImplementedError:
        return {}
    finally:
        s.close()


def document_vectors(cfg: JobConfig, model, ids: Sequence[str], texts: Sequence[str],
                     corpus_own: Sequence[bool], progress: Callable[[str], None] | None = None) -> DocumentVectors:
    """Vectors of ``texts`` (encoded form) for the loaded ``model`` (:class:`DenseModel`).

    ``corpus_own[i]`` says document ``i`` has the corpus's own text (not edited), so the live
    index's vector of it may be used.
    """
    import time

    import torch

    from ..encoders.tokens import tokenize_texts

    ref, full_dim, max_seq = model.model_ref, int(model.full_dim), int(model.info.max_seq_length)
    keys = [text_key(ref, max_seq, t) for t in texts]
    out = np.zeros((len(texts), full_dim), np.float32)
    have = np.zeros(len(texts), bool)
    sources = {"cache": 0, "index": 0, "encoded": 0}
    path = cache_path(cfg, ref)
    cached: dict[str, int] = {}
    z = None
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        if z["vectors"].shape[1:] == (full_dim,):
            cached = {k: i for i, k in enumerate(z["keys"].tolist())}
            for i, k in enumerate(keys):
                j = cached.get(k)
                if j is not None:
                    out[i], have[i] = z["vectors"][j], True
            sources["cache"] = int(have.sum())
    want = [i for i in range(len(texts)) if not have[i] and corpus_own[i]]
    if want:
        live = _from_live_index(cfg, ref, full_dim, [ids[i] for i in want])
        for i in want:
            v = live.get(ids[i])
            if v is not None:
                out[i], have[i] = np.asarray(v, np.float32), True
                sources["index"] += 1
    todo = [i for i in range(len(texts)) if not have[i]]
    t0 = time.perf_counter()
    if todo:
        if progress:
            progress(f"{ref}: encoding {len(todo):,} documents at {full_dim} dimensions (once; cached)")
        batch = cfg.encode.tokens_per_batch(model.device)
        for lo in range(0, len(todo), ENCODE_ROWS):
            part = todo[lo:lo + ENCODE_ROWS]
            tok, _, _, _ = tokenize_texts([texts[i] for i in part], ref, max_seq)
            emb = torch.nn.functional.normalize(model.embed_ids(tok, batch).float(), dim=1).cpu().numpy()
            out[part] = emb
        sources["encoded"] = len(todo)
    seconds = time.perf_counter() - t0
    new = [i for i in range(len(texts)) if keys[i] not in cached]
    if path is not None and new:
        old_keys = z["keys"] if z is not None and cached else np.zeros(0, dtype="<U20")
        old_vecs = z["vectors"] if z is not None and cached else np.zeros((0, full_dim), np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, keys=np.concatenate([old_keys, np.asarray([keys[i] for i in new])]),
                 vectors=np.concatenate([old_vecs, out[new]]))
        tmp.replace(path)
    return DocumentVectors(out, sources, seconds)
