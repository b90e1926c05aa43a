"""Pseudo-queries for a corpus without judged queries: one sentence taken out of a chunk is the
query, and that chunk is its one relevant document.

Exactly how (seeded, so the same corpus and seed give the same queries):

1. Each chunk's ``text`` (not the title) is split into sentences after ``.``, ``!`` or ``?``
   followed by whitespace and not by a lowercase ASCII letter (so ``et al. found`` stays whole),
   and after ``。``, ``！`` or ``？``.
2. A sentence is eligible when it has between ``MIN_CHARS`` and ``MAX_CHARS`` characters; a chunk
   is eligible when it has an eligible sentence and at least one other sentence of
   ``MIN_CHARS`` or more, so something is left to find it by.
3. The eligible chunks sorted by id; ``random.Random(seed).sample`` picks ``n`` of them, and the
   same generator then picks one eligible sentence of each picked chunk, in the picked order.
4. The query is the sentence; the chunk is relevant (grade 1); query ids are ``pseudo-1`` ...
5. The sentence is removed from the chunk's text for the evaluation (``remove=True``): left in,
   a query would be a substring of its document, BM25 and every dense model would find it near
   the top, and the comparison would rank settings by noise near the ceiling. Taken out (the
   inverse cloze task), the query has to be matched to its context, as a real question is to the
   passage that answers it. The index itself is never changed; only the comparison's copy.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

MIN_CHARS = 30
MAX_CHARS = 300
"""Length bounds (characters) of a sentence used as a query: shorter ones are mostly headings or
fragments ("Results."), longer ones are run-on lists that no user types."""

_SPLIT = re.compile(r"(?<=[.!?])\s+(?![a-z])|(?<=[。！？])\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (the rule in the module docstring), stripped, empty ones dropped."""
    return [s.strip() for s in _SPLIT.split(text or "") if s and s.strip()]


@dataclass
class PseudoQueries:
    """Generated queries, their qrels, and the chunk texts with each query's sentence removed."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    edited: dict[str, str] = field(default_factory=dict)  # chunk id -> text without the query sentence
    seed: int = 0
    eligible_chunks: int = 0
    removed: bool = True

    def describe(self) -> dict:
        return {"queries": len(self.queries), "seed": self.seed, "eligible_chunks": self.eligible_chunks,
                "sentence_removed_from_chunk": self.removed,
                "method": (f"one sentence of {MIN_CHARS}-{MAX_CHARS} characters from each of {len(self.queries)} "
                           f"chunks drawn with seed {self.seed} from {self.eligible_chunks} eligible ones; the chunk "
                           "is the relevant document" + ("; the sentence is removed from its text for the comparison"
                                                         if self.removed else "; the sentence stays in its text"))}

    def write(self, out_dir: str | Path) -> dict[str, str]:
        """BEIR-format ``pseudo_queries.jsonl`` and ``pseudo_qrels.tsv`` under ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        q, r = out / "pseudo_queries.jsonl", out / "pseudo_qrels.tsv"
        q.write_text("".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) + "\n"
                             for k, v in self.queries.items()), encoding="utf-8")
        r.write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{k}\t{d}\t{g}\n" for k, docs in self.qrels.items() for d, g in docs.items()), encoding="utf-8")
        return {"queries": str(q), "qrels": str(r)}


def _eligible(sentences: list[str]) -> list[int]:
    """Indices of the sentences that can be a query (and leave a long enough one behind)."""
    ok = [i for i, s in enumerate(sentences) if MIN_CHARS <= len(s) <= MAX_CHARS]
    return [i for i in ok if any(len(s) >= MIN_CHARS for j, s in enumerate(sentences) if j != i)]


def make_pseudo_queries(ids: Sequence[str], texts: Sequence[str], n: int, seed: int = 0,
                        remove: bool = True) -> PseudoQueries:
    """Up to ``n`` pseudo-queries from the chunks ``ids`` / ``texts`` (the module docstring's rule)."""
    if n < 1:
        raise ValueError(f"the number of pseudo-queries must be positive, got {n}")
    split: dict[str, tuple[list[str], list[int]]] = {}
    for doc_id, text in zip(ids, texts):
        sentences = split_sentences(text)
        ok = _eligible(sentences)
        if ok:
            split[str(doc_id)] = (sentences, ok)
    rng = random.Random(seed)
    picked = rng.sample(sorted(split), min(n, len(split)))
    out = PseudoQueries({}, {}, seed=seed, eligible_chunks=len(split), removed=remove)
    for num, doc_id in enumerate(picked, 1):
        sentences, ok = split[doc_id]
        i = rng.choice(ok)
        qid = f"pseudo-{num}"
        out.queries[qid] = sentences[i]
        out.qrels[qid] = {doc_id: 1}
        if remove:
            out.edited[doc_id] = " ".join(s for j, s in enumerate(sentences) if j != i)
    return out
