"""One run per index at a time: the lease in ``index.dir`` (local file and S3 object), its stale rules, and
two real runs started on the same index (one refuses, naming the other; the index stays consistent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from indexer.config import S3Config
from indexer.layout import Layout
from indexer.run.lease import IndexLeased, LeaseHolder, acquire, lease_uri
from indexer.storage import Storage
from tests.conftest import ROOT, sample_docs, write_parquet
from tests.test_s3 import REGION, _bucket, s3  # noqa: F401 - the moto server fixture

TIMEOUT = 180.0


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _place(storage: Storage, layout: Layout, holder: LeaseHolder) -> None:
    assert storage.create_if_absent(lease_uri(layout), json.dumps(holder.to_json()).encode())


def _check_rules(storage: Storage, layout: Layout) -> None:
    now = 1_000_000.0
    clock = lambda: now  # noqa: E731 - the lease's clock, fixed: no test depends on time passing
    a = acquire(storage, layout, TIMEOUT, run_id="run-a", host="h1", pid=os.getpid(), clock=clock)
    with pytest.raises(IndexLeased) as e:
        acquire(storage, layout, TIMEOUT, host="h2", pid=123, clock=clock)
    msg = str(e.value)
    assert "another run holds the index" in msg and "run run-a" in msg and "host h1" in msg
    assert f"pid {os.getpid()}" in msg and "since 1970-01-12T13:46:40Z" in msg and "\n" not in msg
    assert e.value.to_json()["lease"]["run_id"] == "run-a"
    # Renewal keeps it ours; release frees it for the next run.
    assert a.renew() and not a.lost
    a.release()
    assert storage.read_tagged(lease_uri(layout)) is None
    b = acquire(storage, layout, TIMEOUT, run_id="run-b", host="h2", pid=123, clock=clock)
    b.release()

    # Same host, process gone: stale at once (a rerun right after SIGKILL resumes).
    _place(storage, layout, LeaseHolder("run-dead", "h1", _dead_pid(), now, now, "t0"))
    c = acquire(storage, layout, TIMEOUT, run_id="run-c", host="h1", clock=clock)
    assert c.holder.run_id == "run-c"
    # The dead run's lease is gone: the one it would renew with no longer matches.
    c.release()

    # Another host: live within the timeout (its pid means nothing here), stale after it.
    _place(storage, layout, LeaseHolder("run-far", "elsewhere", 1, now - 10, now - TIMEOUT + 1, "t1"))
    with pytest.raises(IndexLeased) as e:
        acquire(storage, layout, TIMEOUT, host="h1", clock=clock)
    assert "run run-far" in str(e.value) and "host elsewhere" in str(e.value)
    later = lambda: now + 2  # noqa: E731 - just past the timeout
    d = acquire(storage, layout, TIMEOUT, run_id="run-d", host="h1", clock=later)
    assert json.loads(storage.read_tagged(lease_uri(layout))[0])["run_id"] == "run-d"

    # A holder that was taken over loses its lease: renewing fails, release leaves the new holder's.
    stolen = storage.read_tagged(lease_uri(layout))
    far = LeaseHolder("run-e", "elsewhere", 1, now, now + 2, "t2")
    assert storage.replace_if(lease_uri(layout), json.dumps(far.to_json()).encode(), stolen[1])
    assert not d.renew() and d.lost
    d.release()
    assert json.loads(storage.read_tagged(lease_uri(layout))[0])["run_id"] == "run-e"


def _check_race(storage: Storage, layout: Layout, n: int = 6) -> None:
    barrier = threading.Barrier(n)
    won, refused = [], []

    def contend(i: int) -> None:
        barrier.wait()
        try:
            won.append(acquire(storage, layout, TIMEOUT, run_id=f"r{i}", host=f"host{i}", pid=1))
        except IndexLeased as e:
            refused.append(e)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(refused) == n - 1
    assert all(e.holder.run_id == won[0].holder.run_id for e in refused)
    won[0].release()


def test_lease_rules_on_a_local_index_dir(tmp_path):
    _check_rules(Storage(), Layout(str(tmp_path / "index")))


def test_two_runs_taking_the_local_lease_together_one_wins(tmp_path):
    _check_race(Storage(), Layout(str(tmp_path / "index")))


def test_lease_rules_and_race_on_s3(s3):  # noqa: F811 - the fixture
    _bucket(s3, "lease-bkt")
    storage = Storage(S3Config(endpoint_url=s3["endpoint"], region=REGION))
    _check_rules(storage, Layout("s3://lease-bkt/index"))
    storage.delete_prefix("s3://lease-bkt/index")
    _check_race(storage, Layout("s3://lease-bkt/race"))


# ------------------------------------------------------------------------------------------
# Two real runs on one index
# ------------------------------------------------------------------------------------------

def _cli(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "indexer.cli", "run", str(ROOT / "configs" / "local.yaml"), "--json",
            "--set", f"corpus.path={tmp_path / 'corpus'}", "--set", "corpus.sample=false",
            "--set", f"index.dir={tmp_path / 'index'}", "--set", "encode.block_rows=25", "--set", "dense.dim=128",
            *extra]


def test_second_run_on_the_same_index_refuses_naming_the_first(tmp_path):
    docs = sample_docs(400, 160)
    write_parquet(tmp_path / "corpus" / "p.parquet", docs, row_group_size=50)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(_cli(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=ROOT)
    lease_file = tmp_path / "index" / "lease.json"
    written = tmp_path / "index" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not any(written.glob("*/written/*.parquet")):
        assert first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.2)
    holder = json.loads(lease_file.read_text())
    assert holder["pid"] == first.pid and holder["run_id"]

    second = subprocess.run(_cli(tmp_path), capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 3, second.stderr[-3000:]
    refusal = json.loads(second.stdout)
    assert refusal["status"] == "refused" and refusal["lease"]["run_id"] == holder["run_id"]
    assert holder["run_id"] in second.stderr and f"pid {first.pid}" in second.stderr
    assert "another run holds the index" in second.stderr

    assert first.returncode == 0, err[-3000:]
    m = json.loads(out)
    c = m["counts"]
    assert (c["input"], c["indexed"], c["encoded"], c["vector_store"], c["text_store"]) == (400, 400, 400, 400, 400)
    assert not lease_file.exists()  # released
    hashes = pq.read_table(tmp_path / "index" / "versions" / m["versions"]["built"] / "hashes" / "part-0.parquet")
    assert sorted(hashes.column("id").to_pylist()) == sorted(d["id"] for d in docs)

    again = subprocess.run(_cli(tmp_path), capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    c = json.loads(again.stdout)["counts"]
    assert (c["unchanged"], c["encoded"], c["deleted"], c["indexed"]) == (400, 0, 0, 400)
