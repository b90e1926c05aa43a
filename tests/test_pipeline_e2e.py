"""End to end on real Ray, the packaged model and the embedded engines: counts, rejects, top hits,
incremental re-runs, rollback."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.config import load_config
from indexer.run.pipeline import run
from indexer.run.publish import rollback
from indexer.search import Searcher
from tests.conftest import sample_docs, write_parquet

pytestmark = pytest.mark.usefixtures("ray_local")


def _docs(n: int) -> list[dict]:
    return sample_docs(n, 600)


def _cfg(tmp_path, corpus, *extra):
    return load_config("configs/local.yaml", [f"corpus.path={corpus}", "corpus.sample=false",
                                              f"index.dir={tmp_path / 'index'}", "encode.block_rows=64", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    docs = _docs(120)
    write_parquet(tmp / "corpus" / "a.parquet", docs[:100], row_group_size=40)
    bad = [
        {"id": "bad.empty", "title": "t", "text": "", "module": "x"},
        {"id": None, "title": "t", "text": "no id", "module": "x"},
        {"id": docs[0]["id"], "title": "dup", "text": "duplicate of the first id", "module": "x"},
        *docs[100:120],
    ]
    write_parquet(tmp / "corpus" / "b.parquet", bad)
    (tmp / "corpus" / "c.parquet").write_bytes(b"PAR1 broken")
    cfg = _cfg(tmp, tmp / "corpus")
    manifest = run(cfg)
    return tmp, cfg, docs, manifest


def test_counts_reconcile_and_manifest_written(built):
    tmp, cfg, docs, m = built
    c = m["counts"]
    assert c["input"] == 100 + 23 + 1
    assert c["rejected"] == 4 and c["indexed"] == 120 and c["encoded"] == 120
    assert c["input"] == c["indexed"] + c["rejected"]
    assert m["status"] == "succeeded" and m["alias_moved"] and m["mode"] == "full"
    on_disk = json.loads((tmp / "index" / "runs" / m["run_id"] / "manifest.json").read_text())
    assert on_disk["counts"] == c
    for stage in ("read", "validate", "tokenize", "encode", "write"):
        assert m["stages"][stage]["rows"] > 0 and m["stages"][stage]["seconds"] > 0
        assert m["stages"][stage]["nodes"]
    assert m["dense"]["dim"] == 384 and m["model"]["dim"] == 384


def test_rejects_file_names_file_row_reason(built):
    tmp, cfg, docs, m = built
    rej = pq.read_table(m["rejects_path"]).to_pylist()
    by_reason = {r["reason"].split(" (")[0].split(":")[0]: r for r in rej}
    assert by_reason["text is empty or whitespace-only"]["id"] == "bad.empty"
    assert by_reason["text is empty or whitespace-only"]["row"] == 0
    assert by_reason["id is null"]["row"] == 1
    assert by_reason["duplicate id"]["id"] == docs[0]["id"] and by_reason["duplicate id"]["file"].endswith("b.parquet")
    assert by_reason["unreadable Parquet file"]["file"].endswith("c.parquet")


@pytest.mark.parametrize("mode", ["dense", "sparse", "bm25", "hybrid"])
def test_top_hit_per_mode(built, mode):
    tmp, cfg, docs, m = built
    s = Searcher(cfg)
    try:
        target = docs[7]
        hits = s.search(target["text"][:200], mode=mode, k=5)
    finally:
        s.close()
    assert hits and hits[0].id == target["id"]
    assert hits[0].payload["text"].startswith(target["text"][:50])


def test_incremental_rerun_and_rollback(built):
    tmp, cfg, docs, m1 = built
    m2 = run(cfg)
    assert m2["mode"] == "incremental"
    assert m2["counts"]["encoded"] == 0 and m2["counts"]["unchanged"] == 120 and m2["counts"]["deleted"] == 0
    assert m2["counts"]["indexed"] == 120 and not m2["alias_moved"]
    m3 = run(cfg, full=True)
    assert m3["mode"] == "full" and m3["alias_moved"] and m3["versions"]["before"] == m1["versions"]["built"]
    r = rollback(cfg)
    assert r["to"] == m1["versions"]["built"]
