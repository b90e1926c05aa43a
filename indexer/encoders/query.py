"""Queries of an evaluation, encoded in batches and searched per mode: the loop ``eval`` and
``sweep`` share.

Queries are encoded 64 at a time (the dense model batches them), then each query's candidate
list is fetched from the index once per mode and timed alone, so per-mode latency excludes the
encode. The searcher is anything with ``encode`` and ``mode_hits`` (:class:`indexer.search.Searcher`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

QUERY_BATCH = 64


class QuerySearcher(Protocol):
    """What :func:`encode_queries` needs from a searcher."""

    def encode(self, queries: Sequence[str], dense_dim: int | None = None) -> list[Any]: ...

    def mode_hits(self, q: Any, k: int, modes: Sequence[str]) -> dict[str, list[Any]]: ...


@dataclass
class EncodedQueries:
    """Per query id (in the order asked): the encoded query, each mode's hits and search seconds.

    ``encode_seconds`` holds one value per batch: the batch's encode time divided by its queries.
    """

    encoded: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # mode -> qid -> hits
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> qid -> search seconds
    encode_seconds: list[float] = field(default_factory=list)


def encode_queries(searcher: QuerySearcher, queries: Mapping[str, str], qids: Sequence[str], modes: Sequence[str],
                   depth: int, *, dense_dim: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> EncodedQueries:
    """Encode the queries ``qids`` (texts from ``queries``) and fetch each mode's top ``depth`` hits.

    ``dense_dim`` asks for dense query vectors at that dimension instead of the index's (a sweep
    truncates per setting itself). ``progress(done, total)`` is called after each batch.
    """
    out = EncodedQueries(hits={m: {} for m in modes}, seconds={m: {} for m in modes})
    for start in range(0, len(qids), QUERY_BATCH):
        chunk = qids[start:start + QUERY_BATCH]
        t0 = time.perf_counter()
        encoded = searcher.encode([queries[q] for q in chunk], dense_dim=dense_dim)
        out.encode_seconds.append((time.perf_counter() - t0) / max(1, len(chunk)))
        for qid, eq in zip(chunk, encoded):
            out.encoded[qid] = eq
            for m in modes:
                t0 = time.perf_counter()
                out.hits[m][qid] = searcher.mode_hits(eq, depth, [m]).get(m, [])
                out.seconds[m][qid] = time.perf_counter() - t0
        if progress:
            progress(min(start + QUERY_BATCH, len(qids)), len(qids))
    return out
