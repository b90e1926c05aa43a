"""Model comparison on the user's own corpus: ``indexer compare CONFIG --model A --model B``.

Quality (nDCG@10, recall@100, MRR@10, dense alone and hybrid), measured encode tokens/s, projected
full-corpus encode hours and cost, bytes per vector and index RAM, and query latency, per model x
dimension x quantization, from one encode pass per model; a table, JSON, a plot with the Pareto
fronts, and the cheapest setting within a stated tolerance of the best. Without judged queries,
pseudo-queries are built from the corpus (:mod:`indexer.compare.pseudo`).

Modules: ``corpus`` (the documents: whole corpus or a stated sample), ``pseudo`` (pseudo-queries),
``vectors`` (one encode pass per model, cached), ``lexical`` (BM25 and sparse over the compared
documents), ``run`` (:func:`run_compare`), ``report`` (Pareto fronts, recommendation, files).
"""

from .corpus import CompareError
from .pseudo import make_pseudo_queries, split_sentences
from .report import markdown, write_outputs
from .run import CompareOptions, run_compare

__all__ = ["CompareError", "CompareOptions", "make_pseudo_queries", "markdown", "run_compare", "split_sentences",
           "write_outputs"]
