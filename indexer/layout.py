"""Where a run leaves its records under ``index.dir``, and how they are read back.

```
index.dir/
  runs/<run_id>/manifest.json      run manifest (config, model, counts, stages, versions)
  runs/<run_id>/rejects.parquet    rows not indexed, with a reason (id, file, row, reason)
  runs/<run_id>/rejects/part-*.parquet   per-batch parts, merged into rejects.parquet
  versions/<collection>.json       encoding settings of a version (model, dim, quantization, calibration)
  versions/<collection>/hashes/    (id, hash) of every chunk in the version, Parquet
  vectors/<collection>/            embedded vector store shard (edge)
  text/<collection>/               embedded BM25 index (tantivy)
```
``index.dir`` may be an ``s3://`` URI; the embedded stores' directories then live under the local
``index.store_dir`` instead (the run records stay in S3).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass
from typing import Any

from .storage import Storage, join


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Layout:
    """Paths of everything a run reads and writes under ``index.dir``."""

    root: str

    @property
    def runs(self) -> str:
        return join(self.root, "runs")

    def run_dir(self, run_id: str) -> str:
        return join(self.root, "runs", run_id)

    def run_manifest(self, run_id: str) -> str:
        return join(self.run_dir(run_id), "manifest.json")

    def rejects(self, run_id: str) -> str:
        return join(self.run_dir(run_id), "rejects.parquet")

    def rejects_parts(self, run_id: str) -> str:
        return join(self.run_dir(run_id), "rejects")

    def version_manifest(self, collection: str) -> str:
        return join(self.root, "versions", f"{collection}.json")

    def hashes_dir(self, collection: str) -> str:
        return join(self.root, "versions", collection, "hashes")

    @property
    def vectors_root(self) -> str:
        return join(self.root, "vectors")

    @property
    def text_root(self) -> str:
        return join(self.root, "text")

    @property
    def qdrant_local_root(self) -> str:
        return join(self.root, "qdrant_local")


def version_name(index_name: str, n: int) -> str:
    return f"{index_name}_v{n}"


def version_number(collection: str) -> int:
    try:
        return int(collection.rsplit("_v", 1)[1])
    except (IndexError, ValueError):
        return -1


def list_runs(storage: Storage, layout: Layout) -> list[str]:
    """Run ids with a manifest, oldest first."""
    runs = set()
    for uri in storage.list(layout.runs):
        parts = uri.replace("\\", "/").split("/")
        if parts[-1] == "manifest.json":
            runs.add(parts[-2])
    return sorted(runs)


def latest_manifest(storage: Storage, layout: Layout) -> dict[str, Any] | None:
    runs = list_runs(storage, layout)
    return storage.read_json(layout.run_manifest(runs[-1])) if runs else None


def read_version(storage: Storage, layout: Layout, collection: str) -> dict[str, Any]:
    uri = layout.version_manifest(collection)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no version manifest for {collection} at {uri}: was the index built by indexer?")
    return storage.read_json(uri)
