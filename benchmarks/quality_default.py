"""The default config on non-English corpora: ``configs/local.yaml`` pointed at CMRC 2018 (Chinese)
and SQuAD-it (Italian), next to their per-language configs.

For each dataset, the CLI indexes the corpus with ``configs/local.yaml`` (only the corpus path and
the index folder overridden: analyzer and search settings stay the defaults) and evaluates every
mode. BM25 alone is also scored for the ``english`` analyzer (the default before ``multilingual``)
and the dataset's own analyzer (``cjk``, ``italian``), each in a tantivy index of the same corpus
built in memory (the text store's code, no Ray), on the same queries. The per-language config's
full rows come from ``benchmarks/results/quality_<dataset>.json`` (``benchmarks.quality run``),
which this script does not rerun.

    .venv/bin/python -m benchmarks.quality convert cmrc2018 squad_it
    .venv/bin/python -m benchmarks.quality_default cmrc2018 squad_it --queries 1000

``--queries N`` evaluates a fixed subsample (seed 0) of N judged queries (every query by default);
``--bm25-only`` scores only the in-memory BM25 rows. Output: ``benchmarks/results/quality_default.{json,md}``
(``quality_default_bm25.{json,md}`` with ``--bm25-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, data_dir, indexer_cli, markdown_table, write_result
from benchmarks.quality import DATA_OUT, DATASETS, _cmd, convert

MODES = ("bm25", "hybrid", "dense", "sparse")
OWN_ANALYZER = {"cmrc2018": "cjk", "squad_it": "italian"}


def bm25_only(dataset: str, analyzer: str, queries: Path, qrels: Path) -> dict[str, float]:
    """nDCG@10 / recall@100 of BM25 alone with ``analyzer``, from a temporary tantivy index of the corpus."""
    import numpy as np
    import pyarrow.parquet as pq

    from indexer import schema
    from indexer.config import TextStoreConfig
    from indexer.eval import as_run, evaluate, load_qrels, load_queries
    from indexer.stores.tantivy_text import TantivyTextStore

    t = pq.read_table(DATA_OUT / f"{dataset}.parquet", columns=["id", "title", "text"]).to_pydict()
    n = len(t["id"])
    with tempfile.TemporaryDirectory(prefix="quality-default-bm25-") as tmp:
        st = TantivyTextStore(tmp, TextStoreConfig(analyzer=analyzer))
        st.upsert("c", {schema.ID: np.asarray([str(i) for i in t["id"]], object),
                        schema.TITLE: np.asarray([x or "" for x in t["title"]], object),
                        schema.TEXT: np.asarray(t["text"], object), schema.METADATA: np.asarray(["{}"] * n, object),
                        schema.HASH: np.asarray(["0"] * n, object)})
        st.finalize("c")
        qr = load_qrels(qrels)
        qs = load_queries(queries)
        hits = {q: st.search_bm25("c", qs[q], 100) for q in qr if q in qs}
        st.close()
    return evaluate(as_run(hits), qr, 10)


def _subsample(queries: Path, qrels: Path, n: int | None, out: Path) -> tuple[Path, Path, int]:
    """``n`` judged queries drawn with a fixed seed (all of them when ``n`` is None)."""
    lines = qrels.read_text(encoding="utf-8").splitlines()
    head, body = lines[0], [x for x in lines[1:] if x.strip()]
    qids = sorted({x.split("\t", 1)[0] for x in body})
    if n is None or n >= len(qids):
        return queries, qrels, len(qids)
    keep = set(random.Random(0).sample(qids, n))
    out.mkdir(parents=True, exist_ok=True)
    q, r = out / queries.name, out / qrels.name
    q.write_text("".join(x + "\n" for x in queries.read_text(encoding="utf-8").splitlines()
                         if x.strip() and json.loads(x)["_id"] in keep), encoding="utf-8")
    r.write_text("\n".join([head, *[x for x in body if x.split("\t", 1)[0] in keep]]) + "\n", encoding="utf-8")
    return q, r, n


def run(dataset: str, n_queries: int | None, tmp: Path, pipeline: bool = True) -> dict[str, Any]:
    spec = DATASETS[dataset]
    if not (DATA_OUT / f"{dataset}.parquet").exists():
        convert([dataset])
    d = Path(os.path.relpath(data_dir() / dataset, ROOT))
    queries, qrels, n = _subsample(d / "queries.jsonl", d / "qrels" / f"{spec['split']}.tsv", n_queries,
                                   tmp / dataset)
    out: dict[str, Any] = {"dataset": dataset, "split": spec["split"], "queries": n, "rows": [], "commands": []}
    for analyzer in ("multilingual",) if pipeline else ():
        sets = [f"corpus.path={os.path.relpath(DATA_OUT / f'{dataset}.parquet', ROOT)}", "corpus.sample=false",
                f"index.dir=.indexer/default/{dataset}", f"index.name={dataset}"]
        set_args = [x for s in sets for x in ("--set", s)]
        args = ["run", "configs/local.yaml", "--json", "--full", *set_args]
        out["commands"].append(_cmd(*args))
        sys.stderr.write(f"{dataset} {analyzer}: indexing\n")
        indexer_cli(*args, timeout=6 * 3600)
        args = ["eval", "configs/local.yaml", "--queries", str(queries), "--qrels", str(qrels), "--json", *set_args]
        out["commands"].append(_cmd(*args).replace(str(tmp), "SAMPLE"))
        sys.stderr.write(f"{dataset} {analyzer}: evaluating {n} queries\n")
        _, res = indexer_cli(*args)
        for m in MODES:
            r = res["modes"][m]
            out["rows"].append({"config": f"local.yaml (analyzer {analyzer})", "mode": m, "ndcg@10": r["ndcg@10"],
                                "recall@100": r["recall@100"], "low_coverage_queries": r.get("low_coverage_queries")})
    for analyzer in ("english", OWN_ANALYZER[dataset], "multilingual"):
        sys.stderr.write(f"{dataset}: bm25 alone with {analyzer}\n")
        r = bm25_only(dataset, analyzer, queries, qrels)
        out["rows"].append({"config": f"tantivy in memory, analyzer {analyzer}", "mode": "bm25",
                            "ndcg@10": r["ndcg@10"], "recall@100": r["recall@100"]})
    own = RESULTS / f"quality_{dataset}.json"
    if own.exists() and pipeline:
        modes = json.loads(own.read_text())["modes"]
        for m in MODES:
            out["rows"].append({"config": f"{dataset}.yaml (all queries, benchmarks.quality)", "mode": m,
                                "ndcg@10": modes[m]["ndcg@10"], "recall@100": modes[m]["recall@100"],
                                "low_coverage_queries": modes[m].get("low_coverage_queries")})
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    parts = []
    for r in results:
        parts.append(f"### {r['dataset']} ({r['split']}, {r['queries']} queries)\n")
        parts.append(markdown_table(r["rows"], ["config", "mode", "ndcg@10", "recall@100", "low_coverage_queries"]))
        parts.append("\n```bash\n" + "\n".join(r["commands"]) + "\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=["cmrc2018", "squad_it"])
    ap.add_argument("--queries", type=int, default=None, help="evaluate a seeded subsample of N judged queries")
    ap.add_argument("--bm25-only", action="store_true", help="only the in-memory BM25 rows (no index run, no model)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quality-default-") as tmp:
        results = [run(d, a.queries, Path(tmp), pipeline=not a.bm25_only) for d in a.datasets]
    name = "quality_default_bm25" if a.bm25_only else "quality_default"
    path = write_result(name, {"results": results})
    (RESULTS / f"{name}.md").write_text(markdown(results) + "\n", encoding="utf-8")
    sys.stdout.write(markdown(results) + "\n")
    sys.stderr.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
