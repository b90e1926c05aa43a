"""Scheduled re-indexing on real Ray: incremental runs, deletes, the verification gate, and the faults
a nightly job must survive (encoder actor killed, transient sink failures, driver killed)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.config import load_config
from indexer.run.pipeline import RunFailed, run
from indexer.run.plan import vector_spec
from indexer.sample_corpus import stdlib_chunks
from indexer.search import Searcher
from indexer.stores.base import StoreTarget, WriteResult
from indexer.stores.factory import text_store_factory, vector_store_factory
from tests.conftest import ROOT, write_parquet

pytestmark = pytest.mark.usefixtures("ray_local")

_DOCS = None


def docs(n: int) -> list[dict]:
    global _DOCS
    if _DOCS is None:
        _DOCS = [{"id": c["id"], "title": c["title"], "text": c["text"][:160], "module": c["module"]} for c in stdlib_chunks()]
    assert len(_DOCS) >= n
    return [dict(d) for d in _DOCS[:n]]


def cfg_for(tmp: Path, *extra: str):
    return load_config(ROOT / "configs" / "local.yaml",
                       [f"corpus.path={tmp / 'corpus'}", "corpus.sample=false", f"index.dir={tmp / 'index'}",
                        "encode.block_rows=50", "dense.dim=128", *extra])


def test_incremental_change_remove_add(tmp_path):
    rows = docs(1000)
    write_parquet(tmp_path / "corpus" / "part.parquet", rows, row_group_size=250)
    cfg = cfg_for(tmp_path)
    m1 = run(cfg)
    assert (m1["mode"], m1["counts"]["encoded"], m1["counts"]["indexed"]) == ("full", 1000, 1000)

    changed = rows[:50]
    for r in changed:
        r["text"] = r["text"] + " (revised)"
    kept = rows[:900]  # rows 900..999 change nothing but 950..999 are removed below
    removed_ids = [r["id"] for r in rows[950:]]
    added = [{"id": f"new.{i}", "title": "brand new", "text": f"freshly added chunk number {i} about zebras",
              "module": "new"} for i in range(50)]
    write_parquet(tmp_path / "corpus" / "part.parquet", kept + rows[900:950] + added, row_group_size=250)
    m2 = run(cfg)
    c = m2["counts"]
    assert m2["mode"] == "incremental"
    assert (c["encoded"], c["deleted"], c["unchanged"], c["indexed"]) == (100, 50, 900, 1000)
    assert c["input"] == c["indexed"] + c["rejected"]

    s = Searcher(cfg)
    try:
        assert s.search("freshly added chunk number 7 about zebras", mode="bm25", k=1)[0].id == "new.7"
        got = s.text.retrieve(s.collection, [removed_ids[0], changed[0]["id"]])
        assert removed_ids[0] not in got and got[changed[0]["id"]]["text"].endswith("(revised)")
        assert s.vectors.count(s.collection) == 1000
    finally:
        s.close()

    m3 = run(cfg)
    assert (m3["counts"]["encoded"], m3["counts"]["deleted"], m3["counts"]["unchanged"]) == (0, 0, 1000)


def test_vector_setting_change_forces_full_rebuild(tmp_path):
    write_parquet(tmp_path / "corpus" / "p.parquet", docs(60))
    run(cfg_for(tmp_path))
    m = run(cfg_for(tmp_path, "dense.quantization=int8"))
    assert m["mode"] == "full" and "dense.quantization" in m["mode_reason"] and m["alias_moved"]
    assert m["dense"]["calibration"]["kind"] == "int8"


# -- faults ---------------------------------------------------------------------------------

class WrappedStore:
    """Wraps a real store; subclasses change what a write does."""

    single_writer = True  # wraps the embedded engines: written through one actor

    def __init__(self, inner_factory, marker_dir: str):
        self.inner = inner_factory()
        self.marker_dir = marker_dir

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FailFirstUpsert:
    """A Qdrant client whose first upsert request of every batch of points answers HTTP 503."""

    def __init__(self, client, marker_dir: str):
        self.client = client
        self.marker_dir = marker_dir

    def upsert(self, collection_name, points, **kw):
        from qdrant_client.http.exceptions import UnexpectedResponse

        marker = Path(self.marker_dir, str(points[0].id))
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("failed once")
            raise UnexpectedResponse(503, "Service Unavailable", b'{"status":{"error":"injected"}}', {})
        return self.client.upsert(collection_name, points, **kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


def _flaky_qdrant(inner_factory, marker_dir: str):
    store = inner_factory()
    store.client = FailFirstUpsert(store.client, marker_dir)
    return store


class DroppingStore(WrappedStore):
    """Acknowledges every write but silently loses one chunk per block: an inconsistent store."""

    def upsert(self, collection, batch):
        keep = {k: v[1:] for k, v in batch.items()}
        self.inner.upsert(collection, keep)
        return WriteResult(written=len(batch["id"]))


class RefusingStore(WrappedStore):
    """Refuses chunks whose id ends in "s" per item (like a mapping error): terminal, not retried."""

    def upsert(self, collection, batch):
        bad = np.array([str(i).endswith("s") for i in batch["id"]], dtype=bool)
        res = self.inner.upsert(collection, {k: v[~bad] for k, v in batch.items()})
        res.rejects.extend((str(i), "mapper_parsing_exception: injected") for i in batch["id"][bad])
        return res


class CrashingStore(WrappedStore):
    """Writes the first ``limit`` blocks, then fails every write for good: the run dies mid-encode, as
    when its job is killed, and leaves its records for the rerun to resume from."""

    limit = 4  # of the 8 blocks (one per 40-row fragment) the write gets

    def upsert(self, collection, batch):
        done = Path(self.marker_dir)
        done.mkdir(parents=True, exist_ok=True)
        if len(list(done.iterdir())) >= self.limit:
            raise RuntimeError("injected crash")
        res = self.inner.upsert(collection, batch)
        (done / str(batch["id"][0]).replace("/", "_")).write_text("written")
        return res


def _factory(cls, inner, marker):
    return StoreTarget(functools.partial(cls, inner, marker), inner.single_writer)


@pytest.fixture()
def by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_transient_sink_failures_are_retried(tmp_path, by_value):
    """Every first write request fails with a 503: the store's client retries it, and nothing else does."""
    write_parquet(tmp_path / "corpus" / "p.parquet", docs(300), row_group_size=60)
    cfg = cfg_for(tmp_path, "encode.block_rows=20", "vector_store.kind=qdrant_local",
                  "vector_store.qdrant.initial_backoff=0.01")
    spec = vector_spec(cfg, 128)
    inner = vector_store_factory(cfg, spec)
    vf = StoreTarget(functools.partial(_flaky_qdrant, inner, str(tmp_path / "markers_v")), inner.single_writer)
    m = run(cfg, store_factories=(vf, text_store_factory(cfg)))
    assert len(list((tmp_path / "markers_v").iterdir())) > 0  # failures did happen
    c = m["counts"]
    assert (c["indexed"], c["encoded"], c["vector_store"], c["text_store"]) == (300, 300, 300, 300)


