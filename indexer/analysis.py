"""Text analysis for the BM25 text store, named like the Elasticsearch analyzers it mirrors.

* ``english``: tokens of letters/digits, English possessives dropped, lowercase, Lucene's English
  stopwords (the list Elasticsearch's ``english`` analyzer uses), Snowball English stemming.
* ``italian``: lowercase, Italian stopwords, Snowball Italian stemming (elision handled by the
  tokenizer splitting on apostrophes).
* ``standard``: lowercase tokens, no stopwords or stemming.
* ``cjk``: Chinese/Japanese/Korean have no spaces: text is segmented into words with jieba (search
  mode, which also emits the shorter words inside long ones), Latin parts tokenized as above.
* ``auto``: per text, ``cjk`` when at least 20% of its letters are CJK, else ``english``.

Documents and queries go through the same function, so the terms always agree.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Lucene EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (used by Elasticsearch's `english` analyzer).
ENGLISH_STOPWORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with"
).split()

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_POSSESSIVE = re.compile(r"(?<=\w)['’][sS]\b")
_WORD = re.compile(r"\w+", re.UNICODE)


def is_mostly_cjk(text: str, share: float = 0.2) -> bool:
    letters = sum(1 for ch in text if ch.isalpha())
    return letters > 0 and len(_CJK.findall(text)) / letters >= share


@lru_cache(maxsize=8)
def tantivy_analyzer(name: str):
    """The tantivy TextAnalyzer for space-delimited languages (CJK is pre-segmented in Python)."""
    import tantivy as t

    b = t.TextAnalyzerBuilder(t.Tokenizer.simple()).filter(t.Filter.remove_long(64)).filter(t.Filter.lowercase())
    if name == "english":
        b = b.filter(t.Filter.custom_stopword(ENGLISH_STOPWORDS)).filter(t.Filter.stemmer("english"))
    elif name == "italian":
        b = b.filter(t.Filter.stopword("italian")).filter(t.Filter.stemmer("italian"))
    return b.build()


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def segment_cjk(text: str) -> str:
    """Whitespace-joined words: jieba for CJK runs; other runs tokenized and English-analyzed."""
    out: list[str] = []
    for w in _jieba().cut_for_search(text):
        w = w.strip()
        if not w or not _WORD.search(w):
            continue
        if _CJK.search(w):
            out.append(w.lower())
        else:
            out.extend(tantivy_analyzer("english").analyze(w))
    return " ".join(out)


def effective(analyzer: str, text: str) -> str:
    if analyzer == "auto":
        return "cjk" if is_mostly_cjk(text) else "english"
    return analyzer


def prepare(text: str, analyzer: str) -> tuple[str, str]:
    """(text to hand to the engine, engine analyzer name): CJK is segmented here, others by tantivy."""
    a = effective(analyzer, text)
    if a == "cjk":
        return segment_cjk(text), "cjk"
    if a == "english":
        text = _POSSESSIVE.sub("", text)
    return text, a


def analyze(text: str, analyzer: str) -> list[str]:
    """The exact terms the index uses for ``text`` under ``analyzer``."""
    prepared, a = prepare(text, analyzer)
    if a == "cjk":
        return prepared.split()
    return tantivy_analyzer(a).analyze(prepared)
