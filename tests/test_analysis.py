"""Text analysis for BM25: the terms each analyzer produces, and the title weight of BM25 queries
against a real tantivy index."""

from __future__ import annotations

import numpy as np

from indexer import schema
from indexer.analysis import ENGLISH_STOPWORDS, analyze, effective


def test_english_possessives_stopwords_stemming():
    assert analyze("The patient's doctors' studies were running", "english") == ["patient", "doctor", "studi", "were",
                                                                                 "run"]
    assert not set(analyze(" ".join(ENGLISH_STOPWORDS), "english"))
    assert analyze("IL-6 levels in 2019", "english") == ["il", "6", "level", "2019"]


def test_italian_elisions_stopwords_stemming():
    terms = analyze("La crisi petrolifera iniziò nell'ottobre dell'anno", "italian")
    assert terms == ["cris", "petrolifer", "iniz", "ottobr", "anno"]


def test_cjk_segments_words_and_analyzes_latin_runs():
    terms = analyze("《战国无双3》是由哪两个公司合作开发的？ Python3 running", "cjk")
    assert {"战国", "无双", "公司", "合作", "开发", "合作开发"} <= set(terms)
    assert terms[-2:] == ["python3", "run"]
    assert effective("auto", "战国无双是由光荣开发的") == "cjk" and effective("auto", "plain English") == "english"


def test_title_boost_weights_the_title_field(tmp_path):
    from indexer.config import TextStoreConfig

    docs = [("t", "Protein folding", "A study of chaperones in cells."),
            ("x", "Cell biology", "Protein folding of chaperones studied in detail.")]
    st = _store(tmp_path, docs, TextStoreConfig(title_boost=1.0))
    scores = {}
    for boost in (0.0, 0.4, 1.0, 3.0):
        st.cfg.title_boost = boost
        scores[boost] = {h.id: h.score for h in st.search_bm25("c", "protein folding", 2)}
    assert scores[0.0]["x"] > scores[0.0].get("t", 0.0)  # text only: x mentions it in the text
    assert scores[3.0]["t"] > scores[3.0]["x"]  # a heavy title weight ranks the title match first
    assert scores[0.4]["t"] < scores[1.0]["t"] < scores[3.0]["t"]
    st.close()


MIXED = "北京大学 iPhone手机 Москва Straße running 東京タワーに行きました 서울특별시 ＩＢＭ ﾃｽﾄ The patient's doctors"


def test_multilingual_segments_cjk_and_analyzes_other_scripts():
    terms = analyze(MIXED, "multilingual")
    assert {"北京", "大学", "北京大学", "手机", "東京"} <= set(terms)  # Han runs: jieba words (search mode)
    assert {"iphon", "run", "patient", "doctor"} <= set(terms)  # Latin: english stemming, possessives
    assert {"москва", "straße", "서울특별시", "タワー"} <= set(terms)  # other scripts: lowercased words
    assert {"ibm", "テスト"} <= set(terms)  # fullwidth ASCII and halfwidth katakana folded
    assert "the" not in terms  # english stopwords


def test_multilingual_gives_english_text_exactly_the_english_terms():
    for text in ("The patient's doctors' studies were running", "IL-6 levels in 2019", " ".join(ENGLISH_STOPWORDS),
                 "Ünïcode café naïve résumé, 3.14 don't", ""):
        assert analyze(text, "multilingual") == analyze(text, "english")


def test_per_language_analyzers_unchanged_by_multilingual():
    """The analyzers for one known language keep their terms (the default changed, they did not)."""
    assert analyze(MIXED, "english")[:2] == ["北京大学", "iphone手机"]  # english keeps a CJK run whole
    assert analyze("《战国无双3》是由哪两个公司合作开发的？", "cjk") == analyze("《战国无双3》是由哪两个公司合作开发的？", "multilingual")
    assert analyze("La crisi petrolifera iniziò nell'ottobre dell'anno", "italian") == [
        "cris", "petrolifer", "iniz", "ottobr", "anno"]


def _store(tmp_path, docs, cfg=None):
    from indexer.config import TextStoreConfig
    from indexer.stores.tantivy_text import TantivyTextStore

    st = TantivyTextStore(str(tmp_path), cfg or TextStoreConfig())
    n = len(docs)
    st.upsert("c", {schema.ID: np.array([d[0] for d in docs], object), schema.TITLE: np.array([d[1] for d in docs], object),
                    schema.TEXT: np.array([d[2] for d in docs], object), schema.METADATA: np.array(["{}"] * n, object),
                    schema.HASH: np.array(["h"] * n, object)})
    st.finalize("c")
    return st


MIXED_CORPUS = [
    ("zh1", "北京大学", "北京大学创建于1898年，是中国近代第一所国立综合性大学。"),
    ("zh2", "长江", "长江是亚洲第一长河，全长约6300公里，流经中国多个省份。"),
    ("mix", "iPhone", "苹果公司于2007年发布了第一代iPhone智能手机。"),
    ("en", "Protein folding", "Chaperones help proteins folding correctly in cells."),
]


def test_default_config_finds_chinese_in_a_mixed_corpus(tmp_path):
    """The default text store config reads Chinese: before, the english analyzer indexed each CJK run as
    one term, so a Chinese question matched nothing."""
    st = _store(tmp_path, MIXED_CORPUS)
    assert [h.id for h in st.search_bm25("c", "北京大学是哪一年创建的？", 4)][:1] == ["zh1"]
    assert [h.id for h in st.search_bm25("c", "长江全长多少公里", 4)][:1] == ["zh2"]
    assert [h.id for h in st.search_bm25("c", "第一代iPhone是哪年发布的", 4)][:1] == ["mix"]
    assert [h.id for h in st.search_bm25("c", "protein folds", 4)] == ["en"]  # English stemming still matches
    st.close()


def test_local_config_uses_the_multilingual_analyzer():
    from pathlib import Path

    from indexer.config import TextStoreConfig, load_config

    assert TextStoreConfig().analyzer.value == "multilingual"
    root = Path(__file__).resolve().parents[1]
    assert load_config(root / "configs/local.yaml").text_store.analyzer.value == "multilingual"
