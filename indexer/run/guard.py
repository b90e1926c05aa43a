"""The deletion guard: a run that would shrink the live index by more than ``index.max_delete_fraction``
is refused before it writes anything.

Everything here is pure: the counts come from the corpus plan (ids read from Parquet footers and id
columns) and the live version's hash manifest, so ``indexer run`` and ``indexer estimate`` compute the
same numbers with the same functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

HOW_TO_PROCEED = ("if that is intended, rerun with --allow-deletes (indexer run, jobs/index.py) "
                  "or raise index.max_delete_fraction")


class RunRefused(RuntimeError):
    """A guard refused the run before anything was written; the message is one line saying why and how
    to proceed. ``verdict`` carries the numbers."""

    def __init__(self, verdict: "GuardVerdict"):
        super().__init__(verdict.message)
        self.verdict = verdict

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` prints for a refused run."""
        return {"status": "refused", "reason": str(self), "guard": self.verdict.to_json()}


@dataclass(frozen=True)
class DeletePlan:
    """Which live chunks a run would delete and which it keeps because their file could not be read."""

    live: int  # chunks of the live version (0: no live version)
    delete: frozenset[str]  # live ids gone from the corpus (from readable files)
    kept_unreadable: frozenset[str]  # live ids whose file could not be read: left as they are
    kept_files: Mapping[str, str] = field(default_factory=dict)  # kept id -> its file (empty: not recorded)


@dataclass(frozen=True)
class GuardCounts:
    """The numbers the guard decides on."""

    mode: str  # full | incremental
    live: int  # chunks of the live version (0: none)
    would_delete: int  # live chunks the run would delete (a full build: live chunks the new version lacks)
    valid_rows: int  # rows of the corpus with a usable, unique id
    publish: int | None  # chunks a full build would publish; None on an incremental run
    kept_unreadable: int = 0  # live chunks kept because their file could not be read


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's decision: ``refused`` with a one-line ``message``, or allowed (message says why)."""

    refused: bool
    message: str
    counts: GuardCounts
    max_delete_fraction: float
    allow_deletes: bool

    def to_json(self) -> dict[str, Any]:
        return {"refused": self.refused, "message": self.message, "max_delete_fraction": self.max_delete_fraction,
                "allow_deletes": self.allow_deletes, **asdict(self.counts)}


def plan_deletes(live_ids: Iterable[str], live_files: Mapping[str, str] | None, corpus_ids: set[str],
                 unreadable_files: set[str]) -> DeletePlan:
    """Split the live ids the corpus no longer has into deletes and chunks kept because their file is
    unreadable. ``live_files`` maps a live id to the file it came from; None (a manifest written before
    files were recorded) keeps every missing id while any file is unreadable: what it held is unknown."""
    live = list(live_ids)
    missing = [i for i in live if i not in corpus_ids]
    if not unreadable_files:
        return DeletePlan(len(live), frozenset(missing), frozenset())
    if live_files is None:
        return DeletePlan(len(live), frozenset(), frozenset(missing))
    kept = frozenset(i for i in missing if live_files.get(i) in unreadable_files)
    return DeletePlan(len(live), frozenset(missing) - kept, kept, {i: live_files[i] for i in kept})


def guard_counts(mode: str, deletes: DeletePlan, valid_rows: int) -> GuardCounts:
    """The guard's numbers for a run of ``mode`` given what it would delete and the corpus's valid rows."""
    return GuardCounts(mode=mode, live=deletes.live, would_delete=len(deletes.delete), valid_rows=valid_rows,
                       publish=valid_rows if mode == "full" else None,
                       kept_unreadable=len(deletes.kept_unreadable))


def assess(mode: str, live_ids: list[str], live_files: Mapping[str, str] | None, corpus_ids: set[str],
           unreadable_files: set[str], live_count: int | None = None) -> tuple[DeletePlan, GuardCounts]:
    """What a run of ``mode`` would delete and the guard's numbers. A full build writes a new version, so
    it keeps nothing of unreadable files. ``live_count`` sizes a live version whose ids are unknown (no
    hash manifest): then only a full build's size can be judged."""
    deletes = plan_deletes(live_ids, live_files, corpus_ids, unreadable_files if mode == "incremental" else set())
    counts = guard_counts(mode, deletes, len(corpus_ids))
    if not live_ids and live_count:
        counts = GuardCounts(mode, live_count, max(0, live_count - len(corpus_ids)), len(corpus_ids),
                             counts.publish)
    return deletes, counts


def check_deletes(counts: GuardCounts, max_delete_fraction: float, allow_deletes: bool = False) -> GuardVerdict:
    """Refuse a run that would delete more than ``max_delete_fraction`` of the live chunks, that has no
    valid rows while a live version exists, or a full build that would publish fewer than
    ``1 - max_delete_fraction`` of the live chunks. ``allow_deletes`` lets any of them through."""
    live, gone = counts.live, counts.would_delete
    share = f"{gone / live:.0%}" if live else "0%"
    limit = f"index.max_delete_fraction={max_delete_fraction:g}"
    problem = ""
    if live and counts.valid_rows == 0:
        problem = (f"the corpus has no valid rows while the live version holds {live} chunks: "
                   f"{gone} of {live} live chunks would be deleted")
    elif counts.mode == "full" and live and counts.publish is not None and \
            counts.publish < (1 - max_delete_fraction) * live:
        problem = (f"a full build would publish {counts.publish} chunks, fewer than {1 - max_delete_fraction:.0%} "
                   f"of the live version's {live} ({limit}): {gone} of {live} live chunks would be deleted")
    elif live and gone > max_delete_fraction * live:
        problem = f"{gone} of {live} live chunks ({share}) would be deleted, above {limit}"
    if not problem:
        msg = f"{gone} of {live} live chunks would be deleted ({share}; {limit})"
        return GuardVerdict(False, msg, counts, max_delete_fraction, allow_deletes)
    if allow_deletes:
        return GuardVerdict(False, f"allowed by --allow-deletes: {problem}", counts, max_delete_fraction, True)
    return GuardVerdict(True, f"refused: {problem}; {HOW_TO_PROCEED}", counts, max_delete_fraction, False)