def test_store_refusal_is_a_reject_in_both_stores(tmp_path, by_value):
    rows = docs(120)
    write_parquet(tmp_path / "corpus" / "p.parquet", rows)
    cfg = cfg_for(tmp_path)
    spec = vector_spec(cfg, 128)
    tf = _factory(RefusingStore, text_store_factory(cfg), str(tmp_path / "m"))
    m = run(cfg, store_factories=(vector_store_factory(cfg, spec), tf))
    refused = sorted(d["id"] for d in rows if d["id"].endswith("s"))
    assert refused
    c = m["counts"]
    assert (c["input"], c["rejected"], c["indexed"]) == (120, len(refused), 120 - len(refused))
    assert c["vector_store"] == c["text_store"] == 120 - len(refused)
    assert m["alias_moved"]
    import pyarrow.parquet as pq

    rej = pq.read_table(m["rejects_path"]).to_pylist()
    assert sorted(r["id"] for r in rej) == refused
    by_id = {d["id"]: n for n, d in enumerate(rows)}
    assert all(r["row"] == by_id[r["id"]] and r["file"].endswith("p.parquet") for r in rej)
    assert all("mapper_parsing_exception" in r["reason"] for r in rej)
    s = Searcher(cfg)
    try:
        assert s.vectors.retrieve(s.collection, refused) == {}
    finally:
        s.close()


def test_resumed_run_counts_tokens_and_truncated_of_every_attempt(tmp_path, by_value):
    """A run that dies mid-encode and is rerun reports the tokens and truncated rows of the whole run
    (those of an uninterrupted run of the same corpus), not only those of its last attempt."""
    rows = docs(300)
    for sub in ("whole", "resumed"):
        write_parquet(tmp_path / sub / "corpus" / "p.parquet", rows, row_group_size=40)
    extra = ("encode.block_rows=20", "dense.max_seq_length=32")  # short limit: many rows truncated
    whole = run(cfg_for(tmp_path / "whole", *extra))["counts"]
    assert 0 < whole["truncated"] < 300 and whole["tokens"] > 0

    cfg = cfg_for(tmp_path / "resumed", *extra)
    spec = vector_spec(cfg, 128)
    vf = _factory(CrashingStore, vector_store_factory(cfg, spec), str(tmp_path / "blocks"))
    with pytest.raises(Exception, match="injected crash"):
        run(cfg, store_factories=(vf, text_store_factory(cfg)))
    assert len(list((tmp_path / "blocks").iterdir())) >= CrashingStore.limit
    m = run(cfg)
    c = m["counts"]
    assert m["resumed"] and m["skipped_fragments"] >= 1  # the first attempt's fragments were not encoded again
    assert m["stages"]["tokenize"]["rows"] < 300
    assert (c["indexed"], c["encoded"]) == (300, 300)
    assert (c["tokens"], c["truncated"]) == (whole["tokens"], whole["truncated"])


