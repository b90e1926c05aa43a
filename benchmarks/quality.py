"""Retrieval quality on the shared BEIR-format datasets, next to published numbers.

    .venv/bin/python -m benchmarks.quality convert scifact cmrc2018 squad_it   # corpus.jsonl -> Parquet
    .venv/bin/python -m benchmarks.quality run scifact cmrc2018 squad_it       # index (if needed), eval, sweep

``convert`` writes ``.indexer/data/<dataset>.parquet`` (ignored by git; the data is never committed).
``run`` indexes with ``configs/<dataset>.yaml`` when there is no live index (or with ``--reindex``),
then runs the same CLI commands a user would and records them:

* ``indexer eval`` of every mode on the evaluation split,
* ``indexer eval --sweep`` of dense storage settings (dims x quantization) and fusion settings,
  re-using one set of document vectors read back from the float index,
* for SciFact, the fusion grid on the *train* qrels that chose the defaults (never tuned on test).
  For CMRC 2018 and SQuAD-it (one split each), the fusion grid runs on a fixed tuning subset of
  the queries (``--tune-share``, chosen by a hash of the query id) and the choice is reported on
  the held-out rest as well as on all queries.

Outputs: ``benchmarks/results/quality_<dataset>.{json,md}`` and the sweep's
``quality_<dataset>_sweep.{json,md,png}`` (plus ``quality_<dataset>_tune.{json,md,png}``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, beir_to_parquet, data_dir, indexer_cli, markdown_table, write_result

DATA_OUT = ROOT / ".indexer" / "data"

DATASETS: dict[str, dict[str, Any]] = {
    "scifact": {
        "split": "test", "tune_split": "train",
        "anchors": {"bm25": [("BM25 multifield (Anserini, ~ BEIR ES)", 0.6647), ("BM25 flat (Pyserini)", 0.6789),
                             ("bm25s (MTEB baseline)", 0.6874)],
                    "dense": [("all-MiniLM-L6-v2 (MTEB)", 0.6451)]},
        "sweep": ["dims=384,256,128,64", "quantization=none,int8,uint8,binary,binary+int8,binary+float",
                  "oversample=2,4,8", "fusion=minmax,rrf"],
    },
    "cmrc2018": {"split": "dev", "tune_split": None, "anchors": {"bm25": [("char-bigram BM25 (SOURCE.md)", 0.984)]},
                 "sweep": ["dims=384,256", "quantization=none,int8,binary+int8"]},
    "squad_it": {"split": "test", "tune_split": None, "anchors": {"bm25": [("no-stemming BM25 (SOURCE.md)", 0.805)]},
                 "sweep": ["dims=384,256", "quantization=none,int8,binary+int8"]},
}

FUSION_GRID = ["fusion=rrf,weighted_rrf,dbsf,minmax", "rrf_k=10,30,60,100", "hybrid=dense+sparse+bm25,dense+bm25",
               "w_dense=0.5,1,1.5,2", "w_sparse=0.5,1", "candidates=50,100,200"]
"""Fusion settings compared on tuning queries (all from one set of per-mode lists)."""

MULTILINGUAL_GRID = ["fusion=rrf,weighted_rrf,dbsf,minmax", "rrf_k=10,60",
                     "hybrid=dense+sparse+bm25,dense+bm25,sparse+bm25", "w_dense=0.1,0.25,0.5,1", "w_sparse=0.25,0.5,1"]


def _cmd(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (".venv/bin/indexer", *args))


def convert(datasets: list[str]) -> None:
    for d in datasets:
        path = beir_to_parquet(d, DATA_OUT)
        sys.stderr.write(f"{d}: {path}\n")


def _live(config: str) -> dict[str, Any] | None:
    """The run manifest of the live index's version, or None when there is no live index."""
    from indexer.config import load_config
    from indexer.layout import Layout, list_runs
    from indexer.search import SearchError, Searcher
    from indexer.storage import Storage

    cfg = load_config(config)
    try:
        s = Searcher(cfg)
    except (SearchError, KeyError, FileNotFoundError):
        return None
    s.close()
    storage, layout = Storage(cfg.corpus.s3), Layout(cfg.index.dir)
    for run_id in reversed(list_runs(storage, layout)):
        m = storage.read_json(layout.run_manifest(run_id))
        if m.get("run_id") == s.version.get("run_id"):
            return m
    return {"run_id": s.version.get("run_id")}


