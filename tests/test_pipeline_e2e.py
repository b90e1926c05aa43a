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
    cfg = _cfg(tmp, tmp / "corpus", "ray.block_mb=0.05")
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


def test_hybrid_fallback_skips_bm25_when_its_query_analysis_is_empty(built):
    """Emoji are [UNK] to the model (coverage 0) and no term to the analyzer: the coverage fallback
    used to hand the query to BM25 alone, which answered nothing; now the other modes answer."""
    tmp, cfg, docs, m = built
    s = Searcher(cfg)
    try:
        q = s.encode(["🙂🙂 ✨"])[0]
        assert q.coverage < s.settings.min_coverage and q.empty == {"bm25", "sparse"}  # [UNK] is no sparse term
        assert s.search("🙂🙂 ✨", mode="bm25", k=5) == []
        assert len(s.search("🙂🙂 ✨", mode="hybrid", k=5)) == 5
    finally:
        s.close()


def _encoder_processes() -> list[int]:
    import psutil

    return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
            if "MapBatches(Encode)" in " ".join(p.info.get("cmdline") or [])]


def _no_model_weights(monkeypatch) -> None:
    """Loading the dense model on this process fails the test."""
    from indexer.encoders import dense

    def refuse(*a, **k):
        raise AssertionError("model weights loaded")

    monkeypatch.setattr(dense.DenseModel, "__init__", refuse)


def test_search_edges_without_model_and_eval_warning(built, monkeypatch):
    """A --k above the fused candidate pool still gets k hits; BM25 search loads no model; eval
    counts and warns about judged documents the index lacks."""
    tmp, cfg, docs, m = built
    from indexer.config import load_config
    from typer.testing import CliRunner

    from indexer.cli import app

    small_pool = load_config("configs/local.yaml", [f"corpus.path={tmp / 'corpus'}", "corpus.sample=false",
                                                    f"index.dir={tmp / 'index'}", "search.candidates=5"])
    s = Searcher(small_pool)
    try:
        assert len(s.search("a python module", mode="hybrid", k=20)) == 20
    finally:
        s.close()

    with monkeypatch.context() as mp:
        _no_model_weights(mp)
        s = Searcher(cfg)
        try:
            hits = s.search(docs[7]["text"][:200], mode="bm25", k=3)
        finally:
            s.close()
        assert hits[0].id == docs[7]["id"]

    (tmp / "q.jsonl").write_text(json.dumps({"_id": "q1", "text": docs[3]["text"][:200]}) + "\n")
    (tmp / "qrels.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{docs[3]['id']}\t1\nq1\tnot.in.index\t1\n")
    res = CliRunner().invoke(app, ["eval", "configs/local.yaml", "--queries", str(tmp / "q.jsonl"), "--qrels",
                                   str(tmp / "qrels.tsv"), "--modes", "bm25", "--json",
                                   "--set", f"corpus.path={tmp / 'corpus'}", "--set", f"index.dir={tmp / 'index'}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["judged_not_indexed"] == 1
    assert "1 of 2 documents judged" in res.stderr and "not.in.index" in res.stderr


def test_incremental_rerun_and_rollback(built, monkeypatch):
    tmp, cfg, docs, m1 = built
    # A rerun with nothing to encode starts no encoder actor and loads no model weights.
    import threading
    import time

    deadline = time.time() + 30
    while _encoder_processes() and time.time() < deadline:  # the last run's actors exiting
        time.sleep(0.2)
    seen: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(_encoder_processes())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with monkeypatch.context() as mp:
        _no_model_weights(mp)
        try:
            m2 = run(cfg)
        finally:
            stop.set()
            watcher.join(5)
    assert not seen, f"encoder actors started on a rerun with nothing to encode: {seen}"
    assert m2["mode"] == "incremental"
    assert m2["counts"]["encoded"] == 0 and m2["counts"]["unchanged"] == 120 and m2["counts"]["deleted"] == 0
    assert m2["counts"]["indexed"] == 120 and not m2["alias_moved"]
    m3 = run(cfg, full=True)
    assert m3["mode"] == "full" and m3["alias_moved"] and m3["versions"]["before"] == m1["versions"]["built"]
    r = rollback(cfg)
    assert r["to"] == m1["versions"]["built"]


def test_encoded_rows_reach_the_writer_in_bounded_blocks(built):
    """An actor stage fills one output block across its calls up to Ray Data's target block size (128 MiB
    by default): the encoded rows then reached the writer in one block, after the last encode. With
    ``ray.block_mb`` (0.05 in ``built``) they leave the encoder in blocks of about that size, so the
    writes go on meanwhile."""
    m = built[3]
    write = m["stages"]["write"]
    assert write["blocks"] >= 4, write  # 120 rows of ~2.5 KB in blocks of ~50 KB
    assert write["start"] < m["stages"]["encode"]["end"], (write, m["stages"]["encode"])
