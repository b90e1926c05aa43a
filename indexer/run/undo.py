"""Every incremental run can be undone: an undo record of what it overwrote, deleted and added.

An incremental run changes the live version in place. Before it writes, it exports from both stores the
chunks it will overwrite (changed) and, before it deletes, the chunks it will delete (gone from the
corpus), with their lines of the hash manifest; the chunks it will add are recorded as absent. Undoing
deletes the added chunks, writes the exported ones back (each store's :meth:`~indexer.stores.base.Store.export_rows`
gives the batch its upsert takes) and puts the hash manifest's lines back. The record grows with the size
of the change, not of the corpus.

```
runs/<run_id>/undo/
  record.json                 run, collection, status (recorded | undone)
  touched/part-*.parquet      id, present (held by the live version before the run), hash, file
  vectors/part-*.parquet      the vector store's export of the present ids
  text/part-*.parquet         the text store's export of the present ids
```
An id is recorded once, by the first attempt that touched it (a resumed attempt skips recorded ids: by
then the stores may hold its own writes).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from .. import schema
from ..layout import Layout
from ..schema import Columns
from ..storage import Storage, join, part_key, read_parts
from ..stores.base import StoreTarget
from . import records

log = logging.getLogger(__name__)

TOUCHED_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("present", pa.bool_()),
                            pa.field("hash", pa.string()), pa.field("file", pa.string())])
EXPORT_BATCH = 1000  # ids exported (and written as one part) at a time


def undo_dir(layout: Layout, run_id: str) -> str:
    return join(layout.run_dir(run_id), "undo")


def _record_path(layout: Layout, run_id: str) -> str:
    return join(undo_dir(layout, run_id), "record.json")


def read_record(storage: Storage, layout: Layout, run_id: str) -> dict[str, Any] | None:
    p = _record_path(layout, run_id)
    return storage.read_json(p) if storage.exists(p) else None


# ------------------------------------------------------------------------------------------
# Columns <-> Arrow (the stores' upsert batches as Parquet)
# ------------------------------------------------------------------------------------------

def columns_to_table(batch: Columns) -> pa.Table:
    """An upsert batch as an Arrow table: strings, fixed-size lists (2-D arrays), lists (per-row arrays)."""
    arrays, names = [], []
    for name, col in batch.items():
        col = np.asarray(col) if not isinstance(col, np.ndarray) else col
        if col.ndim == 2:
            arr = pa.FixedSizeListArray.from_arrays(pa.array(col.reshape(-1)), col.shape[1])
        elif col.dtype == object and len(col) and isinstance(col[0], np.ndarray):
            arr = pa.array([np.asarray(x) for x in col], pa.list_(pa.from_numpy_dtype(col[0].dtype)))
        elif col.dtype == object:
            arr = pa.array([None if x is None else str(x) for x in col], pa.string())
        else:
            arr = pa.array(col)
        arrays.append(arr)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def table_to_columns(table: pa.Table) -> Columns:
    """The inverse of :func:`columns_to_table`."""
    out: Columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        t = col.type
        if pa.types.is_fixed_size_list(t):
            flat = col.flatten().to_numpy(zero_copy_only=False)
            out[name] = flat.reshape(len(col), t.list_size)
        elif pa.types.is_list(t):
            arr = np.empty(len(col), dtype=object)
            dtype = t.value_type.to_pandas_dtype()
            for k, v in enumerate(col.to_pylist()):
                arr[k] = np.asarray(v or [], dtype=dtype)
            out[name] = arr
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out[name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


# ------------------------------------------------------------------------------------------
# Recording
# ------------------------------------------------------------------------------------------

def touched(storage: Storage, layout: Layout, run_id: str) -> pa.Table:
    """Every id the run's undo record holds (unique: an id is recorded once)."""
    return read_parts(storage, join(undo_dir(layout, run_id), "touched"), TOUCHED_SCHEMA)