def _split_qrels(src: Path, share: float, out_dir: Path) -> tuple[Path, Path]:
    """Deterministic tuning / held-out split of a qrels file by a hash of the query id."""
    lines = src.read_text(encoding="utf-8").splitlines()
    head, body = lines[0], [x for x in lines[1:] if x.strip()]
    tune, rest = [head], [head]
    for line in body:
        qid = line.split("\t", 1)[0]
        h = int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (tune if h < share else rest).append(line)
    out_dir.mkdir(parents=True, exist_ok=True)
    a, b = out_dir / f"tune_{src.name}", out_dir / f"holdout_{src.name}"
    a.write_text("\n".join(tune) + "\n")
    b.write_text("\n".join(rest) + "\n")
    return a, b


def _copy_sweep(out_dir: Path, name: str) -> dict[str, str]:
    paths = {}
    for ext in ("json", "md", "png"):
        dst = RESULTS / f"{name}.{ext}"
        shutil.copyfile(out_dir / f"sweep.{ext}", dst)
        paths[ext] = str(dst.relative_to(ROOT))
    return paths


def _best(sweep: dict[str, Any], k: int = 10) -> dict[str, Any]:
    hyb = [r for r in sweep["rows"] if r["mode"] == "hybrid"]
    return max(hyb, key=lambda r: r[f"ndcg@{k}"]) if hyb else {}


def run(dataset: str, reindex: bool, sweep: bool, tune_share: float, sets: list[str]) -> dict[str, Any]:
    spec = DATASETS[dataset]
    config = f"configs/{dataset}.yaml"
    d = Path(os.path.relpath(data_dir() / dataset, ROOT))  # commands run from the repository root
    queries, qrels = str(d / "queries.jsonl"), str(d / "qrels" / f"{spec['split']}.tsv")
    set_args = [x for s in sets for x in ("--set", s)]
    commands: list[str] = []
    if not (DATA_OUT / f"{dataset}.parquet").exists():
        convert([dataset])
    commands.append(f".venv/bin/python -m benchmarks.quality convert {dataset}")
    args = ["run", config, "--json", "--full", *set_args]
    commands.append(_cmd(*args))
    manifest = None if reindex else _live(config)
    reused = manifest is not None
    if manifest is None:
        _, manifest = indexer_cli(*args, timeout=6 * 3600)
    result: dict[str, Any] = {"dataset": dataset, "split": spec["split"], "config": config, "sets": sets,
                              "index": {"reused_live_index": reused, "run_id": manifest.get("run_id"),
                                        "seconds": manifest.get("seconds"), "counts": manifest.get("counts")}}

    args = ["eval", config, "--queries", queries, "--qrels", qrels, "--json", *set_args]
    commands.append(_cmd(*args))
    _, modes = indexer_cli(*args)
    result["modes"] = modes["modes"]
    result["query_encode_ms_mean"] = modes.get("query_encode_ms_mean")
    if modes["modes"].get("hybrid", {}).get("low_coverage_queries"):
        args = ["eval", config, "--queries", queries, "--qrels", qrels, "--json", "--modes", "hybrid", *set_args,
                "--set", "search.min_vocab_coverage=0"]
        commands.append(_cmd(*args))
        _, off = indexer_cli(*args)
        result["hybrid_without_coverage_guard"] = off["modes"]["hybrid"]

    tmp = Path(tempfile.mkdtemp(prefix=f"quality-{dataset}-"))
    if sweep:
        out = tmp / "sweep"
        args = ["eval", config, "--queries", queries, "--qrels", qrels, "--json", "--out", str(out), *set_args,
                *[x for s in spec["sweep"] for x in ("--sweep", s)]]
        commands.append(_cmd(*args).replace(str(out), "OUT"))
        _, res = indexer_cli(*args)
        result["sweep"] = {"files": _copy_sweep(out, f"quality_{dataset}_sweep"), "rows": res["rows"]}

        grid = FUSION_GRID if spec["tune_split"] else MULTILINGUAL_GRID
        if spec["tune_split"]:
            tune_qrels = str(d / "qrels" / f"{spec['tune_split']}.tsv")
            holdout = None
        else:
            t, h = _split_qrels(Path(qrels), tune_share, tmp / "qrels")
            tune_qrels, holdout = str(t), str(h)
        out = tmp / "tune"
        # With low-coverage queries the grid runs with the guard off: it shows what fusing them would give.
        guard_off = ["--set", "search.min_vocab_coverage=0"] if "hybrid_without_coverage_guard" in result else []
        args = ["eval", config, "--queries", queries, "--qrels", tune_qrels, "--json", "--out", str(out),
                *set_args, *guard_off, *[x for s in grid for x in ("--sweep", s)]]
        commands.append(_cmd(*args).replace(str(out), "OUT").replace(str(tmp / "qrels"), "SPLIT"))
        _, tune = indexer_cli(*args)
        best = _best(tune)
        result["tuning"] = {"qrels": spec["tune_split"] or f"hash split, {tune_share:.0%} of {spec['split']}",
                            "coverage_guard": not guard_off,
                            "single_modes": {r["mode"]: r["ndcg@10"] for r in tune["rows"] if r["mode"] != "hybrid"
                                             and r.get("quantization") in (None, "none")},
                            "queries": tune["queries"], "best": best, "defaults": tune["defaults"],
                            "files": _copy_sweep(out, f"quality_{dataset}_tune")}
        if holdout:
            args = ["eval", config, "--queries", queries, "--qrels", holdout, "--json", *set_args]
            _, held = indexer_cli(*args)
            result["holdout"] = {"queries": held["queries"], "modes": held["modes"]}
    shutil.rmtree(tmp, ignore_errors=True)
    result["commands"] = commands
    result["anchors"] = {m: [{"name": n, "ndcg@10": v} for n, v in a] for m, a in spec["anchors"].items()}
    return result


