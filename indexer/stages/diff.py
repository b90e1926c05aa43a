"""Diff stage: compare each valid row's content hash with the live version's (id, hash) manifest.

New and changed rows go on to be encoded; unchanged rows stop here. Every valid row is recorded
(file, row, id, hash, state) so the run can count, resume, and write the new hash manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .. import schema
from ..schema import CHANGED, NEW, ROWS_SCHEMA, UNCHANGED
from ..storage import Storage, write_part
from .base import Stage
from .stats import StageReporter

_LIVE_CACHE: dict[str, dict[str, str]] = {}


def live_hashes(live_ref: Any) -> dict[str, str] | None:
    """The live {id: hash} map behind a Ray ObjectRef (None for a full build), fetched once per worker process."""
    if live_ref is None:
        return None
    key = live_ref.hex()
    if key not in _LIVE_CACHE:
        import ray

        _LIVE_CACHE.clear()
        _LIVE_CACHE[key] = ray.get(live_ref)
    return _LIVE_CACHE[key]


def diff_states(ids, hashes, live: dict[str, str] | None) -> list[str]:
    """'new' / 'changed' / 'unchanged' per row against the live manifest (None = everything is new)."""
    if not live:
        return [NEW] * len(ids)
    out = []
    for i, h in zip(ids, hashes):
        old = live.get(i)
        out.append(NEW if old is None else UNCHANGED if old == h else CHANGED)
    return out


class Diff(Stage):
    """Pipeline stage: drop unchanged rows, record every valid row's state."""

    name = "diff"

    def __init__(self, live_ref: Any, rows_dir: str | None, storage: Storage, reporter: StageReporter | None = None):
        super().__init__(reporter)
        self.live_ref = live_ref  # Ray ObjectRef of {id: hash}, or None for a full build
        self.rows_dir = rows_dir
        self.storage = storage

    def _live(self) -> dict[str, str] | None:
        return live_hashes(self.live_ref)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            states = diff_states(batch[schema.ID], batch[schema.HASH], self._live())
            if self.rows_dir is not None and n:
                table = pa.Table.from_arrays(
                    [pa.array(list(batch[schema.FILE]), pa.string()), pa.array(batch[schema.ROW], pa.int64()),
                     pa.array(list(batch[schema.ID]), pa.string()), pa.array(list(batch[schema.HASH]), pa.string()),
                     pa.array(states, pa.string())], schema=ROWS_SCHEMA)
                write_part(self.storage, self.rows_dir, table)
            keep = np.array([s != UNCHANGED for s in states], dtype=bool)
            extra["unchanged"] = int((~keep).sum())
            extra["changed"] = int(sum(s == CHANGED for s in states))
        return {k: v[keep] for k, v in batch.items()}
