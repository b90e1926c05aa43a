"""``indexer bench``: tokens/s and FLOP/s of the configured model on this machine, measured on a
sample of the corpus through the encode stage's code path; saved as a profile for the estimate."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np

from ..config import JobConfig
from ..sources.parquet import plan_corpus, read_valid_rows
from .cost import PEAK_TFLOPS, effective_seq, model_shape


def _device_key(cfg: JobConfig, device: str, name: str) -> str:
    """Profile key of the measured hardware: 'cpu', or the configured / recognised GPU type."""
    if device == "cpu":
        return "cpu"
    if cfg.cost.gpu_type != "cpu":
        return cfg.cost.gpu_type
    upper = name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.replace("-", " ") in upper:
            return key
    return name


def bench_throughput(cfg: JobConfig, rows: int = 512, seconds: float = 20.0) -> dict[str, Any]:
    """Measure tokens/s of the configured model on this machine's device; saved by ``indexer bench``.

    Same code path and dense setting as the encode stage (backend and precision chosen as a run's
    actors choose them, e.g. OpenVINO bf16 on a CPU with native bf16; ``dense_setting`` in the
    profile; pre-tokenized ids, token-budget batches, the run's thread count on CPU) on a sample
    of the configured corpus, after a warm-up pass; passes of one forward batch each for at least
    ``seconds``, and the median pass is the profile.
    """
    import torch

    from ..encoders.dense import DenseModel
    from ..encoders.tokens import document_texts, tokenize_texts
    from ..run.placement import plan_placement

    p = plan_corpus(cfg.corpus, check_duplicates=False)
    sample = read_valid_rows(p, cfg.corpus, rows, seed=0)
    texts = document_texts(sample, cfg.dense.document_prefix)
    device = "cuda" if torch.cuda.is_available() and cfg.encode.device != "cpu" else "cpu"
    cores = float(os.cpu_count() or 1)
    placement = plan_placement(cfg, {"CPU": cores}, [{"CPU": cores}])
    threads = placement.torch_threads or int(cores)
    model = DenseModel(cfg.dense.model, device, cfg.dense.dtype, cfg.dense.max_seq_length,
                       threads if device == "cpu" else None, cfg.dense.attention, cfg.dense.backend,
                       cfg.dense.precision, cfg.dense.cache_dir,
                       texts if cfg.dense.precision == "int8" else None)  # the setting a run's actors choose
    ids, _, _, _ = tokenize_texts(texts, cfg.dense.model, cfg.dense.max_seq_length)
    # Length-sorted slices of about one forward pass each, like the batches of a large block, so
    # the clock is checked often and padding stays what the pipeline sees.
    ids.sort(key=len, reverse=True)
    slices, start = [], 0
    while start < len(ids):
        rows_per = max(1, cfg.encode.tokens_per_batch(device) // max(1, len(ids[start])))
        slices.append(ids[start:start + rows_per])
        start += rows_per
    random.Random(0).shuffle(slices)  # a short measurement sees long and short chunks alike
    model.embed_ids(max(slices, key=len), cfg.encode.tokens_per_batch(device))  # warm-up: the first full-size pass is slow
    shape = model_shape(cfg.dense.model)
    rates, measured, passes, t0 = [], [], 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or passes == 0:
        part = slices[passes % len(slices)]
        r0, p0 = model.real_tokens, time.perf_counter()
        model.embed_ids(part, cfg.encode.tokens_per_batch(device))
        if device == "cuda":
            torch.cuda.synchronize()
        lengths = np.array([len(x) for x in part])
        rates.append((model.real_tokens - r0) * shape.flops_per_token(effective_seq(lengths))
                     / (time.perf_counter() - p0))
        measured.extend(lengths)
        passes += 1
    elapsed = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu x{threads} threads"
    seq_eff = effective_seq(np.array(measured))
    fpt = shape.flops_per_token(seq_eff)
    # The median pass: on a shared machine a burst of someone else's work slows a few passes,
    # and the profile should describe the hardware, not the burst.
    fps = float(np.median(rates))
    return {"tokens_per_s": fps / fpt, "seq_eff": round(seq_eff, 1), "flops_per_token": fpt, "flops_per_s": fps,
            "tokens_per_s_mean": sum(measured) / elapsed, "passes": passes,
            "device": name, "threads": threads if device == "cpu" else None, "rows": len(measured),
            "seconds": round(elapsed, 2), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": cfg.dense.model, "dtype": cfg.dense.dtype, "gpu_type": _device_key(cfg, device, name),
            "dense_setting": model.setting.label}
