"""Fusion of ranked lists from several search modes (pure functions).

* :func:`rrf`: reciprocal rank fusion, ``score(d) = sum_m w_m / (k + rank_m(d))`` (ranks from 1).
* :func:`dbsf`: distribution-based score fusion: each list's scores are mapped to [0, 1] with
  ``(s - (mean - 3 std)) / (6 std)`` (clipped), then summed with weights.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


def rrf(lists: Mapping[str, Sequence[str]], k: int = 60, weights: Mapping[str, float] | None = None
        ) -> list[tuple[str, float]]:
    """Fuse ranked id lists; ties broken by first appearance (mode order, then rank)."""
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for mode, ids in lists.items():
        w = 1.0 if weights is None else float(weights.get(mode, 1.0))
        if w == 0:
            continue
        for rank, doc in enumerate(ids, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            order.setdefault(doc, len(order))
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def _normalise(scores: Sequence[float]) -> list[float]:
    n = len(scores)
    if n == 0:
        return []
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    if std == 0:
        return [0.5] * n
    lo, span = mean - 3 * std, 6 * std
    return [min(1.0, max(0.0, (s - lo) / span)) for s in scores]


def dbsf(lists: Mapping[str, Sequence[tuple[str, float]]], weights: Mapping[str, float] | None = None
         ) -> list[tuple[str, float]]:
    """Fuse scored lists by distribution-normalised score sum."""
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for mode, hits in lists.items():
        w = 1.0 if weights is None else float(weights.get(mode, 1.0))
        if w == 0:
            continue
        for (doc, _), ns in zip(hits, _normalise([s for _, s in hits])):
            scores[doc] = scores.get(doc, 0.0) + w * ns
            order.setdefault(doc, len(order))
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
