"""Shared fixtures: tiny corpora written as Parquet, a session-scoped local Ray, the packaged model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# OpenVINO exports (dense.backend=auto on CPU) of the session go to a temporary cache, not ~/.cache.
os.environ.setdefault("INDEXER_CACHE_DIR", tempfile.mkdtemp(prefix="indexer-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Placeholder credentials for the loopback S3 server of tests/test_s3.py. Ray workers inherit their
# environment when Ray starts, so the session's Ray gets them too (tests never reach real AWS).
S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "AKIAINDEXERTEST00001", "AWS_SECRET_ACCESS_KEY": "indexer-test-secret-0d5f9a",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def sample_docs(n: int, text_chars: int = 600) -> list[dict]:
    """The first ``n`` chunks of the bundled sample corpus as rows (id, title, text, module)."""
    import itertools

    from indexer.sample_corpus import stdlib_chunks

    out = [{"id": c["id"], "title": c["title"], "text": c["text"][:text_chars], "module": c["module"]}
           for c in itertools.islice(stdlib_chunks(), n)]
    if len(out) < n:
        raise AssertionError(f"sample corpus has only {len(out)} chunks, {n} asked")
    return out


def write_parquet(path: Path, rows: list[dict] | pa.Table, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (starting Ray is the slow part of pipeline tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                   "INDEXER_CACHE_DIR": os.environ["INDEXER_CACHE_DIR"], **S3_TEST_ENV}})
    yield ray
    ray.shutdown()


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not gpu_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _cli_quiet_settings_undone():
    """An in-process CLI run quiets library loggers and sets warning/progress-bar environment variables
    for its process; put them back after each test, so a later test sees the defaults."""
    import logging

    from indexer.cli_progress import NOISY_LOGGERS, NOTICE_LOGGERS

    names = (*NOISY_LOGGERS, *NOTICE_LOGGERS, "ray.data._internal.execution.streaming_executor")
    levels = {n: logging.getLogger(n).level for n in names}
    env = {k: os.environ.get(k) for k in ("PYTHONWARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY",
                                          "RAY_DATA_DISABLE_PROGRESS_BARS")}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
