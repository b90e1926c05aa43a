"""The documents a comparison searches: the whole corpus, or for large corpora a stated sample
(every judged document plus N random distractors), read from ``corpus.path`` like the run reads it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .. import schema
from ..config import JobConfig
from ..sources.parquet import plan_corpus, read_fragment, read_valid_rows, row_reason

WHOLE_CORPUS_LIMIT = 100_000
"""Valid rows up to which a comparison searches the whole corpus when ``--sample-docs`` is not given;
above it, every judged document plus this many random distractors."""


class CompareError(ValueError):
    """A comparison can't run as asked (no documents, no judged document in the corpus, bad flag)."""


@dataclass
class EvalCorpus:
    """Documents in the order they are encoded and searched, and how they were chosen."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    corpus_rows: int  # valid rows of the whole corpus (what a full run encodes)
    sampled: bool = False
    note: str = ""
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.ids)}

    def encoded_texts(self, prefix: str = "") -> list[str]:
        """What the dense model encodes per chunk: ``title + " " + text``, as the pipeline does."""
        from ..encoders.tokens import document_texts

        return document_texts({schema.TITLE: self.titles, schema.TEXT: self.texts}, prefix)

    def with_texts(self, edited: dict[str, str]) -> "EvalCorpus":
        """A copy whose chunks ``edited`` (id -> text) have new texts (pseudo-queries taken out)."""
        texts = [edited.get(d, t) for d, t in zip(self.ids, self.texts)]
        return EvalCorpus(self.ids, self.titles, texts, self.corpus_rows, self.sampled, self.note)

    def describe(self) -> dict:
        return {"documents": len(self.ids), "corpus_rows": self.corpus_rows, "sampled": self.sampled,
                "note": self.note}


def load_eval_corpus(cfg: JobConfig, judged: set[str] | None, sample_docs: int | None, seed: int = 0,
                     whole_limit: int = WHOLE_CORPUS_LIMIT) -> EvalCorpus:
    """The comparison's documents.

    ``sample_docs=None`` and at most ``whole_limit`` valid rows: the whole corpus. Otherwise one
    pass over the corpus keeps every document in ``judged`` and a uniform random sample
    (``random.Random(seed)``, reservoir) of ``sample_docs`` (or ``whole_limit``) of the others. With
    ``judged=None`` (pseudo-queries, built afterwards from these documents) the sample is just the
    distractors. Absolute scores on a sample are higher than on the whole corpus (fewer
    distractors); the output says so.
    """
    plan = plan_corpus(cfg.corpus, check_duplicates=False)
    total = sum(f.num_rows for f in plan.fragments)
    if not plan.fragments:
        raise CompareError(f"corpus.path {cfg.corpus.path}: no Parquet rows to compare on")
    if sample_docs is None and total <= whole_limit:
        rows = read_valid_rows(plan, cfg.corpus, None)
        ec = EvalCorpus([str(x) for x in rows[schema.ID]], [str(x or "") for x in rows[schema.TITLE]],
                        [str(x) for x in rows[schema.TEXT]], len(rows[schema.ID]))
        ec.note = f"whole corpus: {len(ec.ids):,} documents"
        return ec
    n = sample_docs if sample_docs is not None else whole_limit
    rng = random.Random(seed)
    kept: list[tuple[str, str, str]] = []
    res: list[tuple[str, str, str]] = []
    seen = valid = 0
    for frag in plan.fragments:
        b = read_fragment(frag, cfg.corpus)
        for i in range(len(b[schema.ID])):
            doc, text = b[schema.ID][i], b[schema.TEXT][i]
            if b[schema.REJECT_REASON][i] or row_reason(doc, text, False):
                continue
            valid += 1
            row = (str(doc), str(b[schema.TITLE][i] or ""), str(text))
            if judged is not None and row[0] in judged:
                kept.append(row)
                continue
            seen += 1
            if len(res) < n:
                res.append(row)
            else:
                j = rng.randrange(seen)
                if j < n:
                    res[j] = row
    judged_n = len(kept)
    kept += res
    if not kept:
        raise CompareError(f"corpus.path {cfg.corpus.path}: no valid rows to compare on")
    ec = EvalCorpus([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept], valid, sampled=True)
    ec.note = (f"sample of {len(kept):,} of {valid:,} documents: "
               + (f"all {judged_n:,} judged documents plus " if judged is not None else "")
               + f"{len(res):,} random distractors (seed {seed}); absolute scores are higher than on the whole "
                 "corpus, compare settings with each other")
    return ec


def judged_documents(qrels: dict[str, dict[str, int]]) -> set[str]:
    return {d for docs in qrels.values() for d, g in docs.items() if g > 0}
