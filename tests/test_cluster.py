"""A real two-node Ray cluster on this machine, with the job submitted the way production submits it.

Two ``ray start`` processes (a head and a worker, 1 CPU each) listen on loopback only, with token
auth on (one random ``RAY_AUTH_TOKEN`` shared by both nodes and the CLI), their own temp dir (so
``ray.init()`` elsewhere on the machine never finds them) and their own ports. ``ray job submit
--working-dir .`` runs ``jobs/index.py`` with the repository's runtime env minus ``pip`` (the nodes
share this virtualenv, nothing is installed). Teardown kills only the processes these nodes started
(found by their temp dir in the environment), never ``ray stop``, which would stop every Ray on
the machine.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT, write_parquet


VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
ROWS = 240


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _node_args(ports: list[int]) -> list[str]:
    """Every port a node opens, chosen here: two nodes on one host must not share defaults."""
    nm, om, agent_http, agent_grpc, metrics, rt_env = ports
    return [f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={rt_env}"]


def _own_processes(marker: str):
    """Processes started by this test's nodes: they inherit RAY_TMPDIR=<our temp dir>."""
    import psutil

    me = os.getpid()
    out = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get("RAY_TMPDIR") == marker:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def _kill_own(marker: str) -> None:
    import psutil

    procs = _own_processes(marker)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_placement_shares_one_cpu_nodes():
    """1-CPU nodes: one actor per node at half a CPU, tasks at the other half; bigger nodes keep
    whole CPUs for tasks."""
    from indexer.config import load_config
    from indexer.run.placement import plan_placement

    cfg = load_config(ROOT / "configs" / "local.yaml")
    p = plan_placement(cfg, {"CPU": 2.0}, [{"CPU": 1.0}, {"CPU": 1.0}])
    assert (p.workers, p.num_cpus, p.task_cpus, p.torch_threads, p.device) == (2, 0.5, 0.5, 1, "cpu")
    p = plan_placement(cfg, {"CPU": 2.0}, [{"CPU": 2.0}])
    assert (p.workers, p.num_cpus, p.task_cpus, p.torch_threads) == (1, 1.0, 1.0, 2)
    p = plan_placement(cfg, {"CPU": 16.0}, [{"CPU": 8.0}, {"CPU": 8.0}])
    assert (p.workers, p.num_cpus, p.task_cpus) == (2, 7.0, 1.0)


@pytest.fixture(scope="module")
def cluster():
    """Head + worker node (1 CPU each) on 127.0.0.1; yields (env for the CLI, dashboard address, temp dir)."""
    base = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_TMPDIR": base,
        "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in jobs = this venv
    })
    gcs, dash, client, *ports = _free_ports(15)
    try:
        head = _run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=1",
                     "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={dash}", f"--ray-client-server-port={client}", f"--temp-dir={base}/h",
                     "--object-store-memory=200000000", "--disable-usage-stats", *_node_args(ports[:6])],
                    env, timeout=120)
        assert head.returncode == 0, head.stdout + head.stderr
        # Its own temp dir too: nodes sharing one would unpack the job's working dir into the same
        # folder and delete each other's copy.
        worker = _run([RAY, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                       "--num-gpus=0", "--object-store-memory=200000000", "--disable-usage-stats", f"--temp-dir={base}/w",
                       *_node_args(ports[6:12])], env, timeout=120)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        address = f"http://127.0.0.1:{dash}"
        deadline, alive = time.time() + 60, 0
        while time.time() < deadline:
            out = _run([RAY, "list", "nodes", "--address", address, "--format", "json"], env, timeout=60)
            if out.returncode == 0:
                alive = sum(n.get("state") == "ALIVE" for n in json.loads(out.stdout))
                if alive == 2:
                    break
            time.sleep(2)
        assert alive == 2, f"cluster did not come up with 2 nodes: {out.stdout} {out.stderr}"
        yield env, address, Path(base)
    finally:
        _kill_own(base)
        shutil.rmtree(base, ignore_errors=True)