def record_before(storage: Storage, layout: Layout, run_id: str, collection: str, vector_store: StoreTarget,
                  text_store: StoreTarget, ids: Iterable[str], live_hashes: Mapping[str, str],
                  live_files: Mapping[str, str] | None) -> int:
    """Record ``ids`` before the run overwrites or deletes them: the live ones are exported from both
    stores with their manifest lines, the others recorded as absent (the run adds them). Ids already
    recorded are skipped. Returns how many were recorded now."""
    if read_record(storage, layout, run_id) is None:
        storage.write_json(_record_path(layout, run_id), {"run_id": run_id, "collection": collection,
                                                          "status": "recorded", "created_at": time.time()})
    done = set(touched(storage, layout, run_id).column("id").to_pylist())
    todo = sorted(set(ids) - done)
    if not todo:
        return 0
    base = undo_dir(layout, run_id)
    vectors, text = vector_store(), text_store()
    try:
        for lo in range(0, len(todo), EXPORT_BATCH):
            part = todo[lo:lo + EXPORT_BATCH]
            key = part_key(part, range(len(part)))
            present = [i for i in part if i in live_hashes]
            if present:  # the exports first: a crash before the touched part re-exports the same rows
                storage.write_parquet(join(base, "vectors", f"part-{key}.parquet"),
                                      columns_to_table(vectors.export_rows(collection, present)))
                storage.write_parquet(join(base, "text", f"part-{key}.parquet"),
                                      columns_to_table(text.export_rows(collection, present)))
            t = pa.table({"id": part, "present": [i in live_hashes for i in part],
                          "hash": [live_hashes.get(i) for i in part],
                          "file": [(live_files or {}).get(i) for i in part]}, schema=TOUCHED_SCHEMA)
            storage.write_parquet(join(base, "touched", f"part-{key}.parquet"), t)
    finally:
        vectors.close()
        text.close()
    return len(todo)


# ------------------------------------------------------------------------------------------
# Undoing
# ------------------------------------------------------------------------------------------

def _exports(storage: Storage, directory: str) -> Iterable[Columns]:
    for u in storage.list(directory):
        if u.endswith(".parquet"):
            yield table_to_columns(storage.read_parquet(u))


def read_manifest_lines(storage: Storage, layout: Layout, collection: str) -> pa.Table:
    """A version's hash manifest with its ``file`` column (null where not recorded)."""
    tables = []
    for u in storage.list(layout.hashes_dir(collection)):
        if u.endswith(".parquet"):
            t = storage.read_parquet(u)
            if "file" not in t.column_names:
                t = t.append_column("file", pa.nulls(t.num_rows, pa.string()))
            tables.append(t.select(schema.HASH_FILE_SCHEMA.names).cast(schema.HASH_FILE_SCHEMA))
    return pa.concat_tables(tables) if tables else schema.HASH_FILE_SCHEMA.empty_table()


def apply(storage: Storage, layout: Layout, run_id: str, vector_store: StoreTarget,
          text_store: StoreTarget) -> dict[str, int]:
    """Undo the run: delete what it added, write back what it overwrote or deleted, restore the hash
    manifest's lines. Idempotent (applying it twice gives the same state). Returns what it did."""
    rec = read_record(storage, layout, run_id)
    if rec is None:
        raise RuntimeError(f"run {run_id} has no undo record")
    collection = rec["collection"]
    t = touched(storage, layout, run_id)
    ids, present = t.column("id").to_pylist(), t.column("present").to_pylist()
    added = sorted(i for i, p in zip(ids, present) if not p)
    restored = 0
    base = undo_dir(layout, run_id)
    vectors, text = vector_store(), text_store()
    try:
        for lo in range(0, len(added), EXPORT_BATCH):
            vectors.delete(collection, added[lo:lo + EXPORT_BATCH])
            text.delete(collection, added[lo:lo + EXPORT_BATCH])
        for store, sub in ((vectors, "vectors"), (text, "text")):
            for batch in _exports(storage, join(base, sub)):
                if len(batch[schema.ID]):
                    res = store.upsert(collection, batch)
                    if res.rejects:
                        raise RuntimeError(f"undo of run {run_id}: the {sub} store refused {len(res.rejects)} "
                                           f"chunks it held before (e.g. {res.rejects[0]})")
                    restored += len(batch[schema.ID]) if sub == "vectors" else 0
        vectors.finalize(collection)
        text.finalize(collection)
    finally:
        vectors.close()
        text.close()
    lines = read_manifest_lines(storage, layout, collection)
    gone = set(ids)
    keep = lines.filter(pa.array([i not in gone for i in lines.column("id").to_pylist()], pa.bool_()))
    before = t.filter(pa.array(present, pa.bool_())).select(["id", "hash", "file"]).cast(schema.HASH_FILE_SCHEMA)
    records.write_hashes(storage, layout, collection, pa.concat_tables([keep, before]))
    storage.write_json(_record_path(layout, run_id), {**rec, "status": "undone", "undone_at": time.time()})
    log.info("undid run %s on %s: %d added chunks deleted, %d chunks restored", run_id, collection, len(added),
             restored)
    return {"deleted": len(added), "restored": restored}


def prune(storage: Storage, layout: Layout, run_ids: Sequence[str], keep: int) -> list[str]:
    """Keep the undo records of the newest ``keep`` of ``run_ids`` (oldest first); drop the others'."""
    with_record = [r for r in run_ids if read_record(storage, layout, r) is not None]
    dropped = with_record[:-keep] if keep else with_record
    for r in dropped:
        storage.delete_prefix(undo_dir(layout, r))
    return dropped
