"""Row validation: every row is either passed on or written to the rejects output with a reason.

The rules themselves (:func:`indexer.sources.parquet.row_reason`) live with the reader, so the
stage, the calibration sample and the estimate all test rows the same way.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .. import schema
from ..ids import content_hash, point_id
from ..sources.parquet import row_reason
from ..storage import Storage, join
from .base import Stage
from .stats import StageReporter


def rejects_table(ids, files, rows, reasons) -> pa.Table:
    """Rows of the rejects output (id, file, row, reason)."""
    return pa.Table.from_arrays(
        [pa.array(list(ids), pa.string()), pa.array(list(files), pa.string()),
         pa.array(list(rows), pa.int64()), pa.array(list(reasons), pa.string())],
        schema=schema.REJECTS_SCHEMA,
    )


class Validate(Stage):
    """Pipeline stage: split a batch into valid rows (returned, with hash and point id) and rejects
    (written as a Parquet part under ``rejects_dir``; parts are merged at the end of the run)."""

    name = "validate"

    def __init__(self, rejects_dir: str | None, storage: Storage, reporter: StageReporter | None = None):
        super().__init__(reporter)
        self.rejects_dir = rejects_dir
        self.storage = storage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            reasons = [
                pre or row_reason(i, t, d)
                for pre, i, t, d in zip(batch[schema.REJECT_REASON], batch[schema.ID], batch[schema.TEXT],
                                        batch[schema.DUPLICATE])
            ]
            bad = np.array([bool(r) for r in reasons], dtype=bool)
            if bad.any() and self.rejects_dir is not None:
                self._write_rejects(batch, bad, reasons)
            good = ~bad
            out = {k: v[good] for k, v in batch.items() if k not in (schema.REJECT_REASON, schema.DUPLICATE)}
            out[schema.HASH] = np.array(
                [content_hash(t, ti, m) for t, ti, m in zip(out[schema.TEXT], out[schema.TITLE], out[schema.METADATA])],
                dtype=object,
            )
            out[schema.POINT_ID] = np.array([point_id(i) for i in out[schema.ID]], dtype=object)
            extra["rejected"] = int(bad.sum())
        return out

    def _write_rejects(self, batch, bad: np.ndarray, reasons: list[str]) -> None:
        files = batch[schema.FILE][bad]
        rows = batch[schema.ROW][bad]
        key = hashlib.blake2b("|".join(f"{f}:{r}" for f, r in zip(files, rows)).encode(), digest_size=12).hexdigest()
        table = rejects_table(batch[schema.ID][bad], files, rows, [r for r, b in zip(reasons, bad) if b])
        self.storage.write_parquet(join(self.rejects_dir, f"part-{key}.parquet"), table)