def _corpus(path: Path) -> Path:
    from indexer.sample_corpus import stdlib_chunks

    rows = [{"id": c["id"], "title": c["title"], "text": c["text"][:200], "module": c["module"]}
            for c in itertools.islice(stdlib_chunks(), ROWS)]
    return write_parquet(path / "corpus" / "part.parquet", rows, row_group_size=ROWS // 8)


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("with_runtime_env", [True, False], ids=["runtime-env-file", "working-dir-only"])
def test_job_submit_two_nodes(cluster, tmp_path, with_runtime_env):
    """Submitted with the documented runtime env file, and the way Ray's docs submit a job (only
    ``--working-dir``): the job runs the same both ways."""
    env, address, base = cluster
    corpus = _corpus(tmp_path)
    index_dir = tmp_path / "index"
    # The documented runtime env, less `pip`: both nodes already run this virtualenv.
    runtime_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    runtime_env.pop("pip", None)
    (tmp_path / "runtime_env.yaml").write_text(yaml.safe_dump(runtime_env))
    env_args = ["--runtime-env", str(tmp_path / "runtime_env.yaml")] if with_runtime_env else []
    sub_id = f"indexer-test-{secrets.token_hex(4)}"
    t0 = time.time()
    job = _run([RAY, "job", "submit", "--address", address, "--submission-id", sub_id, "--working-dir", ".",
                *env_args, "--",
                "python", "jobs/index.py", "--config", "configs/local.yaml",
                "--set", f"index.dir={index_dir}", "--set", f"corpus.path={corpus}", "--set", "corpus.sample=false",
                "--set", "encode.block_rows=30", "--set", "dense.dim=128"], env, timeout=360, cwd=ROOT)
    seconds = time.time() - t0
    assert job.returncode == 0, f"job failed after {seconds:.0f}s:\n{job.stdout[-6000:]}\n{job.stderr[-3000:]}"
    status = _run([RAY, "job", "status", sub_id, "--address", address], env, timeout=60)
    assert "SUCCEEDED" in (status.stdout + status.stderr).upper()

    # What was uploaded (unpacked on the nodes): the checkout without the virtualenv or run outputs.
    unpacked = [d for d in base.glob("h/session_*/runtime_resources/working_dir_files/_ray_pkg_*") if d.is_dir()]
    assert unpacked and all((d / "jobs" / "index.py").exists() for d in unpacked)
    # Without the runtime env file, .gitignore alone keeps the virtualenv and run outputs out.
    left_out = (".venv", ".git", ".indexer") if with_runtime_env else (".venv", ".indexer")
    assert not any((d / name).exists() for d in unpacked for name in left_out)

    manifests = sorted(index_dir.glob("runs/*/manifest.json"))
    assert len(manifests) == 1
    m = json.loads(manifests[0].read_text())
    c = m["counts"]
    assert m["status"] == "succeeded" and m["alias_moved"]
    assert (c["input"], c["indexed"], c["encoded"], c["rejected"]) == (ROWS, ROWS, ROWS, 0)
    assert c["vector_store"] == c["text_store"] == ROWS
    assert len(m["stages"]["encode"]["nodes"]) == 2, m["stages"]["encode"]
    # One encoder actor per 1-CPU node, sharing the node with the CPU-stage tasks.
    assert m["placement"]["workers"] == 2
    assert m["placement"]["num_cpus"] + m["placement"]["task_cpus"] <= 1.0
    # Write tasks ran on both nodes, yet every row went through the one writer actor on the driver's
    # node: the embedded stores (one writer process each) hold every row exactly once.
    assert len(m["stages"]["write"]["nodes"]) == 2, m["stages"]["write"]

    from indexer.config import load_config
    from indexer.run.plan import vector_spec
    from indexer.stores.factory import text_store_factory, vector_store_factory

    cfg = load_config(ROOT / "configs" / "local.yaml", [f"index.dir={index_dir}", "dense.dim=128"])
    v, t = vector_store_factory(cfg, vector_spec(cfg, 128))(), text_store_factory(cfg)()
    try:
        live = v.get_alias(cfg.index.name)
        assert live == m["versions"]["after"] and t.get_alias(cfg.index.name) == live
        assert v.count(live) == t.count(live) == ROWS
        ids = pq.read_table(corpus, columns=["id"]).column("id").to_pylist()[:: ROWS // 10]
        assert sorted(t.retrieve(live, ids)) == sorted(ids)
    finally:
        v.close()
        t.close()
