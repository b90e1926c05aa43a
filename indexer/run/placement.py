"""Ray and resources: connect to the cluster and size the encoder pool from what it offers (never
hard-coded)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import JobConfig
from ..stages.encode import EncodeSpec, encode_stage
from ..stages.stats import StageReporter

log = logging.getLogger(__name__)


JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray in the driver of a submitted job (``ray job submit``, KubeRay RayJob): the job's config."""


def driver_runtime_env(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The runtime env ``ray.init`` gets: inside a submitted job none at all, so the job's own
    (its uploaded working dir, its env vars) applies unchanged, whether or not the job was
    submitted with ``--runtime-env``. Outside a job: the hub and tokenizer settings every worker needs."""
    if environ.get(JOB_CONFIG_VAR):
        return None
    return {"env_vars": {"HF_HUB_OFFLINE": environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}}


def init_ray(cfg: JobConfig) -> None:
    """Connect to the cluster (``ray.address`` or ``RAY_ADDRESS``), or start a local one (unless this
    process is connected already), and set this run's Ray Data options."""
    import ray

    if not ray.is_initialized():
        _connect(cfg)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.print_on_execution_start = False
    # An actor stage fills one output block across its calls until the block reaches this size: with
    # Ray's default (128 MiB) a small run's encoded rows leave the encoder all at once, at the end.
    ctx.target_max_block_size = int(cfg.ray.block_mb * 1024 * 1024)


def _connect(cfg: JobConfig) -> None:
    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    runtime_env = driver_runtime_env(os.environ)
    if address:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
    else:
        if cfg.ray.object_store_mb:
            kwargs["object_store_memory"] = cfg.ray.object_store_mb * 1024 * 1024
        ray.init(include_dashboard=False, runtime_env=runtime_env, **kwargs)


@dataclass
class EncodePlacement:
    """How many encoder actors, with what resources; derived from the cluster."""

    workers: int
    max_workers: int
    num_gpus: float
    num_cpus: float
    torch_threads: int | None
    device: str
    task_cpus: float = 1.0  # CPU slots of each read / validate / tokenize / write task
    feed_cpus_per_gpu: float | None = None  # GPU clusters: CPUs per GPU left to read / tokenize tasks


MIN_FEED_CPUS_PER_GPU = 8.0
"""Below this many CPUs per GPU left for read/tokenize tasks, tokenization may starve the GPUs: a
fast tokenizer does about 0.5M tokens/s per core (BERT WordPiece, 256-token chunks) and one H100
is expected to encode 2.5M (BERT-base) to 6M (MiniLM-L6) tokens/s, i.e. 5 to 12 cores per GPU."""


def _gpu_actor_cpus(cluster: dict[str, float], nodes: list[dict[str, float]], share: float) -> float:
    """CPU slots per GPU actor: one (the thread feeding its GPU), but a GPU node's encoder actors
    together take at most half of its CPUs, so read and tokenize tasks keep the other half."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0.0) > 0] or [cluster]
    cpus = 1.0
    for n in gpu_nodes:
        actors = max(1, int(n.get("GPU", 0.0) / share + 1e-6))
        cpus = min(cpus, n.get("CPU", 0.0) / 2 / actors)
    return max(0.01, int(cpus * 100) / 100)


def plan_placement(cfg: JobConfig, cluster: dict[str, float], nodes: list[dict[str, float]]) -> EncodePlacement:
    """Size the encoder pool from cluster resources.

    GPU clusters: one actor per GPU, or one per ``gpus_per_worker`` share (0.5 or 0.25: several
    actors per GPU, for small models), 1 CPU each but at most half of a GPU node's CPUs for all its
    actors, so tokenize tasks keep the rest (a warning when under ``MIN_FEED_CPUS_PER_GPU`` per GPU
    remain; ``benchmarks/gpu_throughput.py`` measures how many one GPU needs). CPU clusters:
    one actor per node, leaving at least one CPU per node for read/tokenize tasks, with torch
    threads matching the node's cores on small nodes (an actor with 1 CPU would otherwise get 1
    thread). A node with fewer than 2 CPUs can't hold a whole-CPU actor and a whole-CPU task, so
    there the actor and the CPU-stage tasks take half of the smallest node's CPUs each: one actor
    and one task share each such node instead of the actor starving the reads.
    """
    e = cfg.encode
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = gpus > 0 and e.device != "cpu"
    if use_gpu:
        share = e.gpus_per_worker or 1.0
        workers = e.workers or max(1, int(gpus / share + 1e-6))  # 3 / 0.1 is 29.999...
        cpus = e.cpus_per_worker or _gpu_actor_cpus(cluster, nodes, share)
        feed = (float(cluster.get("CPU", 0.0)) - workers * cpus) / gpus
        if feed < MIN_FEED_CPUS_PER_GPU:
            log.warning("only %.1f CPUs per GPU are left for read/tokenize tasks: the GPUs may wait for "
                        "tokenization; use nodes with more CPUs per GPU or fewer encoder actors", feed)
        return EncodePlacement(workers, e.max_workers or workers, share, cpus, e.torch_threads, "cuda",
                               feed_cpus_per_gpu=round(feed, 2))
    node_cpus = [n.get("CPU", 0.0) for n in nodes if n.get("CPU", 0.0) > 0] or [float(cluster.get("CPU", 1.0))]
    smallest = min(node_cpus)
    if smallest < 2:
        cpus = e.cpus_per_worker or smallest / 2
        task_cpus = max(0.05, min(1.0, smallest - cpus))
    else:
        cpus = e.cpus_per_worker or max(1.0, smallest - max(1.0, smallest // 8))
        task_cpus = 1.0
    workers = e.workers or len(node_cpus)
    threads = e.torch_threads or (max(1, int(smallest)) if smallest <= 4 else int(cpus))
    return EncodePlacement(workers, e.max_workers or workers, 0.0, cpus, threads, "cpu", task_cpus)


def cluster_resources() -> tuple[dict[str, float], list[dict[str, float]]]:
    """The cluster's total resources and each live node's, as ``plan_placement`` takes them."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return ray.cluster_resources(), nodes


def encode_on(placement: EncodePlacement, ds: Any, spec: EncodeSpec, block_rows: int, reporter: StageReporter) -> Any:
    """``ds`` through the encoder actor pool ``placement`` describes (``block_rows`` rows per call)."""
    return encode_stage(ds, spec, block_rows=block_rows, workers=placement.workers, max_workers=placement.max_workers,
                        num_cpus=placement.num_cpus, num_gpus=placement.num_gpus, reporter=reporter)
