"""Can pseudo-queries stand in for judged queries when choosing a setting?

For each dataset, ``indexer compare`` ranks the same configurations (model x dimension x
quantization x dense/hybrid) twice: by nDCG@10 on the real qrels, and by nDCG@10 on pseudo-queries
built from the corpus (:mod:`indexer.compare.pseudo`: a sentence taken out of a chunk is the query,
that chunk the relevant document). The agreement of the two rankings is Kendall's tau-b over all
configurations (and within dense-only and hybrid-only rows), whether the top choice is the same,
and the regret: how much real nDCG@10 the pseudo-query choice gives up against the real best.
A third ranking uses pseudo-queries whose sentence is left in its chunk, to show what taking it
out buys.

    .venv/bin/python -m benchmarks.pseudo_agreement scifact squad_it
    .venv/bin/python -m benchmarks.pseudo_agreement scifact --model packaged:all-MiniLM-L6-v2 \
        --model .indexer/models/all-mpnet-base-v2

Outputs ``benchmarks/results/pseudo_agreement.{json,md}`` (one section per dataset). The
comparisons run in this process through :func:`indexer.compare.run_compare` (the command the
``compare`` CLI runs); document vectors are cached under each config's ``index.dir/cache/compare``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, data_dir, markdown_table, write_result

DATASETS = {"scifact": "test", "squad_it": "test"}
DIMS = [768, 384, 256, 128, 64]
QUANTIZATIONS = ["none", "int8", "binary", "binary+int8"]


def _key(r: dict[str, Any]) -> tuple:
    return (r["model"], r["dim"], r["quantization"], r["mode"])


def agreement(real: list[dict[str, Any]], pseudo: list[dict[str, Any]], metric: str = "ndcg@10") -> dict[str, Any]:
    """Kendall's tau-b between the two rankings of the configurations both rank, top-1 agreement and regret."""
    from scipy.stats import kendalltau

    p = {_key(r): r[metric] for r in pseudo}
    keys = [_key(r) for r in real if _key(r) in p]
    r_ = {_key(r): r[metric] for r in real}
    out: dict[str, Any] = {"configurations": len(keys)}
    for name, sub in (("all", keys), ("dense", [k for k in keys if k[3] == "dense"]),
                      ("hybrid", [k for k in keys if k[3] == "hybrid"])):
        if len(sub) < 3:
            continue
        tau, pval = kendalltau([r_[k] for k in sub], [p[k] for k in sub])
        best_real = max(sub, key=lambda k: r_[k])
        best_pseudo = max(sub, key=lambda k: p[k])
        out[name] = {"n": len(sub), "kendall_tau": round(float(tau), 4), "p_value": float(f"{pval:.3g}"),
                     "top_real": list(best_real), "top_pseudo": list(best_pseudo),
                     "same_top": best_real == best_pseudo,
                     "regret_ndcg@10": round(r_[best_real] - r_[best_pseudo], 4)}
    return out


def _model_ranking(rows: list[dict[str, Any]], metric: str = "ndcg@10") -> list[str]:
    """Models by their best row, best first."""
    best: dict[str, float] = {}
    for r in rows:
        best[r["model"]] = max(best.get(r["model"], 0.0), r[metric])
    return sorted(best, key=lambda m: -best[m])


