import pytest

from indexer.eval import evaluate, load_qrels, load_queries
from indexer.fusion import dbsf, rrf


def test_rrf_hand_computed():
    fused = rrf({"dense": ["a", "b", "c"], "bm25": ["b", "d"]}, k=60)
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [d for d, _ in fused] == ["b", "a", "d", "c"] or [d for d, _ in fused][:2] == ["b", "a"]


def test_rrf_ties_keep_first_appearance():
    fused = rrf({"x": ["a"], "y": ["b"]}, k=1)
    assert [d for d, _ in fused] == ["a", "b"]


def test_weighted_rrf():
    fused = dict(rrf({"dense": ["a"], "bm25": ["b"]}, k=10, weights={"dense": 2.0, "bm25": 1.0}))
    assert fused["a"] == pytest.approx(2 / 11) and fused["b"] == pytest.approx(1 / 11)
    assert "a" not in dict(rrf({"dense": ["a"], "bm25": ["b"]}, k=10, weights={"dense": 0.0, "bm25": 1.0}))


def test_dbsf_hand_computed():
    # scores 1, 2, 3: mean 2, std sqrt(2/3); lo = 2 - 3 std, span 6 std
    import math

    std = math.sqrt(2 / 3)
    fused = dict(dbsf({"dense": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}))
    assert fused["a"] == pytest.approx((3 - (2 - 3 * std)) / (6 * std))
    assert fused["b"] == pytest.approx(0.5)
    fused2 = dict(dbsf({"dense": [("a", 3.0), ("b", 1.0)], "bm25": [("b", 10.0), ("a", 0.0)]}))
    assert fused2["a"] == pytest.approx(fused2["b"])


