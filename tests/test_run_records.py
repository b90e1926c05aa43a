"""Run records without Ray: the written records of every attempt of a run give its token and
truncation counts, each row once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from indexer import schema
from indexer.layout import Layout
from indexer.run import records
from indexer.run.reconcile import RecordWritten
from indexer.storage import Storage, write_part


def _block(rows: list[int], tokens: list[int], truncated: list[bool]) -> dict[str, np.ndarray]:
    return {schema.FILE: np.array(["a.parquet"] * len(rows), object), schema.ROW: np.array(rows, np.int64),
            schema.N_TOKENS: np.array(tokens, np.int64), schema.TRUNCATED: np.array(truncated, bool)}


def test_tokens_and_truncated_summed_over_attempts_each_row_once(tmp_path):
    storage, layout = Storage(), Layout(str(tmp_path))
    record = RecordWritten(storage, records.written_dir(layout, "r1"))
    record(_block([0, 1], [10, 300], [False, True]))  # first attempt, then the job died
    record(_block([2, 3], [20, 512], [False, True]))  # the resumed attempt
    record(_block([1, 2], [300, 20], [True, False]))  # a retried task writes two rows again
    got = records.load_records(storage, layout, "r1")
    assert got.written == {("a.parquet", r) for r in range(4)}
    assert (got.tokens, got.truncated) == (10 + 300 + 20 + 512, 2)


def test_written_parts_of_an_older_attempt_without_counts_still_load(tmp_path):
    """Parts written before the counts were recorded read as rows with no tokens, never an error."""
    storage, layout = Storage(), Layout(str(tmp_path))
    old = pa.table({"file": pa.array(["a.parquet"], pa.string()), "row": pa.array([0], pa.int64())})
    write_part(storage, records.written_dir(layout, "r1"), old)
    RecordWritten(storage, records.written_dir(layout, "r1"))(_block([1], [7], [False]))
    got = records.load_records(storage, layout, "r1")
    assert got.written == {("a.parquet", 0), ("a.parquet", 1)} and (got.tokens, got.truncated) == (7, 0)
