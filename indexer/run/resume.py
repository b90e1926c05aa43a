"""Resume only what is still true: an interrupted run resumes only on the corpus it started on.

At the start of a run its corpus fingerprint (per file: path, size, modification time, and from the
Parquet footer the row and row-group counts, or why the file could not be used) is recorded with the run
state. A rerun that would resume compares the fingerprint of the corpus it finds now; when anything
changed (the state keeps the fingerprint's digest under ``corpus`` and the fingerprint itself under
``corpus_files``, to say what changed), the interrupted attempt is discarded and the run is planned again from the live version:

* a full build's half-written new version (never live) is dropped from both stores;
* an incremental run wrote into the live version in place: its undo record (:mod:`indexer.run.undo`) is
  applied, which puts the live version back as it was. Without one, every chunk the attempt may have written
  (its diff records' new and changed ids) is *dirty*. The re-planned run rewrites a dirty chunk the
  corpus still has (even when its content is back to the live one) and deletes a dirty chunk the live
  version did not hold and the corpus no longer has, so the stores end up exactly as the corpus says.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from ..config import CorpusConfig
from ..layout import Layout
from ..schema import CHANGED, NEW
from ..sources.parquet import CorpusPlan, filesystem
from ..storage import Storage
from . import records

log = logging.getLogger(__name__)


def corpus_fingerprint(corpus: CorpusPlan, cfg: CorpusConfig) -> dict[str, dict[str, Any]]:
    """{file: {size, mtime_ns, rows, row_groups} or {size, mtime_ns, bad: reason}} of the planned corpus."""
    rows: dict[str, list[int]] = {}
    for f in corpus.fragments:
        r = rows.setdefault(f.file, [0, 0])
        r[0] += f.num_rows
        r[1] += 1
    bad = {b.file: b.reason for b in corpus.bad_files}
    out: dict[str, dict[str, Any]] = {}
    if not corpus.files:
        return out
    fs, _ = filesystem(corpus.files[0], cfg.s3)
    paths = [filesystem(f, cfg.s3)[1] for f in corpus.files]
    for f, info in zip(corpus.files, fs.get_file_info(paths)):
        entry: dict[str, Any] = {"size": info.size, "mtime_ns": info.mtime_ns}
        if f in bad:
            entry["bad"] = bad[f]
        else:
            entry["rows"], entry["row_groups"] = rows.get(f, [0, 0])
        out[f] = entry
    return out


def digest(fingerprint: dict[str, dict[str, Any]]) -> str:
    return hashlib.blake2b(json.dumps(fingerprint, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def describe_change(old: dict[str, dict[str, Any]] | None, new: dict[str, dict[str, Any]]) -> str:
    """'2 files changed, 1 added, 1 removed (e.g. ...)'; old None: the fingerprint was not recorded."""
    if old is None:
        return "the interrupted attempt recorded no corpus fingerprint"
    changed = sorted(f for f in new if f in old and old[f] != new[f])
    added = sorted(f for f in new if f not in old)
    removed = sorted(f for f in old if f not in new)
    example = (changed + added + removed)[:1]
    return (f"{len(changed)} files changed, {len(added)} added, {len(removed)} removed"
            + (f" (e.g. {example[0]})" if example else ""))


@dataclass(frozen=True)
class Discarded:
    """An interrupted attempt that was discarded: which run, why, and what it may have written."""

    run_id: str
    mode: str
    collection: str
    reason: str
    dirty: frozenset[str]  # ids an incremental attempt may have written into the live version
    undone: bool = False  # its undo record was applied: the live version is as before it (nothing dirty)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "mode": self.mode, "collection": self.collection, "reason": self.reason,
                "dirty": len(self.dirty), "undone": self.undone}


def still_true(state: dict[str, Any] | None, fingerprint: dict[str, dict[str, Any]]) -> str | None:
    """None when the interrupted run of ``state`` started on this corpus; else what changed."""
    if state is None:
        return None
    if state.get("corpus") == digest(fingerprint):
        return None
    return describe_change(state.get("corpus_files"), fingerprint)


def discard(storage: Storage, layout: Layout, state: dict[str, Any], reason: str) -> Discarded:
    """Read what the interrupted attempt may have written (its records are deleted by the caller, once
    it has undone what it can)."""
    run_id = state["run_id"]
    rows = records.load_records(storage, layout, run_id).rows
    dirty = frozenset(i for i, s in zip(rows.column("id").to_pylist(), rows.column("state").to_pylist())
                      if s in (NEW, CHANGED))
    log.warning("the corpus changed since interrupted run %s started (%s): its records are discarded and the run "
                "is planned again from the live version", run_id, reason)
    return Discarded(run_id, state.get("mode", "?"), state.get("collection", "?"), reason, dirty)