def test_metrics_hand_computed():
    import math

    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d9": 1}}
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d5": 1.0}}
    m = evaluate(run, qrels, k=10)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((dcg / idcg + 0) / 2, abs=1e-4)
    assert m["recall@100"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["mrr@10"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["queries"] == 2


def test_metrics_count_queries_without_results_as_zero():
    m = evaluate({"q1": {"d1": 1.0}}, {"q1": {"d1": 1}, "q2": {"d2": 1}}, k=10)
    assert m["ndcg@10"] == pytest.approx(0.5) and m["queries"] == 2


def test_mrr_cut_at_k():
    m = evaluate({"q": {f"d{i}": float(100 - i) for i in range(20)}}, {"q": {"d15": 1}}, k=10)
    assert m["mrr@10"] == 0.0 and m["recall@100"] == 1.0


def test_beir_loaders(tmp_path):
    q = tmp_path / "queries.jsonl"
    q.write_text('{"_id": "1", "text": "what is ray"}\n\n{"_id": 2, "text": "x"}\n')
    r = tmp_path / "qrels.tsv"
    r.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n")
    assert load_queries(q) == {"1": "what is ray", "2": "x"}
    assert load_qrels(r) == {"1": {"d1": 1, "d2": 2}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no id"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_queries(bad)


def test_minmax_hand_computed():
    from indexer.fusion import minmax

    # dense 0.9, 0.7, 0.5 -> 1, 0.5, 0; bm25 12, 4 -> 1, 0
    fused = dict(minmax({"dense": [("a", 0.9), ("b", 0.7), ("c", 0.5)], "bm25": [("b", 12.0), ("d", 4.0)]}))
    assert fused == pytest.approx({"a": 1.0, "b": 1.5, "c": 0.0, "d": 0.0})
    weighted = dict(minmax({"dense": [("a", 0.9), ("b", 0.7), ("c", 0.5)], "bm25": [("b", 12.0), ("d", 4.0)]},
                           {"dense": 2.0, "bm25": 0.5}))
    assert weighted == pytest.approx({"a": 2.0, "b": 1.5, "c": 0.0, "d": 0.0})
    assert dict(minmax({"x": [("a", 3.0), ("b", 3.0)]})) == {"a": 1.0, "b": 1.0}


def test_weighted_dbsf_hand_computed():
    # one list of two: mean 2, std 1 -> (s - (-1)) / 6 -> 3: 4/6, 1: 2/6
    fused = dict(dbsf({"dense": [("a", 3.0), ("b", 1.0)], "bm25": [("b", 5.0)]}, {"dense": 3.0, "bm25": 1.0}))
    assert fused["a"] == pytest.approx(3 * 4 / 6)
    assert fused["b"] == pytest.approx(3 * 2 / 6 + 0.5)


def test_search_fuse_applies_settings():
    from indexer.config import FusionKind
    from indexer.search import Settings, fuse
    from indexer.schema import Hit

    per_mode = {"dense": [Hit("a", 0.9), Hit("b", 0.8), Hit("c", 0.1)],
                "sparse": [Hit("z", 9.0)],
                "bm25": [Hit("c", 20.0), Hit("b", 10.0)]}
    # sparse is not fused; each list is cut to 2 candidates, so dense's "c" does not count
    s = Settings(FusionKind.rrf, 10, {"dense": 1.0, "sparse": 1.0, "bm25": 1.0}, ("dense", "bm25"), candidates=2)
    got = {h.id: h.score for h in fuse(per_mode, 10, s)}
    assert got == pytest.approx({"a": 1 / 11, "b": 1 / 12 + 1 / 12, "c": 1 / 11})
    assert [h.id for h in fuse(per_mode, 2, s)] == ["b", "a"]
    w = Settings(FusionKind.weighted_rrf, 10, {"dense": 2.0, "bm25": 1.0}, ("dense", "bm25"), candidates=2)
    got = {h.id: h.score for h in fuse(per_mode, 10, w)}
    assert got == pytest.approx({"a": 2 / 11, "b": 2 / 12 + 1 / 12, "c": 1 / 11})
    # a mode the index lacks is skipped, never an error
    only = Settings(FusionKind.minmax, 60, {"dense": 1.0}, ("dense", "sparse"), candidates=3)
    assert [h.id for h in fuse({"dense": per_mode["dense"]}, 3, only)] == ["a", "b", "c"]


def test_low_vocabulary_coverage_falls_back_to_bm25():
    from indexer.search import Settings, fuse, vocab_coverage
    from indexer.schema import Hit

    en, zh = vocab_coverage("packaged:all-MiniLM-L6-v2", ["parse a JSON document", "《战国无双3》是由哪两个公司合作开发的？"])
    assert en == 1.0 and zh < 0.6
    s = Settings(min_coverage=0.9)
    per_mode = {"dense": [Hit("a", 0.9)], "sparse": [Hit("b", 3.0)], "bm25": [Hit("c", 12.0), Hit("a", 2.0)]}
    assert [h.id for h in fuse(per_mode, 10, s, coverage=zh)] == ["c", "a"]  # bm25 alone
    assert {h.id for h in fuse(per_mode, 10, s, coverage=en)} == {"a", "b", "c"}
    assert s.fused_modes(zh) == ("bm25",)
    assert Settings(modes=("dense",), min_coverage=0.9).fused_modes(0.1) == ("dense",)  # nothing else to use
    assert Settings(min_coverage=0.0).fused_modes(0.0) == ("dense", "sparse", "bm25")


def test_fallback_never_picks_a_mode_whose_query_analysis_is_empty():
    """A low-coverage query whose BM25 analysis kept no term is not handed to BM25 alone (it could
    only answer nothing): the fallback leaves such modes out and, with none left, fuses all."""
    from indexer.schema import Hit, SparseQuery
    from indexer.search import Settings, fuse, query_empty_modes

    s = Settings(min_coverage=0.9)
    per_mode = {"dense": [Hit("a", 0.9)], "sparse": [Hit("b", 3.0)], "bm25": []}
    assert s.fused_modes(0.1, frozenset({"bm25"})) == ("dense", "sparse", "bm25")
    assert {h.id for h in fuse(per_mode, 10, s, coverage=0.1, empty=frozenset({"bm25"}))} == {"a", "b"}
    assert s.fused_modes(0.1, frozenset({"sparse"})) == ("bm25",)  # only BM25 left, and it has terms
    assert s.fused_modes(1.0, frozenset({"bm25"})) == s.modes  # coverage fine: no fallback at all
    assert query_empty_modes("🙂🙂 ✨", "multilingual") == {"bm25"}
    assert query_empty_modes("the and of", "english", SparseQuery([], [])) == {"bm25", "sparse"}
    assert query_empty_modes("《战国无双3》是由哪两个公司合作开发的？", "multilingual", SparseQuery([3], [1.0])) == set()
    long_zh = "战国无双是由哪两个公司合作开发的游戏请问这两个公司分别是哪里的"  # one CJK run over 64 bytes
    assert query_empty_modes(long_zh, "english") == {"bm25"}  # english drops it