def markdown(result: dict[str, Any]) -> str:
    rows = []
    anchors = result["anchors"]
    for mode, r in result["modes"].items():
        pub = "; ".join(f"{a['name']} {a['ndcg@10']:.4f}" for a in anchors.get(mode, []))
        rows.append({"mode": mode, "ndcg@10": r["ndcg@10"], "recall@100": r["recall@100"], "mrr@10": r["mrr@10"],
                     "p50 ms": r["latency_ms_p50"], "p95 ms": r["latency_ms_p95"], "published nDCG@10": pub,
                     "fused": "+".join(r.get("fused", [])) + (
                         f" ({r['low_coverage_queries']} queries below min_vocab_coverage: bm25 only)"
                         if r.get("low_coverage_queries") else ""), "fusion": r.get("fusion", "")})
    cols = ["mode", "ndcg@10", "recall@100", "mrr@10", "p50 ms", "p95 ms", "fusion", "fused", "published nDCG@10"]
    out = [f"## {result['dataset']} ({result['split']}, {next(iter(result['modes'].values()))['queries']} queries)",
           "", markdown_table(rows, cols), ""]
    if "hybrid_without_coverage_guard" in result:
        h = result["hybrid_without_coverage_guard"]
        out += [f"Hybrid with the vocabulary-coverage guard off (`--set search.min_vocab_coverage=0`, every query fuses "
                f"all modes): nDCG@10 {h['ndcg@10']:.4f}, recall@100 {h['recall@100']:.4f}.", ""]
    if "holdout" in result:
        out += [f"Held-out queries only ({result['holdout']['queries']}, not used for tuning):", "",
                markdown_table([{"mode": m, "ndcg@10": r["ndcg@10"], "recall@100": r["recall@100"]}
                                for m, r in result["holdout"]["modes"].items()], ["mode", "ndcg@10", "recall@100"]), ""]
    if "tuning" in result:
        t, b = result["tuning"], result["tuning"]["best"]
        single = ", ".join(f"{m} {v:.4f}" for m, v in t.get("single_modes", {}).items())
        guard = "" if t.get("coverage_guard", True) else " (coverage guard off, so every query fuses all modes)"
        out += [f"Fusion grid on {t['qrels']} ({t['queries']} queries{guard}; single modes: {single}): "
                f"best nDCG@10 {b.get('ndcg@10', 0):.4f} with "
                f"{b.get('fusion')} of {'+'.join(b.get('fused', []))}, weights "
                f"{ {m: b['weights'][m] for m in b.get('fused', [])} }, rrf_k {b.get('rrf_k')}, candidates "
                f"{b.get('candidates')}; the config uses {t['defaults']}. Grid: `{t['files']['md']}`.", ""]
    if "sweep" in result:
        out += [f"Sweep: `{result['sweep']['files']['md']}` (plot `{result['sweep']['files']['png']}`)", ""]
    out += ["Commands:", "", "```", *result["commands"], "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="BEIR corpus.jsonl -> .indexer/data/<dataset>.parquet")
    c.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    r = sub.add_parser("run", help="index (if needed), evaluate every mode, sweep, write results")
    r.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    r.add_argument("--reindex", action="store_true", help="rebuild the index even when one is live")
    r.add_argument("--no-sweep", action="store_true", help="only evaluate the modes")
    r.add_argument("--tune-share", type=float, default=0.3, help="share of queries used for tuning (no train split)")
    r.add_argument("--set", action="append", default=[], help="config override passed to every command")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    if args.cmd == "convert":
        convert(args.datasets)
        return
    for d in args.datasets:
        res = run(d, args.reindex, not args.no_sweep, args.tune_share, args.set)
        name = f"quality_{d}"
        write_result(name, res)
        md = markdown(res)
        (RESULTS / f"{name}.md").write_text(md)
        sys.stdout.write(md + "\n")


if __name__ == "__main__":
    main()
