"""How the whole job scales with corpus size, with a near-free model, against a bare encode.

    .venv/bin/python -m benchmarks.scale                              # N = 20000, 200000
    .venv/bin/python -m benchmarks.scale --sizes 2000,6000 --out /tmp/scale   # a smoke run
    .venv/bin/python -m benchmarks.scale --set encode.block_rows=4096 --keep

The model is a randomly initialised 2-layer x 64 BERT with the MiniLM tokenizer
(``gpu_throughput.random_bert(..., "tiny")``), built once: encoding costs almost nothing, so what is
measured is the job around it (Ray, reading, validation, diff, tokenization, both stores, records,
verification). For each N it writes N synthetic chunks (``id``, ``title=""``, ``text``; lengths
0.75-1 x ``--tokens`` tokens) as Parquet (``--file-rows`` rows per file, ``--row-group`` rows per row
group) and runs the real job in a fresh process::

    indexer run configs/local.yaml --json --set corpus.path=... --set corpus.sample=false
        --set index.dir=... --set dense.model=<tiny> --set dense.dim=64 [--set ...]

with its own Ray temp dir (``RAY_TMPDIR``) and no ``RAY_ADDRESS``, so it starts a local cluster.
Every ~0.5 s it samples the summed PSS (``/proc/<pid>/smaps_rollup``) of the CLI process and all
its descendants (Ray's gcs, raylet and workers included; PSS shares the object store's pages out
among the processes mapping them, so they count once). A warm-up job (``--warmup`` rows, not
reported) runs first so that every N finds the OpenVINO export of the model in the benchmark's
cache (``dense.cache_dir``): ``exported`` says whether a measured job still exported, ``export_task_s``
is the task that looks for (or makes) the export, outside the pipeline's span.

Reported per N, from the manifest the CLI prints: job wall time (``outside_run_s``: the part outside
the manifest's own ``seconds``: interpreter start, imports, Ray shutdown), end-to-end rows/s
(N / job wall, and N / ``stages.pipeline.seconds``, the Ray graph's own span), per-stage rows, rows/s,
busy seconds and busy share (busy / job wall; parallel tasks can make it exceed 1), counts indexed,
the dense backend chosen, peak PSS (when it was reached, and its parts: heap ``anon``, mapped
``file`` pages, ``shmem``, the object store's pages; per process in ``runs[].peak_pss_parts_mb``); and
the bare reference: ``SentenceTransformer(tiny, device="cpu").encode(texts,
normalize_embeddings=True)`` of the same N texts with ``torch.set_num_threads(os.cpu_count())``,
timed after the load (fastest of ``--bare-repeat`` passes). ``steal_job`` / ``steal_bare``: the share
of CPU time the hypervisor stole meanwhile (a shared VM's noise: compare runs with low shares).

Targets: at the largest N job rows/s >= 0.5 x bare rows/s; from the smallest to the largest N rows/s
does not fall and peak PSS grows at most 1.25x. ``cpu_s_by_process``: CPU seconds per process name
(sampled with the memory). ``--profile`` also records each measured job with py-spy (:class:`Spies`)
and summarises each process's samples (:func:`summarise_profile`: a table, and ``summary.json``).
Prints markdown tables, writes ``scale.json`` and ``scale.png`` (job and bare seconds vs N, peak PSS
vs N) into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, indexer_command, markdown_table, write_result  # noqa: E402
from benchmarks.gpu_throughput import random_bert, synthetic_texts  # noqa: E402

TARGET_VS_BARE = 0.5  # job rows/s over bare-encode rows/s
TARGET_PSS_GROWTH = 1.25  # peak PSS, largest N over smallest N
PROFILE_HZ = 20  # py-spy's sampling rate (Spies)
RUN_ID = re.compile(r"-\d{8}T\d{6}Z-[0-9a-f]+")  # in the names of a run's Ray actors


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- corpus ---------------------------------------------------------------------------------

def write_corpus(texts: list[str], out_dir: Path, file_rows: int, row_group: int) -> tuple[int, int]:
    """``texts`` as Parquet files of ``file_rows`` rows (id, title="", text) in ``out_dir``;
    returns (files, row groups)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = groups = 0
    for start in range(0, len(texts), file_rows):
        part = texts[start:start + file_rows]
        table = pa.table({"id": [f"doc-{i}" for i in range(start, start + len(part))],
                          "title": [""] * len(part), "text": part})
        path = out_dir / f"part-{files:05d}.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        groups += pq.ParquetFile(path).metadata.num_row_groups
        files += 1
    return files, groups


