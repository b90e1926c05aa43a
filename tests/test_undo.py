"""Every incremental run can be undone: ``indexer rollback`` after a run with 50 changed, 50 removed and
50 new chunks restores exactly the state before it (ids, texts, vectors, hash manifest), and an
incremental run whose gate fails is rolled back automatically."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from indexer.config import load_config
from indexer.layout import Layout, read_version
from indexer.run.pipeline import RunFailed, run
from indexer.run.publish import rollback
from indexer.run.undo import read_manifest_lines
from indexer.schema import VectorSpec
from indexer.storage import Storage
from indexer.stores.base import StoreTarget
from indexer.stores.factory import text_store_factory, vector_store_factory
from tests.conftest import ROOT, sample_docs, write_parquet
from tests.test_store_export import same_columns

pytestmark = pytest.mark.usefixtures("ray_local")


def _cfg(tmp: Path):
    return load_config(ROOT / "configs" / "local.yaml",
                       [f"corpus.path={tmp / 'corpus'}", "corpus.sample=false", f"index.dir={tmp / 'index'}",
                        "encode.block_rows=50", "dense.dim=128", "sparse.kind=bm25"])


def _write(tmp: Path, rows: list[dict]) -> None:
    write_parquet(tmp / "corpus" / "part.parquet", rows, row_group_size=100)


def snapshot(cfg) -> dict:
    """Everything the live version holds, read back from the stores and the hash manifest."""
    storage, layout = Storage(), Layout(cfg.index.dir)
    vstore = vector_store_factory(cfg)()
    live = vstore.get_alias(cfg.index.name)
    vstore.close()
    lines = read_manifest_lines(storage, layout, live)
    ids = sorted(lines.column("id").to_pylist())
    vectors = vector_store_factory(cfg, VectorSpec.from_version(read_version(storage, layout, live)))()
    text = text_store_factory(cfg)()
    try:
        assert vectors.count(live) == text.count(live) == len(ids)
        return {"live": live, "manifest": sorted(zip(*[lines.column(c).to_pylist() for c in ("id", "hash", "file")])),
                "vectors": vectors.export_rows(live, ids), "text": text.export_rows(live, ids)}
    finally:
        vectors.close()
        text.close()


def assert_same_state(a: dict, b: dict) -> None:
    assert a["live"] == b["live"] and a["manifest"] == b["manifest"]
    for store in ("vectors", "text"):
        same_columns(a[store], b[store])


def _changed_corpus(rows: list[dict]) -> tuple[list[dict], dict]:
    """50 changed, 50 removed, 50 new, from 200 rows."""
    changed = [{**r, "text": r["text"] + " (revised)"} for r in rows[:50]]
    new = [{"id": f"new.{i}", "title": "brand new", "text": f"freshly added chunk number {i} about zebras",
            "module": "new"} for i in range(50)]
    return changed + rows[50:150] + new, {"removed": [r["id"] for r in rows[150:]]}


def test_rollback_restores_the_state_before_an_incremental_run(tmp_path):
    rows = sample_docs(200, 160)
    _write(tmp_path, rows)
    cfg = _cfg(tmp_path)
    m1 = run(cfg)
    assert m1["counts"]["indexed"] == 200
    before = snapshot(cfg)

    now, _ = _changed_corpus(rows)
    _write(tmp_path, now)
    m2 = run(cfg, allow_deletes=True)
    c = m2["counts"]
    assert (m2["mode"], c["changed"], c["deleted"], c["new"], c["indexed"]) == ("incremental", 50, 50, 50, 200)
    assert m2["stages"]["undo_record"]["rows"] == 150  # the change, not the corpus
    after = snapshot(cfg)
    assert after["manifest"] != before["manifest"]

    r = rollback(cfg)
    assert r["undone_run"] == m2["run_id"] and (r["deleted"], r["restored"]) == (50, 100)
    assert_same_state(snapshot(cfg), before)

    _write(tmp_path, rows)
    m3 = run(cfg)
    c = m3["counts"]
    assert m3["status"] == "succeeded" and (c["unchanged"], c["encoded"], c["deleted"], c["new"]) == (200, 0, 0, 0)
    # The run undone is not undone twice: the next rollback undoes the run after it (m3 changed nothing).
    assert rollback(cfg)["undone_run"] == m3["run_id"]
    assert_same_state(snapshot(cfg), before)


class MiscountingStore:
    """Wraps a real store; writes and deletes go through, but its count is one too many: the gate's counts
    check fails while the data written (and the rollback's writes) are real."""

    single_writer = True

    def __init__(self, inner_factory):
        self.inner = inner_factory()

    def count(self, collection):
        return self.inner.count(collection) + 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture()
def by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_failed_gate_on_an_incremental_run_is_rolled_back(tmp_path, by_value):
    rows = sample_docs(200, 160)
    _write(tmp_path, rows)
    cfg = _cfg(tmp_path)
    run(cfg)
    before = snapshot(cfg)

    now, _ = _changed_corpus(rows)
    _write(tmp_path, now)
    spec = VectorSpec.from_version(read_version(Storage(), Layout(cfg.index.dir), before["live"]))
    text = StoreTarget(functools.partial(MiscountingStore, text_store_factory(cfg)), True)
    with pytest.raises(RunFailed) as e:
        run(cfg, allow_deletes=True, store_factories=(vector_store_factory(cfg, spec), text))
    m = e.value.manifest
    assert m["status"] == "failed" and m["rolled_back"] and any(f.startswith("counts:") for f in m["failures"])
    assert (m["rollback"]["deleted"], m["rollback"]["restored"]) == (50, 100)
    assert_same_state(snapshot(cfg), before)

    # Nothing is left for a later run to trip on: the same change without the fault succeeds.
    m2 = run(cfg, allow_deletes=True)
    c = m2["counts"]
    assert m2["status"] == "succeeded" and (c["changed"], c["deleted"], c["new"], c["indexed"]) == (50, 50, 50, 200)
