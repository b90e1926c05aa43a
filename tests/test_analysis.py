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
    from indexer.stores.tantivy_text import TantivyTextStore

    docs = [("t", "Protein folding", "A study of chaperones in cells."),
            ("x", "Cell biology", "Protein folding of chaperones studied in detail.")]
    st = TantivyTextStore(str(tmp_path), TextStoreConfig(title_boost=1.0))
    n = len(docs)
    st.upsert("c", {schema.ID: np.array([d[0] for d in docs], object), schema.TITLE: np.array([d[1] for d in docs], object),
                    schema.TEXT: np.array([d[2] for d in docs], object), schema.METADATA: np.array(["{}"] * n, object),
                    schema.HASH: np.array(["h"] * n, object)})
    st.finalize("c")
    scores = {}
    for boost in (0.0, 0.4, 1.0, 3.0):
        st.cfg.title_boost = boost
        scores[boost] = {h.id: h.score for h in st.search_bm25("c", "protein folding", 2)}
    assert scores[0.0]["x"] > scores[0.0].get("t", 0.0)  # text only: x mentions it in the text
    assert scores[3.0]["t"] > scores[3.0]["x"]  # a heavy title weight ranks the title match first
    assert scores[0.4]["t"] < scores[1.0]["t"] < scores[3.0]["t"]
    st.close()