class StealMeter:
    """Share of the machine's CPU time stolen by the hypervisor while the block runs (``steal`` in
    ``/proc/stat``): on a shared VM, a phase with a high share ran on contended cores."""

    def __enter__(self) -> "StealMeter":
        import psutil

        self.t0 = psutil.cpu_times()
        self.share: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        import psutil

        t1 = psutil.cpu_times()
        total = sum(t1) - sum(self.t0)
        steal = getattr(t1, "steal", 0.0) - getattr(self.t0, "steal", 0.0)
        self.share = round(steal / total, 3) if total > 0 else None


# -- the job, with its memory sampled -------------------------------------------------------

PSS_PARTS = ("Pss_Anon", "Pss_File", "Pss_Shmem")
"""The parts of a process's PSS in ``smaps_rollup``: its own heap, mapped files, shared memory (Ray's
object store is a shared-memory file)."""


def pss_parts(pid: int) -> dict[str, int]:
    """``Pss`` and :data:`PSS_PARTS` of a process, in bytes (empty where ``smaps_rollup`` can't be read)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Pss" or key in PSS_PARTS:
            out[key] = int(rest.split()[0]) * 1024
    return out


def tree_pss(root_pid: int, seen: dict[tuple[int, float], str],
             cpu: dict[tuple[int, float], float] | None = None,
             parts: dict[str, dict[str, int]] | None = None) -> tuple[int, int, dict[str, int]]:
    """Summed PSS (bytes) of ``root_pid`` and its descendants, how many processes were read, and PSS
    per process name; records every process met in ``seen`` ((pid, create time) -> latest name).
    Names are read every time: a Ray worker starts as ``setup_worker.py`` and renames itself.
    ``cpu`` gets each process's CPU seconds so far (user + system); ``parts`` gets, per process
    name, the summed :data:`PSS_PARTS` (heap, files, object store)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, {}
    total, count, by_name = 0, 0, {}
    for p in procs:
        try:
            split = pss_parts(p.pid)
            pss = split["Pss"] if "Pss" in split else p.memory_full_info().pss
            name = proc_name(p)
            key = (p.pid, p.create_time())
            if cpu is not None:
                t = p.cpu_times()
                cpu[key] = t.user + t.system
        except psutil.Error:  # gone, or a zombie, between listing and reading
            continue
        seen[key] = name
        count += 1
        total += pss
        by_name[name] = by_name.get(name, 0) + pss
        if parts is not None:
            acc = parts.setdefault(name, dict.fromkeys(PSS_PARTS, 0))
            for k in PSS_PARTS:
                acc[k] += split.get(k, 0)
    return total, count, by_name


def proc_name(p) -> str:
    """A short role name: Ray's process title (``ray::Write``, ``ray::indexer-writer-text:SingleWriter``,
    run ids dropped so names compare across runs), a python script's name, or the executable's."""
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001 - zombie or gone
        cmd = []
    head = cmd[0] if cmd else p.name()
    if head.startswith("ray::"):
        return RUN_ID.sub("", head.split()[0])
    base = os.path.basename(head)
    if base.startswith("python") and len(cmd) > 1:  # name it by its script or module
        args = cmd[1:]
        script = args[args.index("-m") + 1] if "-m" in args[:-1] else next((a for a in args if not a.startswith("-")),
                                                                             args[0])
        return f"python:{os.path.basename(script)}"
    return base