def run_dataset(dataset: str, models: list[str], n_pseudo: int, seed: int, sets: list[str],
                sample_docs: int | None = None) -> dict[str, Any]:
    from indexer.compare import CompareOptions, run_compare
    from indexer.compare.report import jsonable, write_outputs
    from indexer.config import load_config
    from indexer.eval import load_qrels, load_queries

    config = f"configs/{dataset}.yaml"
    cfg = load_config(config, sets)
    d = Path(os.path.relpath(data_dir() / dataset, ROOT))
    queries = load_queries(d / "queries.jsonl")
    qrels = load_qrels(d / "qrels" / f"{DATASETS[dataset]}.tsv")
    common = {"models": models, "dims": DIMS, "quantizations": QUANTIZATIONS, "seed": seed, "bench_seconds": 10.0,
              "sample_docs": sample_docs}
    say = lambda m: sys.stderr.write(f"[{dataset}] {m}\n")  # noqa: E731
    runs: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name, opts in (("qrels", CompareOptions(**common)),
                       ("pseudo", CompareOptions(**common, pseudo_queries=n_pseudo)),
                       ("pseudo_sentence_kept", CompareOptions(**common, pseudo_queries=n_pseudo,
                                                               remove_pseudo_sentence=False))):
        t0 = time.perf_counter()
        res = run_compare(cfg, opts, queries if name == "qrels" else None, qrels if name == "qrels" else None,
                          progress=say)
        seconds[name] = round(time.perf_counter() - t0, 1)
        if name != "pseudo_sentence_kept":
            out = RESULTS / f"compare_{dataset}_{name}"
            write_outputs(res, out.parent, out.name)
        runs[name] = jsonable(res)
    sets_args = " ".join(f"--set {s}" for s in sets)
    model_args = " ".join(f"--model {m}" for m in models)
    grid = f"--dims {','.join(map(str, DIMS))} --quantization {','.join(QUANTIZATIONS)}"
    if sample_docs is not None:
        grid += f" --sample-docs {sample_docs}"
    return {
        "dataset": dataset, "split": DATASETS[dataset], "config": config, "models": models, "sets": sets,
        "pseudo_queries": n_pseudo, "seed": seed, "sample_docs": sample_docs, "seconds": seconds,
        "documents": runs["qrels"]["corpus"]["documents"], "real_queries": runs["qrels"]["queries"]["count"],
        "pseudo": runs["pseudo"]["queries"]["pseudo"],
        "agreement": agreement(runs["qrels"]["rows"], runs["pseudo"]["rows"]),
        "agreement_sentence_kept": agreement(runs["qrels"]["rows"], runs["pseudo_sentence_kept"]["rows"]),
        "model_ranking": {k: _model_ranking(v["rows"]) for k, v in runs.items()},
        "best": {k: {c: v["rows"][v["recommendation"]["best_row"]][c] for c in ("model", "dim", "quantization", "mode",
                                                                                "ndcg@10")}
                 for k, v in runs.items()},
        "recommendation": {k: v["recommendation"]["text"] for k, v in runs.items()},
        "rows": {k: [{c: r[c] for c in ("model", "dim", "quantization", "mode", "ndcg@10")} for r in v["rows"]]
                 for k, v in runs.items()},
        "commands": [
            f".venv/bin/indexer compare {config} {model_args} --queries {d}/queries.jsonl "
            f"--qrels {d}/qrels/{DATASETS[dataset]}.tsv {grid} {sets_args} --out benchmarks/results".strip(),
            f".venv/bin/indexer compare {config} {model_args} --pseudo-queries {n_pseudo} --seed {seed} {grid} "
            f"{sets_args} --out benchmarks/results".strip(),
            "(sentence kept: the same through indexer.compare.run_compare with remove_pseudo_sentence=False)",
            "(both written as benchmarks/results/compare_<dataset>_{qrels,pseudo}.{json,md,png})",
        ],
    }


def markdown(results: list[dict[str, Any]]) -> str:
    out = ["# Pseudo-query agreement", "",
           "Rank the configurations (model x dim x quantization x dense/hybrid) by nDCG@10 on real qrels and on "
           "pseudo-queries; Kendall's tau-b of the two rankings, whether the top choice agrees, and the real nDCG@10 "
           "given up by taking the pseudo-query choice (regret).", ""]
    rows = []
    for res in results:
        for variant, ag in (("sentence removed", res["agreement"]), ("sentence kept", res["agreement_sentence_kept"])):
            for subset in ("all", "dense", "hybrid"):
                a = ag.get(subset)
                if not a:
                    continue
                rows.append({"dataset": res["dataset"], "pseudo-queries": variant, "rows": subset, "n": a["n"],
                             "kendall tau": a["kendall_tau"], "same top": "yes" if a["same_top"] else "no",
                             "top by qrels": " ".join(map(str, a["top_real"])),
                             "top by pseudo": " ".join(map(str, a["top_pseudo"])),
                             "regret nDCG@10": a["regret_ndcg@10"]})
    out += [markdown_table(rows, ["dataset", "pseudo-queries", "rows", "n", "kendall tau", "same top", "top by qrels",
                                  "top by pseudo", "regret nDCG@10"]), ""]
    for res in results:
        out += [f"## {res['dataset']}", "",
                f"{res['documents']:,} documents, {res['real_queries']} judged queries ({res['split']}), "
                f"{res['pseudo']['method']}. Models best first: by qrels {res['model_ranking']['qrels']}, by pseudo "
                f"{res['model_ranking']['pseudo']}.", "",
                f"- qrels: {res['recommendation']['qrels']}", f"- pseudo: {res['recommendation']['pseudo']}", "",
                "Commands:", "", "```", *res["commands"], "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    ap.add_argument("--model", action="append", default=None, help="models to compare (default: packaged MiniLM)")
    ap.add_argument("--pseudo-queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-docs", type=int, default=None,
                    help="documents per comparison: every judged one plus N random distractors (qrels), N random "
                         "ones (pseudo-queries); default the whole corpus")
    ap.add_argument("--set", action="append", default=[], help="config override for every comparison")
    ap.add_argument("--name", default="pseudo_agreement", help="results file name")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    models = args.model or ["packaged:all-MiniLM-L6-v2"]
    results = []
    for d in args.datasets:
        results.append(run_dataset(d, models, args.pseudo_queries, args.seed, args.set, args.sample_docs))
    write_result(args.name, {"datasets": results})
    md = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(md)
    sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
