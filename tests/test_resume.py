"""Resume only what is still true: a run interrupted during encode, then rerun after the corpus changed,
plans again from the live version and succeeds, and so does the run after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from indexer.config import load_config
from indexer.run.pipeline import run
from indexer.search import Searcher
from tests.conftest import ROOT, sample_docs, write_parquet
from tests.test_lifecycle import _ray_procs

pytestmark = pytest.mark.usefixtures("ray_local")

SETS = ["corpus.sample=false", "encode.block_rows=16", "dense.dim=128"]


def _sets(tmp: Path) -> list[str]:
    return [f"corpus.path={tmp / 'corpus'}", f"index.dir={tmp / 'index'}", *SETS]


def _write(tmp: Path, files: list[list[dict]]) -> None:
    for old in (tmp / "corpus").glob("*.parquet"):
        old.unlink()
    for n, rows in enumerate(files):
        write_parquet(tmp / "corpus" / f"f{n}.parquet", rows, row_group_size=10)


def _interrupt_during_encode(tmp: Path) -> dict:
    """Start ``indexer run`` and SIGKILL it (and its local Ray) once it has written a few blocks."""
    args = [sys.executable, "-m", "indexer.cli", "run", str(ROOT / "configs" / "local.yaml"), "--json"]
    for s in _sets(tmp):
        args += ["--set", s]
    before = _ray_procs()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env, cwd=ROOT)
    written = tmp / "index" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(written.glob("*/written/*.parquet"))) < 2:
        assert proc.poll() is None, "the run finished before it could be interrupted"
        time.sleep(0.1)
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    procs = []
    for pid in _ray_procs() - before:  # its local Ray dies with it (the embedded stores' files are free)
        try:
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=60)
    state = json.loads((tmp / "index" / "state" / "chunks.json").read_text())
    assert state["status"] == "running" and state["mode"] == "incremental"
    return state


def test_interrupted_run_on_a_changed_corpus_plans_again(tmp_path):
    docs = sample_docs(400, 160)
    files = [docs[i:i + 80] for i in range(0, 400, 80)]
    _write(tmp_path, files)
    cfg = load_config(ROOT / "configs" / "local.yaml", _sets(tmp_path))
    m1 = run(cfg)
    assert m1["counts"]["indexed"] == 400

    # Every chunk changes; the run is killed while it encodes.
    revised = [[{**r, "text": r["text"] + " (revised)"} for r in f] for f in files]
    _write(tmp_path, revised)
    state = _interrupt_during_encode(tmp_path)

    # Then the corpus changes again: the last file is gone, the fourth is back to its live content.
    _write(tmp_path, revised[:3] + [files[3]])
    m2 = run(cfg)
    c = m2["counts"]
    assert m2["status"] == "succeeded" and not m2["resumed"] and m2["run_id"] != state["run_id"]
    assert m2["discarded_attempt"]["run_id"] == state["run_id"]
    assert "1 removed" in m2["discarded_attempt"]["reason"]  # the others were rewritten: their mtimes changed
    # The attempt was undone first (the live version as before it), then the run planned again: the fourth
    # file is unchanged against the live version, the removed file's chunks are deleted.
    assert m2["discarded_attempt"]["undone"]
    assert (c["input"], c["deleted"], c["indexed"], c["vector_store"], c["text_store"]) == (320, 80, 320, 320, 320)
    assert (c["changed"], c["unchanged"], c["new"]) == (240, 80, 0)
    assert not (tmp_path / "index" / "runs" / state["run_id"]).exists()

    s = Searcher(cfg)
    try:
        got = s.text.retrieve(s.collection, [files[0][0]["id"], files[3][0]["id"], files[4][0]["id"]])
        assert got[files[0][0]["id"]]["text"].endswith("(revised)")
        assert got[files[3][0]["id"]]["text"] == files[3][0]["text"]
        assert files[4][0]["id"] not in got
    finally:
        s.close()
    hashes = pq.read_table(tmp_path / "index" / "versions" / m2["versions"]["built"] / "hashes" / "part-0.parquet")
    assert sorted(hashes.column("id").to_pylist()) == sorted(r["id"] for f in files[:4] for r in f)

    m3 = run(cfg)
    c = m3["counts"]
    assert m3["status"] == "succeeded", m3["failures"]
    assert (c["unchanged"], c["encoded"], c["deleted"], c["indexed"]) == (320, 0, 0, 320)