def run_job(overrides: list[str], work: Path, interval: float, timeout: float,
            profile: Path | None = None) -> dict[str, Any]:
    """``indexer run configs/local.yaml --json`` in a fresh process with its own Ray temp dir;
    returns wall seconds, the manifest, the exit code and the PSS samples of its process tree.
    ``profile``: a folder where ``py-spy record`` samples the CLI and every Ray worker (see :class:`Spies`)
    into ``<pid>.txt`` (raw stacks), named in ``roles.json``."""

    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_TMPDIR=ray_tmp)
    cmd = [*indexer_command(), "run", str(ROOT / "configs" / "local.yaml"), "--json",
           *sum((["--set", o] for o in overrides), [])]
    out_path, err_path = work / "stdout.json", work / "stderr.log"
    seen: dict[tuple[int, float], str] = {}
    cpu: dict[tuple[int, float], float] = {}
    samples: list[tuple[float, float, int]] = []  # (seconds since start, PSS MiB, processes)
    peak, peak_by_name, peak_split, peak_at = 0, {}, {}, 0.0
    spies = Spies(profile) if profile is not None else None
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        try:
            while True:
                split: dict[str, dict[str, int]] = {}
                total, count, by_name = tree_pss(proc.pid, seen, cpu, split)
                if spies is not None:
                    spies.attach(seen)
                now = time.perf_counter() - t0
                if total:
                    samples.append((round(now, 2), round(total / 2 ** 20, 1), count))
                    if total > peak:
                        peak, peak_by_name, peak_split, peak_at = total, by_name, split, now
                try:
                    proc.wait(timeout=max(0.0, interval - (time.perf_counter() - t0 - now)))
                    break
                except subprocess.TimeoutExpired:
                    if now > timeout:
                        proc.kill()
                        raise RuntimeError(f"the job ran past {timeout:.0f}s; its log: {err_path}")
        finally:
            if proc.poll() is None:
                proc.kill()
        wall = time.perf_counter() - t0
    lingering = reap(seen, proc.pid)
    if spies is not None:
        spies.finish(seen)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    text = out_path.read_text()
    if proc.returncode not in (0, 1) or not text.strip():
        sys.stderr.write(err_path.read_text()[-5000:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; its log: {err_path}")
    return {"wall": wall, "manifest": json.loads(text), "returncode": proc.returncode, "samples": samples,
            "peak_pss_mb": round(peak / 2 ** 20, 1),
            "peak_pss_by_process_mb": {k: round(v / 2 ** 20, 1) for k, v in
                                       sorted(peak_by_name.items(), key=lambda kv: -kv[1])},
            "peak_at_s": round(peak_at, 1), "peak_pss_parts_mb": parts_table(peak_split),
            "processes_seen": len(seen), "lingering": lingering, "cpu_s_by_process": cpu_by_name(seen, cpu)}


def parts_table(split: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Per process name, :data:`PSS_PARTS` in MiB as ``anon`` / ``file`` / ``shmem``, largest first,
    with their ``total`` over all processes."""
    mib = {name: {k.removeprefix("Pss_").lower(): round(v / 2 ** 20, 1) for k, v in parts.items()}
           for name, parts in sorted(split.items(), key=lambda kv: -sum(kv[1].values()))}
    total = {k: round(sum(p[k] for p in mib.values()), 1) for k in ("anon", "file", "shmem")}
    return {"total": total, **mib}


def cpu_by_name(seen: dict[tuple[int, float], str], cpu: dict[tuple[int, float], float]) -> dict[str, float]:
    """CPU seconds per process name (as last sampled, so a process's last half second may be missing),
    largest first, with their ``total``."""
    out: dict[str, float] = {}
    for key, seconds in cpu.items():
        out[seen[key]] = out.get(seen[key], 0.0) + seconds
    out = {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(out.values()), 1), **out}


class Spies:
    """One ``py-spy record`` per Ray worker and the CLI (raw stacks at 20 Hz, CPU samples only),
    started when the process first shows a ``ray::`` title (a worker execs before it takes one, and
    py-spy cannot follow an exec); :meth:`finish` waits for them and writes
    ``roles.json`` (pid -> the process's last name)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.procs: dict[int, subprocess.Popen] = {}

    def attach(self, seen: dict[tuple[int, float], str]) -> None:
        for (pid, _), name in seen.items():
            if pid in self.procs or not (name.startswith("ray::") or name == "python:indexer"):
                continue
            self.procs[pid] = subprocess.Popen(
                [self.exe, "record", "--pid", str(pid), "--nonblocking", "--rate", str(PROFILE_HZ), "--format", "raw",
                 "-o", str(self.folder / f"{pid}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self, seen: dict[tuple[int, float], str]) -> None:
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        roles = {str(pid): name for (pid, _), name in seen.items() if pid in self.procs}
        (self.folder / "roles.json").write_text(json.dumps(roles, indent=1))


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> tuple[str, str]:
    """``("func (file)", file)`` of one raw py-spy frame ``func (file:line)``, the line dropped so
    samples of one function add up."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return f"{m['func']} ({m['file']})", m["file"]


def summarise_stacks(lines: list[str], top: int = 5) -> dict[str, Any]:
    """What one process spent its CPU samples on, from py-spy raw lines (``frame;frame;... count``):
    ``samples``, ``seconds`` (at :data:`PROFILE_HZ`), ``own`` (per function of the ``indexer`` package,
    the innermost one on each stack: where the project's code led) and ``leaf`` (the frame that was
    running: the library or engine doing the work), each the ``top`` by share of the samples."""
    total, own, leaf = 0, {}, {}
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        name, _ = frames[-1]
        leaf[name] = leaf.get(name, 0) + n
        mine = next((f for f, file in reversed(frames) if file.startswith("indexer/")), "(not in indexer)")
        own[mine] = own.get(mine, 0) + n

    def shares(d: dict[str, int]) -> list[list[Any]]:
        return [[k, round(v / total, 3)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "seconds": round(total / PROFILE_HZ, 1),
            "own": shares(own) if total else [], "leaf": shares(leaf) if total else []}


def summarise_profile(folder: Path, top: int = 5) -> list[dict[str, Any]]:
    """One row per profiled process of a :class:`Spies` folder, busiest first: its role (``roles.json``;
    a task worker ends as ``ray::IDLE``, so its busiest ``indexer`` function says what it ran) and
    :func:`summarise_stacks`. Written as ``summary.json`` beside the stacks."""
    roles = json.loads((folder / "roles.json").read_text()) if (folder / "roles.json").exists() else {}
    rows = []
    for f in sorted(folder.glob("*.txt")):
        s = summarise_stacks(f.read_text(errors="replace").splitlines(), top)
        if s["samples"]:
            rows.append({"pid": int(f.stem), "role": roles.get(f.stem, "?"), **s})
    rows.sort(key=lambda r: -r["samples"])
    (folder / "summary.json").write_text(json.dumps(rows, indent=1))
    return rows


def profile_table(rows: list[dict[str, Any]]) -> str:
    """The summary as markdown: role, pid, CPU seconds, the top own-code and leaf functions."""
    def cell(pairs: list[list[Any]]) -> str:
        return "<br>".join(f"{share:.0%} {name}" for name, share in pairs)

    return markdown_table([{"role": r["role"], "pid": r["pid"], "cpu_s": r["seconds"], "indexer code": cell(r["own"]),
                            "running": cell(r["leaf"])} for r in rows],
                          ["role", "pid", "cpu_s", "indexer code", "running"])


def reap(seen: dict[tuple[int, float], str], root_pid: int, grace: float = 10.0) -> list[str]:
    """Processes of the job's tree still alive ``grace`` seconds after the CLI exited (Ray's should
    stop with the driver); they are terminated, by pid, and returned as names."""
    deadline = time.time() + grace
    while True:
        alive = [key for key in seen if key[0] != root_pid and still_running(*key)]
        if not alive or time.time() > deadline:
            break
        time.sleep(0.5)
    import psutil

    for pid, _ in alive:
        try:
            psutil.Process(pid).terminate()
        except psutil.Error:
            pass
    return [f"{seen[key]} ({key[0]})" for key in alive]


def still_running(pid: int, created: float) -> bool:
    """Whether the process seen (pid and create time: not a reused pid) still runs (not a zombie)."""
    import psutil

    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- the bare reference ---------------------------------------------------------------------

def bare_encode(model_path: str, texts: list[str], batch_size: int, repeat: int = 1) -> dict[str, Any]:
    """``SentenceTransformer.encode`` of ``texts`` on the CPU with every core, timed after the load
    (and a small warm-up); the fastest of ``repeat`` passes (a shared machine is noisy)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    model = SentenceTransformer(model_path, device="cpu")
    load = time.perf_counter() - t0
    model.encode(texts[:batch_size], batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    passes = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        passes.append(round(time.perf_counter() - t0, 3))
    seconds = min(passes)
    return {"rows": len(emb), "seconds": seconds, "passes_s": passes,
            "rows_per_s": round(len(emb) / max(seconds, 1e-9), 1),
            "load_seconds": round(load, 2), "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
            "dim": int(emb.shape[1])}


# -- reporting ------------------------------------------------------------------------------

def stage_rows(n: int, manifest: dict[str, Any], wall: float) -> list[dict[str, Any]]:
    """One row per stage of the manifest: rows, rows/s, span, busy seconds and busy share."""
    out = []
    for name, st in manifest.get("stages", {}).items():
        if not isinstance(st, dict):
            continue
        busy = st.get("busy_seconds")
        out.append({"N": n, "stage": name, "rows": st.get("rows", ""), "rows/s": st.get("rows_per_s", ""),
                    "span_s": st.get("seconds", ""), "busy_s": busy if busy is not None else "",
                    "busy_share": round(busy / wall, 3) if busy is not None else ""})
    return out


def dense_setting(manifest: dict[str, Any]) -> str:
    """The dense backend/precision the encoders chose (``stages.encode.dense_setting``, per node)."""
    s = manifest.get("stages", {}).get("encode", {}).get("dense_setting")
    if isinstance(s, dict):
        return ", ".join(sorted(set(s.values())))
    return str(s) if s else "?"


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    ns = [r["N"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ns, [r["job_wall_s"] for r in rows], "o-", label="job wall")
    if all(r["pipeline_s"] for r in rows):
        a.plot(ns, [r["pipeline_s"] for r in rows], "s--", label="job pipeline (Ray graph)")
    a.plot(ns, [r["bare_s"] for r in rows], "^-", label="bare encode")
    a.set(xscale="log", yscale="log", xlabel="chunks (N)", ylabel="seconds", title="time vs corpus size")
    a.legend()
    a.grid(True, which="both", alpha=0.3)
    b.plot(ns, [r["peak_pss_mb"] for r in rows], "o-", color="C3")
    b.set(xscale="log", xlabel="chunks (N)", ylabel="MiB", title="peak PSS of the job's process tree")
    b.set_ylim(bottom=0)
    b.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,200000", help="comma list of corpus sizes (chunks)")
    ap.add_argument("--tokens", type=int, default=64, help="longest chunk in tokens (specials included)")
    ap.add_argument("--file-rows", type=int, default=50_000, help="rows per Parquet file")
    ap.add_argument("--row-group", type=int, default=8192, help="rows per Parquet row group")
    ap.add_argument("--bare-batch", type=int, default=64, help="batch size of the bare encode")
    ap.add_argument("--bare-repeat", type=int, default=1, help="bare encode passes; the fastest is reported")
    ap.add_argument("--warmup", type=int, default=512, help="rows of the unreported warm-up job (0: none)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds one job may run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for the job (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for scale.json and scale.png")
    ap.add_argument("--keep", action="store_true", help="keep the corpora, indexes and job logs (path printed)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the CLI and every Ray worker of each measured job with py-spy: raw stacks "
                         "(one <pid>.txt per process, roles.json names them) go to <out>/scale_profile_n<N>/, "
                         "with summary.json (per process: CPU seconds, the busiest indexer functions and the "
                         "frames running), also printed as a table")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    tmp = Path(tempfile.mkdtemp(prefix="scale-", dir="/tmp"))
    rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    try:
        log(f"building the tiny model in {tmp}")
        model = random_bert(tmp, "tiny")
        base = [f"dense.model={model}", "dense.dim=64", f"dense.cache_dir={tmp / 'ov'}", "corpus.sample=false",
                "corpus.id_column=id", "corpus.text_column=text", "corpus.title_column=title"]

        def job(n: int, texts: list[str], label: str) -> dict[str, Any]:
            work = tmp / label
            files, groups = write_corpus(texts, work / "corpus", args.file_rows, args.row_group)
            log(f"{label}: {n} chunks in {files} file(s), {groups} row group(s); running the job")
            profile = args.out / f"scale_profile_{label}" if args.profile and label != "warmup" else None
            with StealMeter() as steal:
                res = run_job([*base, f"corpus.path={work / 'corpus'}", f"index.dir={work / 'index'}",
                               *args.overrides], work, args.interval, args.timeout, profile=profile)
            res.update(files=files, row_groups=groups, steal_share=steal.share)
            if profile is not None:
                prof = summarise_profile(profile)
                print(f"\n{label}: CPU samples per process (py-spy, {PROFILE_HZ} Hz)\n" + profile_table(prof) + "\n")
            m = res["manifest"]
            log(f"{label}: {m.get('status')} in {res['wall']:.1f}s, indexed {m.get('counts', {}).get('indexed')}, "
                f"peak PSS {res['peak_pss_mb']:.0f} MiB")
            if not args.keep:
                shutil.rmtree(work / "index", ignore_errors=True)
                shutil.rmtree(work / "corpus", ignore_errors=True)
            return res

        if args.warmup:
            job(args.warmup, synthetic_texts(args.warmup, args.tokens, seed=99), "warmup")

        for n in sizes:
            log(f"N={n}: making {n} synthetic chunks of <= {args.tokens} tokens")
            texts = synthetic_texts(n, args.tokens, seed=0)
            res = job(n, texts, f"n{n}")
            log(f"N={n}: bare encode")
            with StealMeter() as steal:
                bare = bare_encode(model, texts, args.bare_batch, args.bare_repeat)
            bare["steal_share"] = steal.share
            log(f"N={n}: bare {bare['seconds']:.1f}s ({bare['rows_per_s']:.0f} rows/s)")
            m, wall = res["manifest"], res["wall"]
            st = m.get("stages", {})
            pipe_s = st.get("pipeline", {}).get("seconds")
            job_rps = n / wall
            rows.append({
                "N": n, "status": m.get("status"), "indexed": m.get("counts", {}).get("indexed"),
                "job_wall_s": round(wall, 2), "pipeline_s": pipe_s,
                "ray_init_s": st.get("ray_init", {}).get("seconds"),
                "export_task_s": st.get("dense_export", {}).get("seconds", 0.0),
                "exported": st.get("dense_export", {}).get("exported", False),
                "outside_run_s": round(wall - m["seconds"], 2) if m.get("seconds") is not None else None,
                "job_rows_per_s": round(job_rps, 1),
                "pipeline_rows_per_s": round(n / pipe_s, 1) if pipe_s else None,
                "bare_s": bare["seconds"], "bare_rows_per_s": bare["rows_per_s"],
                "job_vs_bare": round(job_rps / bare["rows_per_s"], 3),
                "peak_pss_mb": res["peak_pss_mb"], "peak_at_s": res["peak_at_s"],
                **{f"peak_{k}_mb": v for k, v in res["peak_pss_parts_mb"].get("total", {}).items()},
                "dense": dense_setting(m),
                "steal_job": res["steal_share"], "steal_bare": bare["steal_share"],
            })
            stages += stage_rows(n, m, wall)
            runs.append({"N": n, "files": res["files"], "row_groups": res["row_groups"],
                         "returncode": res["returncode"],
                         "manifest": m, "bare": bare, "pss_samples": res["samples"],
                         "peak_pss_by_process_mb": res["peak_pss_by_process_mb"],
                         "peak_at_s": res["peak_at_s"], "peak_pss_parts_mb": res["peak_pss_parts_mb"],
                         "cpu_s_by_process": res["cpu_s_by_process"],
                         "processes_seen": res["processes_seen"], "lingering_processes": res["lingering"]})
            if res["lingering"]:
                log(f"N={n}: still alive after the job, terminated: {', '.join(res['lingering'])}")
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    cols = list(rows[0])
    print(markdown_table(rows, cols))
    print()
    print(markdown_table(stages, list(stages[0])))
    small, large = rows[0], rows[-1]
    summary: dict[str, Any] = {  # the ratio is judged at the largest N: a small one is mostly fixed costs
        "job_vs_bare_at_largest": large["job_vs_bare"], "target_job_vs_bare": TARGET_VS_BARE,
        "meets_job_vs_bare": large["job_vs_bare"] >= TARGET_VS_BARE,
    }
    if len(rows) > 1:
        rps_change = large["job_rows_per_s"] / small["job_rows_per_s"]
        pss_ratio = large["peak_pss_mb"] / max(small["peak_pss_mb"], 1e-9)
        summary.update(smallest=small["N"], largest=large["N"], rows_per_s_change=round(rps_change, 3),
                       meets_rows_per_s=rps_change >= 1.0, peak_pss_ratio=round(pss_ratio, 3),
                       target_peak_pss_ratio=TARGET_PSS_GROWTH, meets_peak_pss=pss_ratio <= TARGET_PSS_GROWTH)
    print(f"\njob / bare rows/s at N={large['N']}: {large['job_vs_bare']:.3f} (target >= {TARGET_VS_BARE})")
    if len(rows) > 1:
        print(f"N {small['N']} -> {large['N']}: rows/s x{summary['rows_per_s_change']:.3f} (target >= 1), "
              f"peak PSS x{summary['peak_pss_ratio']:.3f} (target <= {TARGET_PSS_GROWTH})")
    payload = {"settings": {k: getattr(args, k) for k in ("sizes", "tokens", "file_rows", "row_group", "bare_batch",
                                                          "bare_repeat", "warmup", "interval", "overrides")},
               "model": "random BERT 2 layers x 64 hidden, MiniLM tokenizer (weights: random)",
               "rows": rows, "stages": stages, "summary": summary, "runs": runs}
    path = write_result("scale", payload, args.out / "scale.json")
    print(f"wrote {path}")
    png = plot(rows, args.out / "scale.png")
    if png:
        print(f"wrote {png}")
    return payload


if __name__ == "__main__":
    main()
