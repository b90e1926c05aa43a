"""``indexer compare``: pseudo-queries (rule, determinism, files), the Pareto front and the
recommendation, and a comparison end to end with two tiny random models of different dimensions."""

from __future__ import annotations

import json

import pytest

from indexer.compare import CompareError, CompareOptions, make_pseudo_queries, run_compare, split_sentences
from indexer.compare.pseudo import MAX_CHARS, MIN_CHARS
from indexer.compare.report import pareto_front, recommend
from indexer.compare.run import model_dims

TEXT = ("Aspirin lowers the risk of a second heart attack in adults. It is cheap and widely available. "
        "Bleeding is the main side effect reported in trials, e.g. in the large ones. Short one. "
        "Smith et al. found the effect was larger in men than in women over sixty.")


def test_split_sentences_rule():
    s = split_sentences(TEXT)
    assert s[0] == "Aspirin lowers the risk of a second heart attack in adults."
    assert "Bleeding is the main side effect reported in trials, e.g. in the large ones." in s  # "e.g. in" stays
    assert s[-1].startswith("Smith et al. found")  # "et al. found" stays whole
    assert split_sentences("第一句话很长。第二句也不短！") == ["第一句话很长。", "第二句也不短！"]
    assert split_sentences("") == []


def _corpus(n=40):
    ids = [f"doc{i}" for i in range(n)]
    texts = [f"Document {i} talks about topic number {i} in some detail here. "
             f"A second sentence of document {i} mentions its own words. Tiny." for i in range(n)]
    texts[3] = "Only one sentence in this chunk, so it cannot give a query."
    return ids, texts


def test_pseudo_queries_are_seeded_and_take_the_sentence_out():
    ids, texts = _corpus()
    a = make_pseudo_queries(ids, texts, 10, seed=7)
    b = make_pseudo_queries(list(reversed(ids)), list(reversed(texts)), 10, seed=7)  # order of rows is irrelevant
    c = make_pseudo_queries(ids, texts, 10, seed=8)
    assert a.queries == b.queries and a.qrels == b.qrels
    assert a.queries != c.queries
    assert a.eligible_chunks == len(ids) - 1  # doc3 has one sentence only
    assert list(a.queries) == [f"pseudo-{i}" for i in range(1, 11)]
    by_id = dict(zip(ids, texts))
    for qid, q in a.queries.items():
        (doc, grade), = a.qrels[qid].items()
        assert grade == 1 and doc != "doc3"
        assert q in split_sentences(by_id[doc]) and MIN_CHARS <= len(q) <= MAX_CHARS
        assert q not in a.edited[doc] and a.edited[doc]  # taken out, something left
    kept = make_pseudo_queries(ids, texts, 10, seed=7, remove=False)
    assert kept.queries == a.queries and kept.edited == {}
    assert make_pseudo_queries(ids, texts, 500, seed=0).describe()["queries"] == len(ids) - 1
    with pytest.raises(ValueError):
        make_pseudo_queries(ids, texts, 0)


