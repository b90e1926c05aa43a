"""What a plain ``indexer run`` prints, as a job log sees it (stderr not a terminal): progress lines and
warnings a user must act on, none of Ray's operator dumps, core-worker lines or library notices; and
Ctrl-C ends with one line saying how to resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.conftest import ROOT, sample_docs, write_parquet

NOISE = ("MapBatches", "core_worker", "logging.cc", "Traceback", "will result in indexing errors", "deprecated",
         "DeprecationWarning", "FutureWarning", "Running Dataset", "Execution plan", "raylet", "Loading weights",
         "Progress bars", "Token authentication")
RAY_RESTART_NOTE = "has constructor arguments in the object store and max_restarts > 0"
"""The driver's core worker says this once per restartable actor pool (Ray Data keeps the actors'
constructor in the object store); only a log level that also hides Ray's errors would drop it."""
PROGRESS = re.compile(r"^\[\d+:\d\d\] read [\d,]+/[\d,]+")


def _indexer(tmp: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "indexer"), "run", str(ROOT / "configs" / "local.yaml"),
            "--set", f"corpus.path={tmp / 'corpus'}", "--set", "corpus.sample=false",
            "--set", f"index.dir={tmp / 'index'}", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # a Ray of its own, under a short path: Ray's unix socket paths must stay below 108 bytes
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="rq", dir="/tmp"), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def test_plain_run_prints_progress_and_no_library_chatter(tmp_path):
    write_parquet(tmp_path / "corpus" / "a.parquet", sample_docs(300, 300))
    res = subprocess.run(_indexer(tmp_path, "--progress-every", "0.5", "--set", "encode.block_rows=20"),
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert any(PROGRESS.match(ln) for ln in lines), res.stderr
    noisy = [ln for ln in lines if any(n in ln for n in NOISE) and RAY_RESTART_NOTE not in ln]
    assert not noisy, noisy
    others = [ln for ln in lines if not PROGRESS.match(ln) and RAY_RESTART_NOTE not in ln]
    assert others == [], others
    assert "manifest:" in res.stdout and "indexed 300" in res.stdout


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path):
    write_parquet(tmp_path / "corpus" / "a.parquet", sample_docs(1800, 600), row_group_size=100)
    # SIGINT as a terminal delivers it (a background shell starts children with SIGINT ignored)
    proc = subprocess.Popen(_indexer(tmp_path, "--progress-every", "0.2", "--set", "encode.block_rows=20"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []
    encoding = threading.Event()

    def watch() -> None:
        for ln in proc.stderr:
            seen.append(ln.rstrip("\n"))
            if PROGRESS.match(ln) and "encode" in ln:
                encoding.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        assert encoding.wait(300), "\n".join(seen)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert rc == 130, "\n".join(seen[-30:])
    after = [ln for ln in seen if ln.strip() and not PROGRESS.match(ln) and RAY_RESTART_NOTE not in ln]
    assert not any("Traceback" in ln for ln in seen), "\n".join(seen[-40:])
    assert len(after) == 1 and "run the same command again to resume" in after[0], after
    assert "resum" in after[0]
    assert proc.stdout.read() == ""  # no manifest: the run did not finish
