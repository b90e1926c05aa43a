"""Fusion of ranked lists from several search modes (pure functions).

* :func:`rrf`: reciprocal rank fusion, ``score(d) = sum_m w_m / (k + rank_m(d))`` (ranks from 1);
  with ``weights`` it is weighted RRF. Uses ranks only, so it needs no calibration between modes.
* :func:`dbsf`: distribution-based score fusion (as in Qdrant): each list's scores are mapped to
  [0, 1] with ``(s - (mean - 3 std)) / (6 std)`` (clipped), then summed with weights.
* :func:`minmax`: min-max normalised score fusion: each list's scores are mapped to [0, 1] with
  ``(s - min) / (max - min)``, then summed with weights (the "convex combination" of Bruch et al.).

A document missing from a list contributes nothing for that list. Ties are broken by first
appearance (mode order, then rank), so results are deterministic.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence


def rrf(lists: Mapping[str, Sequence[str]], k: int = 60, weights: Mapping[str, float] | None = None
        ) -> list[tuple[str, float]]:
    """Fuse ranked id lists by (weighted) reciprocal rank."""
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


def normalise_dbsf(scores: Sequence[float]) -> list[float]:
    """Scores -> [0, 1] by ``mean +- 3 std`` (population std), clipped; constant lists map to 0.5."""
    n = len(scores)
    if n == 0:
        return []
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    if std == 0:
        return [0.5] * n
    lo, span = mean - 3 * std, 6 * std
    return [min(1.0, max(0.0, (s - lo) / span)) for s in scores]


def normalise_minmax(scores: Sequence[float]) -> list[float]:
    """Scores -> [0, 1] by the list's own min and max; constant lists map to 1.0 (all tie at the top)."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def _score_fusion(lists: Mapping[str, Sequence[tuple[str, float]]], weights: Mapping[str, float] | None,
                  norm: Callable[[Sequence[float]], list[float]]) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for mode, hits in lists.items():
        w = 1.0 if weights is None else float(weights.get(mode, 1.0))
        if w == 0:
            continue
        for (doc, _), ns in zip(hits, norm([s for _, s in hits])):
            scores[doc] = scores.get(doc, 0.0) + w * ns
            order.setdefault(doc, len(order))
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def dbsf(lists: Mapping[str, Sequence[tuple[str, float]]], weights: Mapping[str, float] | None = None
         ) -> list[tuple[str, float]]:
    """Fuse scored lists by distribution-normalised (mean +- 3 std) weighted score sum."""
    return _score_fusion(lists, weights, normalise_dbsf)


def minmax(lists: Mapping[str, Sequence[tuple[str, float]]], weights: Mapping[str, float] | None = None
           ) -> list[tuple[str, float]]:
    """Fuse scored lists by min-max normalised weighted score sum."""
    return _score_fusion(lists, weights, normalise_minmax)
