"""BM25 variants on a BEIR dataset, to explain where our BM25 sits next to published BM25 numbers.

The text store (tantivy) fixes BM25 at k1=1.2, b=0.75 and scores title and text as two fields.
Published SciFact numbers use other setups: Anserini "multifield" (title and text as two
fields, k1=0.9, b=0.4, equal weights), Anserini "flat" (one field) and bm25s (one field, k1=1.5,
b=0.75). This script scores those setups with a small exact BM25 (scipy sparse matrices, Lucene
IDF ``log(1 + (N - df + 0.5) / (df + 0.5))``) over the *same* analyzed terms the text store uses,
so the differences come from field layout, title weight and k1/b alone, not from tokenization.

    .venv/bin/python -m benchmarks.quality_bm25 scifact --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, data_dir, markdown_table, write_result

VARIANTS: list[dict[str, Any]] = [
    {"name": "multifield k1=0.9 b=0.4 title 1.0 (Anserini multifield setup)", "fields": "multi", "k1": 0.9, "b": 0.4,
     "title": 1.0},
    {"name": "flat k1=0.9 b=0.4 (Anserini flat setup)", "fields": "flat", "k1": 0.9, "b": 0.4},
    {"name": "flat k1=1.5 b=0.75 (bm25s defaults)", "fields": "flat", "k1": 1.5, "b": 0.75},
    {"name": "multifield k1=1.2 b=0.75 title 1.0 (tantivy, equal weights)", "fields": "multi", "k1": 1.2, "b": 0.75,
     "title": 1.0},
    {"name": "multifield k1=1.2 b=0.75 title 0.4 (tantivy, our default)", "fields": "multi", "k1": 1.2, "b": 0.75,
     "title": 0.4},
    {"name": "multifield k1=0.9 b=0.4 title 0.4", "fields": "multi", "k1": 0.9, "b": 0.4, "title": 0.4},
]


class FieldBM25:
    """Exact BM25 over one field: a (docs x terms) term-frequency matrix and Lucene IDF."""

    def __init__(self, docs_terms: list[list[str]], vocab: dict[str, int]):
        from scipy import sparse

        rows, cols, vals = [], [], []
        for i, terms in enumerate(docs_terms):
            ids, counts = np.unique([vocab[t] for t in terms], return_counts=True) if terms else ([], [])
            rows.extend([i] * len(ids))
            cols.extend(ids)
            vals.extend(counts)
        self.tf = sparse.csc_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(docs_terms), len(vocab)))
        self.dl = np.asarray([len(t) for t in docs_terms], np.float32)
        self.avgdl = float(self.dl.mean()) if len(self.dl) else 1.0
        df = np.asarray((self.tf > 0).sum(axis=0)).ravel()
        n = len(docs_terms)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)

    def scores(self, term_ids: list[int], k1: float, b: float) -> np.ndarray:
        out = np.zeros(self.tf.shape[0], np.float32)
        norm = k1 * (1.0 - b + b * self.dl / self.avgdl)
        for t in term_ids:
            col = self.tf[:, t]
            rows, tf = col.indices, col.data
            out[rows] += self.idf[t] * tf * (k1 + 1.0) / (tf + norm[rows])
        return out


def run(dataset: str, split: str, analyzer: str) -> dict[str, Any]:
    from indexer.analysis import analyze
    from indexer.eval import evaluate, load_qrels, load_queries

    d = data_dir() / dataset
    docs = [json.loads(line) for line in open(d / "corpus.jsonl", encoding="utf-8") if line.strip()]
    ids = [str(o["_id"]) for o in docs]
    title_terms = [analyze(o.get("title") or "", analyzer) for o in docs]
    text_terms = [analyze(o.get("text") or "", analyzer) for o in docs]
    flat_terms = [a + b for a, b in zip(title_terms, text_terms)]
    vocab: dict[str, int] = {}
    for terms in flat_terms:
        for t in terms:
            vocab.setdefault(t, len(vocab))
    fields = {"title": FieldBM25(title_terms, vocab), "text": FieldBM25(text_terms, vocab),
              "flat": FieldBM25(flat_terms, vocab)}
    queries = load_queries(d / "queries.jsonl")
    qrels = load_qrels(d / "qrels" / f"{split}.tsv")
    qterms = {q: [vocab[t] for t in dict.fromkeys(analyze(queries[q], analyzer)) if t in vocab]
              for q in qrels if q in queries}
    rows = []
    for v in VARIANTS:
        run_: dict[str, dict[str, float]] = {}
        for q, terms in qterms.items():
            if v["fields"] == "flat":
                s = fields["flat"].scores(terms, v["k1"], v["b"])
            else:
                s = fields["text"].scores(terms, v["k1"], v["b"]) + v["title"] * fields["title"].scores(terms, v["k1"], v["b"])
            top = np.argsort(-s, kind="stable")[:100]
            run_[q] = {ids[i]: float(s[i]) for i in top if s[i] > 0}
        rows.append({"variant": v["name"], **evaluate(run_, qrels, 10)})
    return {"dataset": dataset, "split": split, "analyzer": analyzer, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--analyzer", default="english")
    args = ap.parse_args(argv)
    res = run(args.dataset, args.split, args.analyzer)
    md = markdown_table(res["rows"], ["variant", "ndcg@10", "recall@100", "mrr@10"])
    name = f"quality_bm25_{args.dataset}_{args.split}"
    write_result(name, res)
    (RESULTS / f"{name}.md").write_text(f"BM25 variants, {args.dataset} {args.split}, analyzer {args.analyzer}\n\n{md}\n")
    sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
