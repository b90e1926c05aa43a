"""Shared helpers for benchmarks: locate ../shared/data, convert BEIR corpora to Parquet on the fly,
print markdown tables and write JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def data_dir() -> Path:
    """The shared datasets folder (``INDEXER_DATA`` or ``../shared/data`` next to the repo)."""
    env = os.environ.get("INDEXER_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data", ROOT / ".." / "shared" / "data"]:
        if cand.exists():
            return cand.resolve()
    raise SystemExit("datasets not found: set INDEXER_DATA to the folder holding scifact/, cmrc2018/, squad_it/")


def beir_to_parquet(dataset: str, out_dir: Path, limit: int | None = None, row_group_size: int = 1024) -> Path:
    """Convert ``<data>/<dataset>/corpus.jsonl`` to Parquet (id, title, text) under out_dir."""
    src = data_dir() / dataset / "corpus.jsonl"
    rows = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                rows.append({"id": str(o["_id"]), "title": o.get("title") or "", "text": o.get("text") or ""})
                if limit and len(rows) >= limit:
                    break
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dataset}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def beir_texts(dataset: str, limit: int | None = None) -> list[str]:
    """Documents as the pipeline encodes them: ``title + " " + text`` when a title exists."""
    out = []
    with open(data_dir() / dataset / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                t = o.get("title") or ""
                out.append(f"{t} {o.get('text') or ''}" if t else (o.get("text") or ""))
                if limit and len(out) >= limit:
                    break
    return out


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def markdown_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    rows = list(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()} | payload
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def indexer_command() -> list[str]:
    """The ``indexer`` console script of this venv (``python -m indexer.cli`` without one)."""
    exe = Path(sys.executable).with_name("indexer")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "indexer.cli"]


def indexer_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 3600) -> tuple[float, dict[str, Any]]:
    """Run ``indexer ... --json`` in a fresh process; returns (wall seconds, parsed stdout)."""
    cmd = [*indexer_command(), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr[-5000:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, json.loads(proc.stdout)
