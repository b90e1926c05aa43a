"""The whole indexing job vs a bare ``SentenceTransformer.encode`` and a fastembed encode of the same
texts, side by side.

    .venv/bin/python benchmarks/cpu_pipeline.py [--dataset scifact] [--limit N] [--repeat 1]

The job runs as ``indexer run --json`` in a fresh process (Ray start-up, reading, validation,
tokenization, encoding, both stores, verification and manifest all included) on SciFact converted
to Parquet on the fly (title + text). The bare encode is ``model.encode(texts)`` (fp32) with the
model already loaded (its load time is reported apart). The fastembed encode
(``benchmarks/fastembed_ref.py``: its own venv ``.venv-fastembed``, the same model exported to ONNX,
``TextEmbedding.embed`` with its default batch of 256 texts, ``--threads`` threads) is timed the same
way, model load apart; it is skipped, with a line saying so, when that venv is missing. Target on a
2-core CPU: the whole default job takes at most half the bare encode (``job / bare <= 0.5``) and
less than the fastembed encode (``job / fastembed < 1``). Prints a markdown table, writes
``benchmarks/results/cpu_pipeline.json`` (per-repeat rows; medians and the target in ``summary``).
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
from benchmarks.fastembed_ref import BATCH_SIZE, FastembedUnavailable, fastembed_run  # noqa: E402

TARGET_JOB_OVER_BARE = 0.5  # the whole job: at most half the bare fp32 encode
TARGET_JOB_OVER_FASTEMBED = 1.0  # and faster than fastembed


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
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="fastembed's threads")
    ap.add_argument("--fastembed-batch-size", type=int, default=BATCH_SIZE, help="texts per fastembed batch")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts = beir_texts(args.dataset, args.limit)
    rows, fe_info = [], {}
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
            fe = None
            if "skipped" not in fe_info:
                try:
                    _, fe_info = fastembed_run(texts, args.threads, args.fastembed_batch_size)
                    fe = fe_info["encode_s"]
                except FastembedUnavailable as e:
                    print(e)
                    fe_info = {"skipped": str(e)}
            st = manifest["stages"]
            rows.append({
                "repeat": rep,
                "docs": len(texts),
                "bare_encode_s": round(bare, 2),
                "bare_model_load_s": round(load, 2),
                "fastembed_encode_s": round(fe, 2) if fe is not None else None,
                "fastembed_load_s": round(fe_info["load_s"], 2) if fe is not None else None,
                "job_wall_s": round(job_wall, 2),
                "job_pipeline_s": st.get("pipeline", {}).get("seconds"),
                "ray_init_s": st.get("ray_init", {}).get("seconds"),
                "encode_busy_s": st.get("encode", {}).get("busy_seconds"),
                "write_busy_s": st.get("write", {}).get("busy_seconds"),
                "ratio_job_over_bare": round(job_wall / bare, 3),
                "ratio_job_over_fastembed": round(job_wall / fe, 3) if fe is not None else None,
                "ratio_bare_over_job": round(bare / job_wall, 3),
                "indexed": manifest["counts"]["indexed"],
                "padding_share": st.get("encode", {}).get("padding_share"),
            })
    cols = list(rows[0])
    print(markdown_table(rows, cols))
    med = {k: statistics.median(r[k] for r in rows) if all(r[k] is not None for r in rows) else None
           for k in ("job_wall_s", "bare_encode_s", "fastembed_encode_s", "ratio_job_over_bare",
                     "ratio_job_over_fastembed", "ratio_bare_over_job")}
    over_bare, over_fe = med["ratio_job_over_bare"], med["ratio_job_over_fastembed"]
    summary = {
        "repeats": len(rows),
        **{f"{k}_median": v for k, v in med.items()},
        "target": {"ratio_job_over_bare_max": TARGET_JOB_OVER_BARE,
                   "ratio_job_over_fastembed_below": TARGET_JOB_OVER_FASTEMBED},
        "meets_target_bare": over_bare <= TARGET_JOB_OVER_BARE,
        "meets_target_fastembed": over_fe < TARGET_JOB_OVER_FASTEMBED if over_fe is not None else None,
        "fastembed": fe_info,
    }
    summary["meets_target"] = (summary["meets_target_bare"] and summary["meets_target_fastembed"]
                               if over_fe is not None else None)  # None: no fastembed row to compare with
    print(f"\nwhole job / bare fp32 encode, median of {len(rows)}: {over_bare:.3f} (target <= {TARGET_JOB_OVER_BARE})")
    print("whole job / fastembed encode, median of {}: {} (target < {})".format(
        len(rows), f"{over_fe:.3f}" if over_fe is not None else "skipped", TARGET_JOB_OVER_FASTEMBED))
    path = write_result("cpu_pipeline", {"rows": rows, "summary": summary, "overrides": args.overrides}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