def test_pseudo_queries_write_beir_files(tmp_path):
    from indexer.eval import load_qrels, load_queries

    ids, texts = _corpus()
    pq = make_pseudo_queries(ids, texts, 5, seed=1)
    files = pq.write(tmp_path)
    assert load_queries(files["queries"]) == pq.queries
    assert load_qrels(files["qrels"]) == pq.qrels
    assert (tmp_path / "pseudo_qrels.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"


def _row(model, dim, q, ndcg, cost, nbytes, p50=1.0):
    return {"model": model, "dim": dim, "quantization": q, "mode": "dense", "ndcg@10": ndcg, "cost_usd": cost,
            "encode_hours": cost, "bytes_per_vector": nbytes, "p50_ms": p50}


def test_pareto_front_and_recommendation():
    rows = [_row("big", 768, "none", 0.70, 10.0, 3072), _row("big", 768, "int8", 0.695, 10.0, 768),
            _row("small", 384, "none", 0.66, 1.0, 1536), _row("small", 384, "int8", 0.655, 1.0, 384),
            _row("small", 128, "binary", 0.50, 1.0, 16)]
    assert pareto_front(rows, "cost_usd", "ndcg@10") == [2, 0]
    assert pareto_front(rows, "bytes_per_vector", "ndcg@10") == [4, 3, 1, 0]
    result = {"rows": rows, "k": 10}
    # within 0.01 of the best only the big model qualifies; its cheapest form is int8
    rec = recommend(result, 0.01)
    assert rec["row"] == 1 and rec["best_row"] == 0 and "within 0.01 of the best 0.7000" in rec["text"]
    # a looser tolerance lets the cheaper model in, and then its smaller vectors win
    assert recommend(result, 0.05)["row"] == 3
    assert recommend(result, 0.0)["row"] == 0


def test_model_dims_skip_only_what_exceeds_the_model():
    assert model_dims([768, 384, 128], 768, 384) == ([384, 128], [768])
    assert model_dims(None, 768, 384) == ([384], [])  # dense.dim above the model doesn't stop it
    assert model_dims(None, 256, 384) == ([384, 256], [])


# -- end to end with two tiny random models ---------------------------------------------------

DOCS = [
    ("d1", "Parsing JSON", "json.loads parses a JSON document into Python dicts and lists. It accepts str and bytes "
     "input alike. Invalid documents raise a JSONDecodeError with the position."),
    ("d2", "Subprocesses", "subprocess.run starts a child process and waits for it to finish. The return code "
     "tells whether the child succeeded. Output can be captured as text."),
    ("d3", "SQLite", "sqlite3 cursors execute SQL statements against a database file. Parameters are bound with "
     "question marks. Transactions are committed on the connection."),
    ("d4", "Regular expressions", "re.compile builds a pattern object for matching text. Groups capture parts of "
     "the match. Flags change how the pattern is read."),
    ("d5", "Dates", "datetime objects represent a date and a time of day. Time zones are attached with tzinfo "
     "objects. Differences between datetimes are timedelta values."),
    ("d6", "Paths", "pathlib.Path joins, resolves and globs filesystem paths. Paths can be read and written "
     "directly. The parent attribute gives the containing folder."),
]
QUERIES = {"q1": "read a json file into a dict", "q2": "start a child process", "q3": "run sql on a database",
           "q4": "match text with a pattern"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


def build_tiny_dense_model(path, hidden: int, seed: int):
    """A random BERT of width ``hidden`` with mean pooling, saved as a sentence-transformers folder
    (the packaged MiniLM tokenizer)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel

    from indexer.encoders.models import load_tokenizer

    torch.manual_seed(seed)
    tok = load_tokenizer("packaged:all-MiniLM-L6-v2")
    raw = path.parent / f"{path.name}-raw"
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=128)).save_pretrained(raw)
    tok.save_pretrained(raw)
    tr = Transformer(str(raw), max_seq_length=128)
    SentenceTransformer(modules=[tr, Pooling(hidden, "mean")]).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from indexer.config import load_config
    from tests.conftest import write_parquet

    tmp = tmp_path_factory.mktemp("compare")
    write_parquet(tmp / "corpus.parquet", [{"id": i, "title": t, "text": x} for i, t, x in DOCS])
    small = build_tiny_dense_model(tmp / "tiny32", 32, 0)
    wide = build_tiny_dense_model(tmp / "tiny48", 48, 1)
    sets = [f"corpus.path={tmp / 'corpus.parquet'}", "corpus.sample=false", f"index.dir={tmp / 'index'}",
            "dense.dim=48", "encode.device=cpu"]
    cfg = load_config("configs/local.yaml", sets)
    return tmp, cfg, sets, small, wide


def test_compare_two_models_of_different_dims(tiny):
    tmp, cfg, _, small, wide = tiny
    from indexer.compare import write_outputs

    opts = CompareOptions(models=[small, wide], dims=[48, 32, 16], quantizations=["none", "int8"],
                          bench_seconds=0.2, bench_rows=16)
    res = run_compare(cfg, opts, QUERIES, QRELS)
    rows = res["rows"]
    keys = ["model", "dim", "quantization", "mode", "ndcg@10", "recall@100", "mrr@10", "tokens_per_s",
            "encode_hours", "cost_usd", "bytes_per_vector", "p50_ms"]
    assert all(list(r)[:len(keys)] == keys for r in rows)
    # the 32-d model skips 48 (and dense.dim=48 in the config does not stop it); the 48-d one runs all three
    by_model = {m: sorted({(r["dim"], r["quantization"]) for r in rows if r["model"] == m}) for m in (small, wide)}
    assert by_model[small] == [(16, "int8"), (16, "none"), (32, "int8"), (32, "none")]
    assert by_model[wide] == [(d, q) for d in (16, 32, 48) for q in ("int8", "none")]
    info = {m["model"]: m for m in res["models"]}
    assert info[small]["skipped_dims"] == [48] and info[wide]["skipped_dims"] == []
    assert info[small]["vectors_from"]["encoded"] == len(DOCS)
    assert len(rows) == 2 * (4 + 6) and {r["mode"] for r in rows} == {"dense", "hybrid"}
    for r in rows:
        assert 0 <= r["ndcg@10"] <= 1 and r["tokens_per_s"] > 0 and r["encode_hours"] > 0
        assert r["bytes_per_vector"] == (4 * r["dim"] if r["quantization"] == "none" else r["dim"])
        assert r["index_ram_bytes"] > len(DOCS) * r["bytes_per_vector"] and r["p95_ms"] >= r["p50_ms"] >= 0
    assert {b["mode"] for b in res["baselines"]} == {"bm25", "sparse"}
    rec = res["recommendation"]
    best = max(r["ndcg@10"] for r in rows)
    assert rows[rec["row"]]["ndcg@10"] >= best - 0.01 and "within 0.01 of the best" in rec["text"]
    assert res["pareto"]["cost"] and res["pareto"]["bytes"]
    files = write_outputs(res, tmp / "out")
    assert open(files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(open(files["json"]).read())
    assert saved["rows"] == json.loads(json.dumps(rows, default=str))
    assert "Recommended:" in open(files["md"]).read()

    # the second comparison reuses the cached vectors: no model encodes a document again
    again = run_compare(cfg, CompareOptions(models=[small], dims=[16], bench_seconds=0.2, bench_rows=16),
                        QUERIES, QRELS)
    assert again["models"][0]["vectors_from"] == {"cache": len(DOCS), "index": 0, "encoded": 0}


def test_compare_pseudo_queries_and_sample(tiny):
    tmp, cfg, _, small, _ = tiny
    opts = CompareOptions(models=[small], pseudo_queries=4, seed=3, sample_docs=5, bench_seconds=0.2, bench_rows=16)
    res = run_compare(cfg, opts)
    q = res["queries"]
    assert q["source"] == "pseudo" and q["count"] == 4 and q["pseudo"]["sentence_removed_from_chunk"]
    assert res["corpus"]["sampled"] and res["corpus"]["documents"] == 5 and "random distractors" in res["corpus"]["note"]
    pq = res["pseudo_set"]
    assert set(pq.qrels) == set(pq.queries) and len(pq.edited) == 4
    # only the edited chunks are new texts: the rest come from the cache written above
    assert res["models"][0]["vectors_from"]["encoded"] == 4
    with pytest.raises(CompareError, match="--model"):
        run_compare(cfg, CompareOptions(models=[str(tmp / "no-such-model")], pseudo_queries=2))


def test_compare_cli(tiny):
    from typer.testing import CliRunner

    from indexer.cli import app

    tmp, _, sets, small, wide = tiny
    qf = tmp / "queries.jsonl"
    qf.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    rf = tmp / "qrels.tsv"
    rf.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{k}\t{d}\t1\n" for k, v in QRELS.items() for d in v))
    base = ["compare", "configs/local.yaml", *[x for s in sets for x in ("--set", s)], "--model", small]
    res = CliRunner().invoke(app, [*base, "--model", wide, "--queries", str(qf), "--qrels", str(rf), "--dims", "48,16",
                                   "--bench-seconds", "0.2", "--out", str(tmp / "cli"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {(r["model"], r["dim"]) for r in out["rows"]} == {(small, 16), (wide, 48), (wide, 16)}
    assert (tmp / "cli" / "compare.png").exists() and "pseudo_set" not in out
    for bad, msg in [([], "--pseudo-queries"), (["--pseudo-queries", "3", "--queries", str(qf)], "not both"),
                     (["--pseudo-queries", "3", "--dims", "x"], "--dims"),
                     (["--pseudo-queries", "3", "--quantization", "int4"], "--quantization")]:
        r = CliRunner().invoke(app, [*base, *bad])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_in_memory_sparse_matches_the_vector_store(tmp_path):
    """The comparison's word-piece BM25 scores what the vector store scores for the sparse vectors the
    encode stage writes (the run's BM25 parameters, the engine's IDF)."""
    import numpy as np

    from indexer import schema
    from indexer.compare.lexical import MemorySparseBM25
    from indexer.config import load_config
    from indexer.encoders.sparse import bm25_query, bm25_weights
    from indexer.encoders.tokens import content_ids, document_texts
    from indexer.run.plan import bm25_params
    from indexer.schema import VectorSpec
    from indexer.stores.qdrant_edge import EdgeVectorStore

    cfg = load_config("configs/local.yaml", ["corpus.sample=false"])
    ref = cfg.dense.model
    rows = {schema.ID: np.array([d[0] for d in DOCS], dtype=object),
            schema.TITLE: np.array([d[1] for d in DOCS], dtype=object),
            schema.TEXT: np.array([d[2] for d in DOCS], dtype=object)}
    texts = document_texts(rows)
    params = bm25_params(cfg, rows)  # what a run computes from its corpus sample
    idx, val = bm25_weights(content_ids(texts, ref), **params)
    n = len(DOCS)
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((n, 8)).astype(np.float32)
    batch = {schema.ID: rows[schema.ID], schema.HASH: np.array(["h"] * n, dtype=object),
             schema.TITLE: rows[schema.TITLE], schema.METADATA: np.array(["{}"] * n, dtype=object),
             schema.DENSE: dense / np.linalg.norm(dense, axis=1, keepdims=True),
             schema.SPARSE_INDICES: np.array(idx + [None], dtype=object)[:n],
             schema.SPARSE_VALUES: np.array(val + [None], dtype=object)[:n]}
    store = EdgeVectorStore(str(tmp_path / "edge"), VectorSpec.build(8, "none", "bm25", False))
    store.ensure_collection("c_v1")
    store.upsert("c_v1", batch)
    store.finalize("c_v1")
    mem = MemorySparseBM25(ref, texts, list(rows[schema.ID]), cfg.sparse.k1, cfg.sparse.b, None)
    try:
        for q in [*QUERIES.values(), "json database pattern"]:
            want = store.search_sparse("c_v1", bm25_query(q, ref), 10)
            got, _ = mem.search(q, 10)
            assert [h.id for h in got] == [h.id for h in want]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-4)
    finally:
        store.close()
