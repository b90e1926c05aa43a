"""The gate a version must pass before the alias moves to it (and that every run reports).

Checks, each reported by name with expected and actual values:

* ``counts``: vector store, text store and hash manifest hold exactly the same number of chunks,
  equal to input minus rejects plus the live chunks kept because their file could not be read.
* ``sample``: a deterministic sample of ids is present in both stores with the manifest's hash.
* ``nonempty``: a new version holds at least one chunk (an empty version is never published).
* ``golden``: optional golden queries; nDCG@10 of the new version may not drop more than
  ``verify.max_ndcg_drop`` below the live version's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..config import JobConfig
from ..stores.base import Store


@dataclass
class GateResult:
    passed: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {c['detail']}" for name, c in self.checks.items() if not c["ok"]]

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": self.checks}


def check_counts(expected: int, vectors: int, text: int, manifest: int) -> dict[str, Any]:
    ok = vectors == text == manifest == expected
    detail = (f"expected {expected} chunks (input - rejected + kept_unreadable); vector store {vectors}, text store {text}, "
              f"hash manifest {manifest}")
    return {"ok": ok, "expected": expected, "vector_store": vectors, "text_store": text, "hash_manifest": manifest,
            "detail": detail}


def check_sample(hashes: dict[str, str], vstore: Store, tstore: Store, collection: str, n: int,
                 seed: int = 0) -> dict[str, Any]:
    ids = sorted(hashes)
    sample = random.Random(seed).sample(ids, min(n, len(ids))) if ids else []
    got_v = vstore.retrieve(collection, sample) if sample else {}
    got_t = tstore.retrieve(collection, sample) if sample else {}
    missing_v = [i for i in sample if i not in got_v]
    missing_t = [i for i in sample if i not in got_t]
    bad_v = [i for i in sample if i in got_v and got_v[i].get("hash") != hashes[i]]
    bad_t = [i for i in sample if i in got_t and got_t[i].get("hash") != hashes[i]]
    ok = not (missing_v or missing_t or bad_v or bad_t)
    parts = []
    for what, lst in (("missing in vector store", missing_v), ("missing in text store", missing_t),
                      ("stale hash in vector store", bad_v), ("stale hash in text store", bad_t)):
        if lst:
            parts.append(f"{len(lst)} {what} (e.g. {lst[:3]})")
    return {"ok": ok, "sampled": len(sample), "detail": "; ".join(parts) or f"{len(sample)} ids match"}


def check_golden(new_ndcg: float, live_ndcg: float | None, max_drop: float) -> dict[str, Any]:
    if live_ndcg is None:
        return {"ok": True, "new": new_ndcg, "live": None, "detail": f"nDCG@10 {new_ndcg:.4f} (no live version)"}
    ok = new_ndcg >= live_ndcg - max_drop
    return {"ok": ok, "new": new_ndcg, "live": live_ndcg, "max_drop": max_drop,
            "detail": f"nDCG@10 {new_ndcg:.4f} vs live {live_ndcg:.4f} (allowed drop {max_drop})"}


def gate(checks: dict[str, dict[str, Any]]) -> GateResult:
    return GateResult(passed=all(c["ok"] for c in checks.values()), checks=checks)


def golden_check(cfg: JobConfig, collection: str, live: str | None) -> dict[str, Any]:
    """nDCG@10 (hybrid) of the golden queries on ``collection``, against the live version when another one is live."""
    from ..eval import load_qrels, load_queries, run_eval
    from ..search import Searcher

    queries, qrels = load_queries(cfg.verify.golden_queries), load_qrels(cfg.verify.golden_qrels)

    def ndcg(name: str) -> float:
        s = Searcher(cfg, collection=name)
        try:
            return run_eval(s, queries, qrels, modes=["hybrid"])["modes"]["hybrid"]["ndcg@10"]
        finally:
            s.close()

    live_ndcg = ndcg(live) if live and live != collection else None
    return check_golden(ndcg(collection), live_ndcg, cfg.verify.max_ndcg_drop)


def verify_version(cfg: JobConfig, counts: dict[str, int], hashes: dict[str, str], vstore: Store, tstore: Store,
                   collection: str, live: str | None) -> GateResult:
    """Run every configured check on ``collection``, given the run's counts and the version's hash manifest."""
    expected = counts["input"] - counts["rejected"] + counts.get("kept_unreadable", 0)
    checks = {"counts": check_counts(expected, counts["vector_store"], counts["text_store"], len(hashes)),
              "sample": check_sample(hashes, vstore, tstore, collection, cfg.verify.sample_ids)}
    if collection != live:  # a new version: one that holds nothing is never published
        checks["nonempty"] = {"ok": counts["indexed"] > 0, "indexed": counts["indexed"],
                              "detail": f"{counts['indexed']} chunks indexed" + (
                                  "" if counts["indexed"] else ": an empty version is never published")}
    if cfg.verify.golden_queries and cfg.verify.golden_qrels:
        checks["golden"] = golden_check(cfg, collection, live)
    return gate(checks)
