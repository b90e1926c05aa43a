"""Partition-level run records: what each row became, and which rows reached both stores.

Three kinds of Parquet parts live under ``runs/<run_id>/`` (names are hashes of the rows they
hold, so a retried task overwrites its own part instead of adding a second one):

* ``rejects/part-*.parquet``: rows not indexed (id, file, row, reason)
* ``rows/part-*.parquet``: valid rows with their hash and diff state (file, row, id, hash, state)
* ``written/part-*.parquet``: rows acknowledged by every store (file, row, tokens, truncated)

A fragment (row group) is complete when every one of its rows is a reject or a valid row, and every
valid row that needed writing was written. A resumed run skips complete fragments; counts at the
end come from these records (unique by file and row), so retries never count twice, and the tokens
and truncated rows of a resumed run are those of every attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..layout import Layout
from ..schema import ROWS_SCHEMA, UNCHANGED, WRITTEN_SCHEMA
from ..storage import Storage, join, read_parts

def rows_dir(layout: Layout, run_id: str) -> str:
    return join(layout.run_dir(run_id), "rows")


def written_dir(layout: Layout, run_id: str) -> str:
    return join(layout.run_dir(run_id), "written")


def delete_run_parts(storage: Storage, layout: Layout, run_id: str) -> None:
    """Remove a finished run's per-task parts (rejects, rows, written); its merged records stay."""
    storage.delete_prefix(layout.rejects_parts(run_id))
    storage.delete_prefix(rows_dir(layout, run_id))
    storage.delete_prefix(written_dir(layout, run_id))


def unique_rows(table: pa.Table) -> pa.Table:
    """One record per (file, row): the last one written wins (retries rewrite identical rows)."""
    if table.num_rows == 0:
        return table
    seen: dict[tuple[str, int], int] = {}
    for i, (f, r) in enumerate(zip(table.column("file").to_pylist(), table.column("row").to_pylist())):
        seen[(f, r)] = i
    if len(seen) == table.num_rows:
        return table
    return table.take(pa.array(sorted(seen.values()), pa.int64()))


@dataclass
class RunRecords:
    """Everything a run (or an interrupted attempt of it) has recorded so far."""

    rows: pa.Table  # unique valid rows: file, row, id, hash, state
    written: set[tuple[str, int]]
    rejects: pa.Table  # unique rejects: id, file, row, reason
    tokens: int = 0  # tokens before truncation of the written rows (each row once, whichever attempt wrote it)
    truncated: int = 0  # written rows that were truncated

    def completed_fragments(self, fragments) -> set[str]:
        """Keys of fragments whose rows are all accounted for and written where needed."""
        by_file: dict[str, dict[int, str]] = {}
        for f, r, s in zip(self.rows.column("file").to_pylist(), self.rows.column("row").to_pylist(),
                           self.rows.column("state").to_pylist()):
            by_file.setdefault(f, {})[r] = s
        rej: dict[str, set[int]] = {}
        for f, r in zip(self.rejects.column("file").to_pylist(), self.rejects.column("row").to_pylist()):
            if r is not None:
                rej.setdefault(f, set()).add(r)
        done = set()
        for frag in fragments:
            states = by_file.get(frag.file, {})
            rj = rej.get(frag.file, set())
            ok = True
            for r in range(frag.row_offset, frag.row_offset + frag.num_rows):
                s = states.get(r)
                if s is None:
                    if r not in rj:
                        ok = False
                        break
                elif s != UNCHANGED and (frag.file, r) not in self.written:
                    ok = False
                    break
            if ok:
                done.add(frag.key)
        return done


def load_records(storage: Storage, layout: Layout, run_id: str) -> RunRecords:
    from .. import schema as sch

    rows = unique_rows(read_parts(storage, rows_dir(layout, run_id), ROWS_SCHEMA))
    written_t = unique_rows(read_parts(storage, written_dir(layout, run_id), WRITTEN_SCHEMA))
    written = set(zip(written_t.column("file").to_pylist(), written_t.column("row").to_pylist()))
    rejects = read_parts(storage, layout.rejects_parts(run_id), sch.REJECTS_SCHEMA)
    tokens = pc.sum(written_t.column("tokens")).as_py() or 0
    truncated = pc.sum(written_t.column("truncated").cast(pa.int64())).as_py() or 0
    return RunRecords(rows=rows, written=written, rejects=rejects, tokens=int(tokens), truncated=int(truncated))


# ------------------------------------------------------------------------------------------
# Run state: lets the next invocation resume an interrupted run
# ------------------------------------------------------------------------------------------

def state_path(layout: Layout, index_name: str) -> str:
    return join(layout.root, "state", f"{index_name}.json")


def read_state(storage: Storage, layout: Layout, index_name: str) -> dict[str, Any] | None:
    p = state_path(layout, index_name)
    return storage.read_json(p) if storage.exists(p) else None


def write_state(storage: Storage, layout: Layout, index_name: str, state: dict[str, Any]) -> None:
    storage.write_json(state_path(layout, index_name), state)


# ------------------------------------------------------------------------------------------
# Hash manifests of versions
# ------------------------------------------------------------------------------------------

def read_hashes(storage: Storage, layout: Layout, collection: str) -> pa.Table:
    from .. import schema as sch

    return read_parts(storage, layout.hashes_dir(collection), sch.HASH_SCHEMA)


def write_hashes(storage: Storage, layout: Layout, collection: str, table: pa.Table) -> None:
    """Replace the version's (id, hash) manifest (one Parquet file; sorted by id). A ``file`` column, when
    given, is kept: it says which file each chunk came from (see :func:`read_hash_files`)."""
    from .. import schema as sch

    storage.delete_prefix(layout.hashes_dir(collection))
    if "file" in table.column_names:
        t = table.select(["id", "hash", "file"]).cast(sch.HASH_FILE_SCHEMA)
    else:
        t = table.select(["id", "hash"]).cast(sch.HASH_SCHEMA)
    t = t.sort_by("id")
    storage.write_parquet(join(layout.hashes_dir(collection), "part-0.parquet"), t)


def read_hash_files(storage: Storage, layout: Layout, collection: str) -> dict[str, str] | None:
    """{id: source file} of a version's chunks; None when its hash manifest does not record files."""
    out: dict[str, str] = {}
    for u in storage.list(layout.hashes_dir(collection)):
        if not u.endswith(".parquet"):
            continue
        t = storage.read_parquet(u)
        if "file" not in t.column_names:
            return None
        out.update(zip(t.column("id").to_pylist(), t.column("file").to_pylist()))
    return out


def hashes_as_dict(table: pa.Table) -> dict[str, str]:
    return dict(zip(table.column("id").to_pylist(), table.column("hash").to_pylist()))


def fingerprint_json(fp: dict[str, Any]) -> str:
    return json.dumps(fp, sort_keys=True, default=str)
