"""Text analysis for the BM25 text store, named like the Elasticsearch analyzers it mirrors.

* ``english``: tokens of letters/digits, English possessives dropped, lowercase, Lucene's English
  stopwords (the list Elasticsearch's ``english`` analyzer uses), Snowball English stemming.
* ``italian``: lowercase, Italian stopwords, Snowball Italian stemming (elision handled by the
  tokenizer splitting on apostrophes).
* ``standard``: lowercase tokens, no stopwords or stemming.
* ``cjk``: Chinese/Japanese/Korean have no spaces: text is segmented into words with jieba (search
  mode, which also emits the shorter words inside long ones), Latin parts tokenized as above.
* ``auto``: per text, ``cjk`` when at least 20% of its letters are CJK, else ``english``.
* ``multilingual`` (the default): per run of script inside a text. Runs of Han and hiragana (written
  without spaces) are segmented with jieba as in ``cjk``; everything else goes through ``english``
  (unicode letters/digits, lowercase, English possessives, stopwords and stemming, which leave words
  of other scripts lowercased and otherwise unchanged). Hangul words (written with spaces) and
  katakana runs (mostly loanwords) are kept as words. Fullwidth ASCII and halfwidth katakana are folded to their usual width
  first (Elasticsearch's ``cjk_width``). Text with no Han or kana gets exactly the ``english`` terms.

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
# Han (with compatibility ideographs) and hiragana: the scripts written without spaces between words.
_UNSPACED_RUN = re.compile(r"[\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_FULLWIDTH_ASCII = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_HALFWIDTH_KANA = re.compile(r"[\uff61-\uff9f]+")


PRETOKENIZED = ("cjk", "multilingual")
"""Analyzers whose terms are computed here and handed to the engine joined by spaces."""


def is_mostly_cjk(text: str, share: float = 0.2) -> bool:
    letters = sum(1 for ch in text if ch.isalpha())
    return letters > 0 and len(_CJK.findall(text)) / letters >= share


@lru_cache(maxsize=8)
def tantivy_analyzer(name: str):
    """The tantivy TextAnalyzer for space-delimited languages (``PRETOKENIZED`` ones are analyzed in Python)."""
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


def fold_width(text: str) -> str:
    """Fullwidth ASCII to ASCII, halfwidth katakana to fullwidth (Elasticsearch's ``cjk_width``)."""
    import unicodedata

    text = text.translate(_FULLWIDTH_ASCII)
    return _HALFWIDTH_KANA.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)


def _english_terms(text: str) -> list[str]:
    return tantivy_analyzer("english").analyze(_POSSESSIVE.sub("", text)) if text.strip() else []


def analyze_multilingual(text: str) -> list[str]:
    """Terms of ``multilingual``: jieba words for Han/hiragana runs, ``english`` terms for the rest."""
    text = fold_width(text)
    out: list[str] = []
    pos = 0
    for m in _UNSPACED_RUN.finditer(text):
        out.extend(_english_terms(text[pos:m.start()]))
        out.extend(w.lower() for w in _jieba().cut_for_search(m.group()) if _WORD.search(w))
        pos = m.end()
    out.extend(_english_terms(text[pos:]))
    return out


def effective(analyzer: str, text: str) -> str:
    if analyzer == "auto":
        return "cjk" if is_mostly_cjk(text) else "english"
    return analyzer


def prepare(text: str, analyzer: str) -> tuple[str, str]:
    """(text to hand to the engine, engine analyzer name): CJK is segmented here, others by tantivy."""
    a = effective(analyzer, text)
    if a == "cjk":
        return segment_cjk(text), "cjk"
    if a == "multilingual":
        return " ".join(analyze_multilingual(text)), a
    if a == "english":
        text = _POSSESSIVE.sub("", text)
    return text, a


def analyze(text: str, analyzer: str) -> list[str]:
    """The exact terms the index uses for ``text`` under ``analyzer``."""
    prepared, a = prepare(text, analyzer)
    if a in PRETOKENIZED:
        return prepared.split()
    return tantivy_analyzer(a).analyze(prepared)
