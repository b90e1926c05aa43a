"""The whole indexing job vs a bare ``SentenceTransformer.encode`` of the same texts, side by side.

    .venv/bin/python benchmarks/cpu_pipeline.py [--dataset scifact] [--limit N] [--repeat 1]

The job runs as ``indexer run --json`` in a fresh process (Ray start-up, reading, validation,
tokenization, encoding, both stores, verification and manifest all included) on SciFact converted
to Parquet on the fly (title + text). The bare encode is ``model.encode(texts)`` with the model
already loaded (its load time is reported apart). Target on a 2-core CPU: job wall time <= bare
encode / 0.9, i.e. ``ratio = bare / job >= 0.9``. Prints a markdown table, writes
``benchmarks/results/cpu_pipeline.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import beir_texts, beir_to_parquet, indexer_cli, markdown_table, write_result  # noqa: E402


def bare_encode(texts: list[str]) -> tuple[float, float]:
    from sentence_transformers import SentenceTransformer

    from indexer.encoders.models import resolve_model

    t0 = time.perf_counter()
    model = SentenceTransformer(resolve_model("packaged:all-MiniLM-L6-v2"), device="cpu")
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    return load, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--limit", type=int, default=None, help="first N documents only")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts = beir_texts(args.dataset, args.limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = beir_to_parquet(args.dataset, Path(tmp) / "corpus", args.limit)
        for rep in range(args.repeat):
            index_dir = Path(tmp) / f"index{rep}"
            job_wall, manifest = indexer_cli(
                "run", str(Path(__file__).resolve().parents[1] / "configs" / "local.yaml"), "--json",
                "--set", f"corpus.path={corpus}", "--set", "corpus.sample=false",
                "--set", f"index.dir={index_dir}", *sum((["--set", o] for o in args.overrides), []),
            )
            load, bare = bare_encode(texts)
            st = manifest["stages"]
            rows.append({
                "repeat": rep,
                "docs": len(texts),
                "bare_encode_s": round(bare, 2),
                "bare_model_load_s": round(load, 2),
                "job_wall_s": round(job_wall, 2),
                "job_pipeline_s": st.get("pipeline", {}).get("seconds"),
                "ray_init_s": st.get("ray_init", {}).get("seconds"),
                "encode_busy_s": st.get("encode", {}).get("busy_seconds"),
                "write_busy_s": st.get("write", {}).get("busy_seconds"),
                "ratio_bare_over_job": round(bare / job_wall, 3),
                "indexed": manifest["counts"]["indexed"],
                "padding_share": st.get("encode", {}).get("padding_share"),
            })
    cols = list(rows[0])
    print(markdown_table(rows, cols))
    ratios = [r["ratio_bare_over_job"] for r in rows]
    summary = {"ratio_median": statistics.median(ratios), "target": 0.9,
               "meets_target": statistics.median(ratios) >= 0.9}
    print(f"\nratio (bare encode / whole job), median of {len(rows)}: {summary['ratio_median']:.3f} (target >= 0.9)")
    path = write_result("cpu_pipeline", {"rows": rows, "summary": summary, "overrides": args.overrides}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