def test_gate_blocks_inconsistent_store(tmp_path, by_value):
    write_parquet(tmp_path / "corpus" / "p.parquet", docs(80))
    cfg = cfg_for(tmp_path)
    first = run(cfg)
    spec = vector_spec(cfg, 128)
    tf = _factory(DroppingStore, text_store_factory(cfg), str(tmp_path / "m"))
    with pytest.raises(RunFailed) as e:
        run(cfg, full=True, store_factories=(vector_store_factory(cfg, spec), tf))
    m = e.value.manifest
    assert not m["alias_moved"] and m["status"] == "failed"
    assert any(f.startswith("counts:") for f in m["failures"])
    assert "text store" in str(e.value)
    s = Searcher(cfg)
    try:
        assert s.collection == first["versions"]["built"]  # still serving the old version
    finally:
        s.close()


def _ray_procs() -> set[int]:
    import psutil

    out = set()
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "ray/_private" in cmd or "dashboard" in cmd:
            out.add(p.info["pid"])
    return out


def test_encoder_actor_killed_mid_run(tmp_path):
    import psutil

    write_parquet(tmp_path / "corpus" / "p.parquet", docs(400), row_group_size=100)
    cfg = cfg_for(tmp_path, "encode.block_rows=20")
    killed: list[int] = []

    def killer():
        deadline = time.time() + 240
        written = tmp_path / "index" / "runs"
        while time.time() < deadline and not killed:
            if any(written.glob("*/written/*.parquet")):
                for p in psutil.process_iter(["pid", "cmdline"]):
                    cmd = " ".join(p.info.get("cmdline") or [])
                    if "MapBatches(Encode)" in cmd:
                        os.kill(p.info["pid"], signal.SIGKILL)
                        killed.append(p.info["pid"])
                        return
            time.sleep(0.2)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    m = run(cfg)
    t.join(5)
    assert killed, "the encoder actor was never found to kill"
    c = m["counts"]
    assert (c["indexed"], c["encoded"], c["vector_store"], c["text_store"]) == (400, 400, 400, 400)


def _kill_encoder_when_writing(root_pid: int, written: Path, parts_before: int) -> threading.Thread:
    """A thread that SIGKILLs one encoder actor under process ``root_pid`` once a new written part
    appears; the killed pids end up in the thread's ``pids``."""
    import psutil

    def kill():
        deadline = time.time() + 300
        while time.time() < deadline and not t.pids:
            if len(list(written.glob("*/written/*.parquet"))) > parts_before:
                try:
                    procs = psutil.Process(root_pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    return
                for p in procs:
                    try:
                        if "MapBatches(Encode)" in " ".join(p.cmdline()):
                            p.kill()
                            t.pids.append(p.pid)
                            return
                    except psutil.Error:
                        continue
            time.sleep(0.1)

    t = threading.Thread(target=kill, daemon=True)
    t.pids = []
    t.start()
    return t


def test_driver_killed_then_rerun_resumes(tmp_path):
    write_parquet(tmp_path / "corpus" / "p.parquet", docs(600), row_group_size=50)
    args = [sys.executable, "-m", "indexer.cli", "run", str(ROOT / "configs" / "local.yaml"), "--json",
            "--set", f"corpus.path={tmp_path / 'corpus'}", "--set", "corpus.sample=false",
            "--set", f"index.dir={tmp_path / 'index'}", "--set", "encode.block_rows=25", "--set", "dense.dim=128"]
    before = _ray_procs()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env, cwd=ROOT)
    deadline = time.time() + 300
    written = tmp_path / "index" / "runs"
    while time.time() < deadline and len(list(written.glob("*/written/*.parquet"))) < 6:
        assert proc.poll() is None, "the job finished before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in _ray_procs() - before:  # the driver's local Ray dies with its machine
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state = json.loads((tmp_path / "index" / "state" / "chunks.json").read_text())
    assert state["status"] == "running"

    # The rerun, with --json, while an encoder actor is killed mid-run (Ray then prints task retry
    # notices) and a C library writes to fd 1 as the process exits: stdout is still one JSON object.
    late = ("import atexit, os, runpy, sys; atexit.register(os.write, 1, b'late line from a C library\\n'); "
            "sys.argv = ['indexer'] + sys.argv[1:]; runpy.run_module('indexer.cli', run_name='__main__')")
    rerun = subprocess.Popen([sys.executable, "-c", late, *args[3:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    killed = _kill_encoder_when_writing(rerun.pid, written, len(list(written.glob("*/written/*.parquet"))))
    stdout, stderr = rerun.communicate(timeout=600)
    killed.join(5)
    assert rerun.returncode == 0, stderr[-3000:]
    assert killed.pids, "no encoder actor of the rerun was found to kill"
    m = json.loads(stdout)  # one JSON object and nothing else
    assert "late line from a C library" in stderr
    c = m["counts"]
    assert m["resumed"] and m["skipped_fragments"] >= 1 and m["run_id"] == state["run_id"]
    assert (c["input"], c["indexed"], c["rejected"], c["vector_store"], c["text_store"]) == (600, 600, 0, 600, 600)
    assert c["encoded"] == 600 and m["alias_moved"]
