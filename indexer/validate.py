"""Row validation: every row is either passed on or written to the rejects output with a reason.

Rules (first match wins): undecodable / non-string id or text (set while reading), null id, empty
id, null text, empty or whitespace-only text, duplicate id (a row earlier in file order has the same
id). Too-long text is *not* a reject: it is encoded truncated and counted as ``truncated``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from . import schema
from .ids import content_hash, point_id
from .stats import StageReporter
from .storage import Storage, join


def row_reason(id_value: str | None, text: str | None, duplicate: bool) -> str:
    """The reject reason for one row, or '' when the row is valid."""
    if id_value is None:
        return "id is null"
    if not id_value.strip():
        return "id is empty"
    if text is None:
        return "text is null"
    if not text.strip():
        return "text is empty or whitespace-only"
    if duplicate:
        return "duplicate id (an earlier row has the same id)"
    return ""


def rejects_table(ids, files, rows, reasons) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(list(ids), pa.string()), pa.array(list(files), pa.string()),
         pa.array(list(rows), pa.int64()), pa.array(list(reasons), pa.string())],
        schema=schema.REJECTS_SCHEMA,
    )


class Validate:
    """Pipeline stage: split a batch into valid rows (returned, with hash and point id) and rejects
    (written as a Parquet part under ``rejects_dir``; parts are merged at the end of the run)."""

    name = "validate"

    def __init__(self, rejects_dir: str | None, storage: Storage, reporter: StageReporter | None = None):
        self.rejects_dir = rejects_dir
        self.storage = storage
        self.reporter = reporter or StageReporter()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            reasons = [
                pre or row_reason(i, t, bool(d))
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
