"""Read stage: fragment descriptors -> rows of the row contract, then validated.

The driver plans fragments (:func:`indexer.sources.parquet.plan_corpus`); each Ray task reads one
row group (:func:`indexer.sources.parquet.read_fragment`), so reading scales with the cluster and
a failed task re-reads only its row group.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from ..config import CorpusConfig
from ..sources.parquet import Fragment, read_fragment
from ..storage import Storage
from .base import Stage
from .stats import StageReporter
from .validate import Validate


class ReadFragments(Stage):
    """Pipeline stage (CPU tasks): a batch of fragment descriptors -> their rows (row contract)."""

    name = "read"
    batch_size = 1

    def __init__(self, cfg: CorpusConfig, reporter: StageReporter | None = None):
        super().__init__(reporter)
        self.cfg = cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for desc in batch["fragment"]:
            frag = Fragment(**json.loads(desc))
            with self.reporter.measure(self.name, frag.num_rows):
                parts.append(read_fragment(frag, self.cfg))
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fragment_items(fragments: list[Fragment]) -> list[dict[str, str]]:
    """One Ray Data item per fragment: its descriptor as JSON (what :class:`ReadFragments` reads)."""
    return [{"fragment": json.dumps(asdict(f))} for f in fragments]


def rows_dataset(fragments: list[Fragment], corpus_cfg: CorpusConfig, rejects_dir: str | None, storage: Storage,
                 reporter: StageReporter, task_cpus: float = 1.0) -> Any:
    """A Ray Dataset of the fragments' valid rows: one read task per fragment, then validation
    (rejects written under ``rejects_dir``; None writes none). Tasks take ``task_cpus`` CPU slots."""
    import ray

    ds = ray.data.from_items(fragment_items(fragments), override_num_blocks=max(1, len(fragments)))
    ds = ReadFragments(corpus_cfg, reporter).apply(ds, num_cpus=task_cpus)
    return Validate(rejects_dir, storage, reporter).apply(ds, num_cpus=task_cpus)
