"""After the write: what the run's records say each row became, store refusals turned into rejects,
chunks deleted (refused, or gone from the corpus), and the counts of the run manifest.

The records (see :mod:`indexer.run.records`) are the source of exact counts: they are unique by
file and row, so retried tasks never count twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from .. import schema
from ..schema import CHANGED, NEW, UNCHANGED, WRITTEN_SCHEMA
from ..sources.parquet import CorpusPlan
from ..stages.validate import rejects_table
from ..storage import Storage, write_part
from ..stores.base import Store
from .records import RunRecords


def merge_rejects(records_rejects: pa.Table, corpus: CorpusPlan, store_rejects: list[tuple[str, str]],
                  where: dict[str, tuple[str, int]] | None = None) -> pa.Table:
    """All rejects of the run: validation parts (unique by file and row), bad files, store refusals
    (located by ``where``: chunk id -> (file, row) of the run's rows)."""
    where = where or {}
    tables = [records_rejects]
    for bf in corpus.bad_files:
        if bf.num_rows:
            ids = bf.ids or [None] * bf.num_rows
            tables.append(rejects_table(ids, [bf.file] * bf.num_rows, range(bf.num_rows), [bf.reason] * bf.num_rows))
        else:
            tables.append(rejects_table([None], [bf.file], [None], [bf.reason]))
    if store_rejects:
        reasons: dict[str, list[str]] = {}
        for i, r in store_rejects:  # one row per chunk, even when both stores refused it
            if r not in reasons.setdefault(i, []):
                reasons[i].append(r)
        ids = list(reasons)
        tables.append(rejects_table(ids, [where.get(i, (None, None))[0] for i in ids],
                                    [where.get(i, (None, None))[1] for i in ids],
                                    ["store refused: " + "; ".join(reasons[i]) for i in ids]))
    table = pa.concat_tables([t.cast(schema.REJECTS_SCHEMA) for t in tables])
    seen, keep = set(), []
    for i, (f, r, idv) in enumerate(zip(table.column("file").to_pylist(), table.column("row").to_pylist(),
                                        table.column("id").to_pylist())):
        key = (f, r) if r is not None else (f, idv, i)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())) if len(keep) != len(table) else table


class RecordWritten:
    """Called by write tasks once every store acknowledged a block: records (file, row) as written, with
    the row's token count and truncation flag (a resumed run sums them over every attempt)."""

    def __init__(self, storage: Storage, directory: str):
        self.storage = storage
        self.directory = directory

    def __call__(self, batch: dict[str, np.ndarray]) -> None:
        t = pa.Table.from_arrays([pa.array(list(batch[schema.FILE]), pa.string()),
                                  pa.array(batch[schema.ROW], pa.int64()),
                                  pa.array(batch[schema.N_TOKENS], pa.int64()),
                                  pa.array(batch[schema.TRUNCATED], pa.bool_())], schema=WRITTEN_SCHEMA)
        write_part(self.storage, self.directory, t)


@dataclass
class Reconciled:
    """The run's valid rows once store refusals are taken out, and every reject of the run."""

    rows: pa.Table  # file, row, id, hash, state of every chunk the new version holds
    refused: set[str]  # chunk ids a store refused
    rejects: pa.Table  # id, file, row, reason


def reconcile(records: RunRecords, corpus: CorpusPlan, store_rejects: list[tuple[str, str]]) -> Reconciled:
    """Take the chunks a store refused out of the run's rows and add them to its rejects, located by
    file and row."""
    refused = {i for i, _ in store_rejects}
    rows = records.rows
    where: dict[str, tuple[str, int]] = {}
    if refused:
        ids = rows.column("id").to_pylist()
        where = {i: (f, r) for i, f, r in zip(ids, rows.column("file").to_pylist(),
                                               rows.column("row").to_pylist()) if i in refused}
        rows = rows.filter(pa.array([i not in refused for i in ids]))
    return Reconciled(rows, refused, merge_rejects(records.rejects, corpus, store_rejects, where))


def delete_chunks(vstore: Store, tstore: Store, collection: str, ids: list[str]) -> None:
    """Delete ``ids`` from both stores, then finalise both so counts and readers see the deletes."""
    vstore.delete(collection, ids)
    tstore.delete(collection, ids)
    vstore.finalize(collection)
    tstore.finalize(collection)


def gone_ids(live_hashes: pa.Table, rows: pa.Table, refused: set[str], keep: frozenset[str] = frozenset()) -> list[str]:
    """Chunks of the live version that the corpus no longer has (refused ones are deleted as rejects;
    ``keep``: chunks whose file could not be read stay as they are)."""
    now = set(rows.column("id").to_pylist())
    return [i for i in live_hashes.column("id").to_pylist() if i not in now and i not in refused and i not in keep]


def kept_rows(live_hashes: pa.Table | None, rows: pa.Table, keep: frozenset[str],
              live_files: Mapping[str, str] | None) -> pa.Table:
    """The live (id, hash, file) records of the chunks kept because their file could not be read (and
    that no readable file holds now): they stay in the new hash manifest."""
    if live_hashes is None or not keep:
        return schema.HASH_FILE_SCHEMA.empty_table()
    now = set(rows.column("id").to_pylist())
    ids = live_hashes.column("id").to_pylist()
    mask = [i in keep and i not in now for i in ids]
    t = live_hashes.filter(pa.array(mask, pa.bool_())).select(["id", "hash"])
    files = [(live_files or {}).get(i) for i in t.column("id").to_pylist()]
    return t.append_column("file", pa.array(files, pa.string())).cast(schema.HASH_FILE_SCHEMA)


def delete_stale(vstore: Store, tstore: Store, collection: str, reconciled: Reconciled,
                 live_hashes: pa.Table | None, keep: frozenset[str] = frozenset()) -> int:
    """Remove refused chunks from both stores and, on an incremental run (``live_hashes`` given), the
    chunks gone from the corpus, except those in ``keep``; returns how many were gone."""
    if reconciled.refused:
        # A chunk one store refused must not stay in the other: it is a reject, not indexed.
        delete_chunks(vstore, tstore, collection, sorted(reconciled.refused))
    if live_hashes is None:
        return 0
    gone = gone_ids(live_hashes, reconciled.rows, reconciled.refused, keep)
    if gone:
        delete_chunks(vstore, tstore, collection, gone)
    return len(gone)


def count_rows(input_rows: int, records: RunRecords, reconciled: Reconciled, deleted: int,
               vector_count: int, text_count: int,
               kept_unreadable: int = 0) -> dict[str, int]:
    """The run manifest's counts: input, what each valid row became, rejects, tokens, store contents.
    ``input + kept_unreadable == indexed + rejected`` when the stores agree (README, "Running it unattended")."""
    rows = reconciled.rows
    states = rows.column("state").to_pylist()
    written_rows = {(f, r) for f, r, s in zip(rows.column("file").to_pylist(), rows.column("row").to_pylist(),
                                               states) if s != UNCHANGED}
    return {
        "input": input_rows,
        "indexed": min(vector_count, text_count),
        "encoded": len(written_rows & records.written),
        "unchanged": sum(s == UNCHANGED for s in states),
        "changed": sum(s == CHANGED for s in states),
        "new": sum(s == NEW for s in states),
        "deleted": deleted,
        "rejected": reconciled.rejects.num_rows,
        "kept_unreadable": kept_unreadable,
        "truncated": records.truncated,  # over every attempt of the run (the written records)
        "tokens": records.tokens,
        "vector_store": vector_count,
        "text_store": text_count,
    }
