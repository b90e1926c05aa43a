"""Eval sweeps: flag parsing, the in-memory search that mirrors the vector store (calibration,
binary rescoring), and a sweep end to end on a tiny indexed corpus producing JSON, markdown and PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.config import FusionKind
from indexer.quantize import asymmetric_scores, calibrate, quantize_scalar, truncate_normalize
from indexer.search import Settings
from indexer.sweep import SweepError, parse_sweep
from indexer.sweep.axes import DenseSetting, dense_settings, fusion_settings
from indexer.sweep.memory import MemoryDenseIndex


def test_parse_sweep_types_and_errors():
    axes = parse_sweep(["dims=384,256", "quantization=none,binary+int8", "fusion=rrf,dbsf", "rrf_k=10",
                        "hybrid=dense+bm25,dense+sparse+bm25", "w_bm25=0.5", "dims=256,128"])
    assert axes["dims"] == [384, 256, 128]
    assert axes["quantization"] == ["none", "binary+int8"]
    assert axes["fusion"] == [FusionKind.rrf, FusionKind.dbsf]
    assert axes["hybrid"] == [("dense", "bm25"), ("dense", "sparse", "bm25")]
    assert axes["w_bm25"] == [0.5] and axes["rrf_k"] == [10]
    for bad, msg in [("dimz=1", "unknown axis"), ("dims", "axis=v1"), ("quantization=int4", "quantization must"),
                     ("hybrid=dense+colbert", "hybrid takes"), ("oversample=0.5", "out of range")]:
        with pytest.raises(SweepError, match=msg):
            parse_sweep([bad])


def test_settings_grids():
    ds = dense_settings(parse_sweep(["dims=64,32", "quantization=none,int8,binary", "oversample=2,4"]),
                        64, "none", 4.0, full_dim=64)
    # oversampling only multiplies settings that rescore
    assert [s.label for s in ds] == ["64/none", "64/int8 x2", "64/int8 x4", "64/binary", "32/none", "32/int8 x2",
                                     "32/int8 x4", "32/binary"]
    with pytest.raises(SweepError, match="exceed"):
        dense_settings({"dims": [128]}, 64, "none", 4.0, full_dim=64)
    base = Settings()
    fs = fusion_settings(parse_sweep(["fusion=rrf,weighted_rrf", "w_bm25=0.5,1"]), base)
    # plain RRF ignores weights: one row, not one per weight
    assert [(s.fusion.value, s.weights["bm25"]) for s in fs] == [("rrf", 1.0), ("weighted_rrf", 0.5),
                                                                 ("weighted_rrf", 1.0)]


def test_bytes_per_vector_of_settings():
    assert DenseSetting(384, "none").bytes_stored() == 1536
    assert DenseSetting(256, "int8", 4).bytes_stored() == 256
    assert DenseSetting(384, "binary").bytes_stored() == 48
    assert DenseSetting(384, "binary+int8", 4).bytes_stored() == 48 + 384
    assert DenseSetting(384, "binary+int8", 4).bytes_ram() == 48
    assert DenseSetting(384, "binary+float", 4).bytes_stored() == 48 + 1536


def _vectors(n=400, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    return truncate_normalize(base, None), rng


def test_int8_search_uses_the_corpus_calibration_for_queries():
    docs, rng = _vectors()
    mem = MemoryDenseIndex(docs, DenseSetting(64, "int8", 4.0), calibration_sample=100)
    expected = calibrate(truncate_normalize(docs, 64)[:100], "int8", 0.999)
    assert mem.calibration.to_json() == expected.to_json()
    q = docs[7] + 0.05 * rng.normal(size=64).astype(np.float32)
    idx, scores = mem.search(q, 5)
    assert idx[0] == 7
    qn = truncate_normalize(q[None], None)[0]
    # rescored scores are the asymmetric float-query x dequantized-code products
    want = asymmetric_scores(qn, quantize_scalar(docs[idx], expected), expected)
    assert scores == pytest.approx(want, abs=1e-5)


def test_binary_rescoring_recovers_float_ranking():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(8, 64)).astype(np.float32)  # clustered like real embeddings, not isotropic
    docs = truncate_normalize(rng.normal(size=(2000, 8)).astype(np.float32) @ basis
                              + 0.5 * rng.normal(size=(2000, 64)).astype(np.float32), None)
    queries = truncate_normalize(docs[:50] + 0.1 * rng.normal(size=(50, 64)).astype(np.float32), None)
    exact = MemoryDenseIndex(docs, DenseSetting(64, "none"))
    plain = MemoryDenseIndex(docs, DenseSetting(64, "binary"))
    rescored = MemoryDenseIndex(docs, DenseSetting(64, "binary+int8", 8.0))
    floated = MemoryDenseIndex(docs, DenseSetting(64, "binary+float", 8.0))

    def overlap(m):
        return np.mean([len(set(m.search(q, 10)[0]) & set(exact.search(q, 10)[0])) / 10 for q in queries])

    assert overlap(rescored) > overlap(plain) + 0.3
    assert overlap(floated) >= overlap(rescored) - 0.03 and overlap(floated) > 0.8
    idx, scores = plain.search(queries[0], 10)
    assert (scores <= 0).all()  # plain binary: negated sqrt(Hamming), as the vector store scores bits
    idx, scores = floated.search(queries[0], 10)
    assert scores == pytest.approx(docs[idx] @ queries[0], abs=1e-5)
    assert list(scores) == sorted(scores, reverse=True)


def test_truncation_renormalises_before_quantizing():
    docs, _ = _vectors(n=50, dim=64)
    mem = MemoryDenseIndex(docs, DenseSetting(32, "none"))
    assert np.linalg.norm(mem.float, axis=1) == pytest.approx(np.ones(50), abs=1e-5)
    assert mem.float.shape == (50, 32)


# -- end to end on a tiny indexed corpus --------------------------------------------------------

DOCS = [
    ("d1", "Parsing JSON", "json.loads parses a JSON document into Python dicts and lists."),
    ("d2", "Subprocesses", "subprocess.run starts a child process and waits for it to finish."),
    ("d3", "SQLite", "sqlite3 cursors execute SQL statements against a database file."),
    ("d4", "Regular expressions", "re.compile builds a pattern object for matching text."),
    ("d5", "Dates", "datetime objects represent a date and a time of day."),
    ("d6", "Paths", "pathlib.Path joins, resolves and globs filesystem paths."),
]
QUERIES = {"q1": "read a json file into a dict", "q2": "start a child process", "q3": "run sql on a database",
           "q4": "match text with a pattern"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, ray_local):
    from indexer.config import load_config
    from indexer.run.pipeline import run
    from tests.conftest import write_parquet

    tmp = tmp_path_factory.mktemp("sweep")
    write_parquet(tmp / "corpus.parquet", [{"id": i, "title": t, "text": x} for i, t, x in DOCS])
    cfg = load_config("configs/local.yaml", [f"corpus.path={tmp / 'corpus.parquet'}", "corpus.sample=false",
                                             f"index.dir={tmp / 'index'}", "encode.block_rows=64"])
    run(cfg)
    return tmp, cfg


def test_sweep_writes_json_markdown_png(tiny_index):
    from indexer.search import Searcher
    from indexer.sweep import run_sweep, write_outputs

    tmp, cfg = tiny_index
    s = Searcher(cfg)
    try:
        axes = parse_sweep(["dims=384,128", "quantization=none,int8,binary,binary+int8", "fusion=rrf,dbsf,minmax"])
        res = run_sweep(s, QUERIES, QRELS, axes, k=10)
    finally:
        s.close()
    assert res["vectors_from"] == "index" and res["documents"] == len(DOCS) and res["queries"] == 4
    rows = res["rows"]
    assert {r["mode"] for r in rows} == {"dense", "hybrid", "sparse", "bm25"}
    assert len([r for r in rows if r["mode"] == "dense"]) == 8
    assert len([r for r in rows if r["mode"] == "hybrid"]) == 8 * 3
    ref = next(r for r in rows if r["mode"] == "dense" and r["dim"] == 384 and r["quantization"] == "none")
    assert ref["retained"] == 1.0 and ref["bytes_per_vector"] == 1536
    assert ref["ndcg@10"] > 0.8  # the packaged MiniLM finds these
    for r in rows:
        assert 0 <= r["ndcg@10"] <= 1 and r["latency_ms_p95"] >= r["latency_ms_p50"] >= 0
    paths = write_outputs(res, tmp / "out")
    assert json.loads(open(paths["json"]).read())["rows"] == json.loads(json.dumps(rows, default=str))
    md = open(paths["md"]).read()
    assert "| mode | dim | quantization |" in md and "binary+int8" in md
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_sweep(tiny_index):
    from typer.testing import CliRunner

    from indexer.cli import app

    tmp, cfg = tiny_index
    q = tmp / "queries.jsonl"
    q.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    r = tmp / "qrels.tsv"
    r.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{k}\t{d}\t1\n" for k, v in QRELS.items() for d in v))
    res = CliRunner().invoke(app, ["eval", "configs/local.yaml", "--set", f"corpus.path={tmp / 'corpus.parquet'}",
                                   "--set", "corpus.sample=false", "--set", f"index.dir={tmp / 'index'}",
                                   "--queries", str(q), "--qrels", str(r), "--sweep", "dims=384,256",
                                   "--sweep", "quantization=int8", "--out", str(tmp / "cli"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(x["dim"], x["quantization"]) for x in out["rows"] if x["mode"] == "dense"] == [(384, "int8"),
                                                                                          (256, "int8")]
    assert (tmp / "cli" / "sweep.png").exists()
    bad = CliRunner().invoke(app, ["eval", "configs/local.yaml", "--queries", str(q), "--qrels", str(r),
                                   "--sweep", "dims=abc"])
    assert bad.exit_code == 2
