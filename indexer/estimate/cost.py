"""Encode cost: the one FLOP model of a transformer encoder, and tokens/s from a profile or a
stated derivation.

A transformer encoder costs ``2 * layers * (4 d^2 + 2 d d_ff)`` FLOPs per token for its matrix
products plus ``4 * layers * d * s`` for attention over an ``s``-token sequence. The device
sustains a stated share of its datasheet peak (GPUs) or a measured rate (CPUs); a profile measured
by ``indexer bench`` is converted the same way, so a corpus with longer chunks than the benchmarked
one costs more per token. ``benchmarks/gpu_throughput.py`` counts its useful FLOPs with this model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, JobConfig
from ..encoders.models import resolve_model
from ..prices import NoListPrice, hour_price
from .profiles import load_profile

log = logging.getLogger(__name__)

PEAK_TFLOPS: dict[str, tuple[float, str]] = {
    # Dense (no 2:4 sparsity) tensor-core peak in the dtype the encoder runs in (bf16; fp16 on T4).
    "H100": (989.0, "NVIDIA H100 SXM datasheet: BF16 tensor 1,979 TFLOP/s with sparsity, 989 dense"),
    "H100-PCIE": (756.0, "NVIDIA H100 PCIe datasheet: BF16 tensor 1,513 TFLOP/s with sparsity, 756 dense"),
    "H200": (989.0, "NVIDIA H200 SXM datasheet: BF16 tensor 1,979 TFLOP/s with sparsity, 989 dense"),
    "A100": (312.0, "NVIDIA A100 datasheet: BF16 tensor 312 TFLOP/s dense (624 with sparsity)"),
    "L4": (121.0, "NVIDIA L4 datasheet: BF16 tensor 242 TFLOP/s with sparsity, 121 dense"),
    "A10": (125.0, "NVIDIA A10 datasheet: BF16 tensor 125 TFLOP/s dense (250 with sparsity)"),
    "T4": (65.0, "NVIDIA T4 datasheet: FP16 tensor (mixed precision) 65 TFLOP/s; no BF16, set dense.dtype=float16"),
}
GPU_MFU = 0.25
"""Assumed share of the peak an encoder forward pass sustains (length-sorted batches, little
padding). An assumption, not a measurement: ``indexer bench`` on the GPU replaces it."""

CPU_GFLOPS_PER_CORE = 46.1
"""Default CPU rate per core when no profile exists; where it comes from is ``CPU_SOURCE``."""
CPU_SOURCE = ("measured: `indexer bench` of the packaged MiniLM-L6 (fp32, 2 torch threads) on SciFact on a 2-core "
              "x86 VM, median pass of two runs of benchmarks/estimate_accuracy.py on 2026-11-25: 96.7 and 87.6 GFLOP/s "
              "(4.1k and 3.7k tokens/s at about 245-token chunks; the latest in "
              "benchmarks/results/estimate_accuracy.json); per core, times this machine's cores")


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count of an encoder depends on, read from the model's config (no weights)."""

    layers: int
    hidden: int
    intermediate: int
    source: str

    def flops_per_token(self, seq_eff: float) -> float:
        """Forward FLOPs per token: matrix products (QKV, output, FFN) plus attention scores and mix."""
        dense = 2 * self.layers * (4 * self.hidden ** 2 + 2 * self.hidden * self.intermediate)
        attention = 4 * self.layers * self.hidden * seq_eff
        return float(dense + attention)

    def forward_flops(self, lengths: np.ndarray) -> float:
        """Forward FLOPs of one pass over sequences of these token lengths (real tokens only)."""
        lengths = np.asarray(lengths, dtype=np.float64)
        return self.flops_per_token(effective_seq(lengths)) * float(lengths.sum())


def shape_from_config(c: dict[str, Any], source: str) -> ModelShape:
    """The shape from a transformers config dict (BERT, DistilBERT and T5-style key names)."""
    hidden = int(c.get("hidden_size") or c.get("d_model") or c["dim"])
    layers = int(c.get("num_hidden_layers") or c.get("n_layers") or c["num_layers"])
    inter = int(c.get("intermediate_size") or c.get("hidden_dim") or 4 * hidden)
    return ModelShape(layers, hidden, inter, source)


def model_shape(model_ref: str) -> ModelShape:
    """Layers, hidden and FFN size from the transformer's config.json; BERT-base when unavailable."""
    from ..encoders.models import transformer_subdir

    try:
        path = resolve_model(model_ref)
        cfg_path = Path(transformer_subdir(path), "config.json") if os.path.isdir(path) else None
        if cfg_path is None or not cfg_path.exists():
            from transformers import AutoConfig

            c = AutoConfig.from_pretrained(path).to_dict()
        else:
            c = json.loads(cfg_path.read_text())
        return shape_from_config(c, f"{model_ref} config.json")
    except Exception as e:  # noqa: BLE001 - hub names without a local copy
        log.warning("can't read the shape of %s (%s): assuming BERT-base (12 x 768, FFN 3072)", model_ref, e)
        return ModelShape(12, 768, 3072, "assumed BERT-base: model config not readable")


def effective_seq(lengths: np.ndarray) -> float:
    """Token-weighted mean sequence length, sum(s^2) / sum(s): what attention cost per token sees."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return float((lengths ** 2).sum() / lengths.sum()) if lengths.size and lengths.sum() else 0.0


def throughput(cfg: JobConfig, seq_eff: float, shape: ModelShape | None = None) -> dict[str, Any]:
    """Encode tokens/s of one worker for chunks of effective length ``seq_eff``, with its basis."""
    shape = shape or model_shape(cfg.dense.model)
    fpt = shape.flops_per_token(seq_eff)
    gpu_type = cfg.cost.gpu_type
    prof = load_profile(cfg)
    if prof and prof.get("flops_per_s"):
        fps = float(prof["flops_per_s"])
        basis = "measured"
        source = (f"`indexer bench` at {prof.get('measured_at')} on {prof.get('device')}: "
                  f"{prof['tokens_per_s']:,.0f} tokens/s at {prof.get('seq_eff', 0):.0f}-token chunks, "
                  f"scaled to {seq_eff:.0f}-token chunks by FLOPs per token")
    elif prof:
        return {"tokens_per_s": float(prof["tokens_per_s"]), "basis": "measured", "flops_per_token": fpt,
                "seq_eff": round(seq_eff, 1), "source": f"`indexer bench` at {prof.get('measured_at')}"}
    elif gpu_type == "cpu":
        cores = os.cpu_count() or 1
        fps = CPU_GFLOPS_PER_CORE * 1e9 * cores
        basis, source = "derived", f"{CPU_GFLOPS_PER_CORE} GFLOP/s per core x {cores} cores ({CPU_SOURCE})"
    elif gpu_type in PEAK_TFLOPS:
        peak, sheet = PEAK_TFLOPS[gpu_type]
        fps = peak * 1e12 * GPU_MFU
        basis, source = "derived", f"{peak:g} TFLOP/s ({sheet}) x {GPU_MFU} assumed MFU"
    else:
        raise KeyError(f"no throughput for cost.gpu_type={gpu_type!r}: run `indexer bench` on that hardware "
                       f"or pick one of {['cpu', *sorted(PEAK_TFLOPS)]}")
    return {
        "tokens_per_s": fps / fpt,
        "basis": basis,
        "source": f"{source}; {fpt / 1e6:.1f} MFLOP/token ({shape.layers} layers, d={shape.hidden}, "
                  f"ffn={shape.intermediate}, {seq_eff:.0f}-token chunks)",
        "flops_per_s": fps,
        "flops_per_token": fpt,
        "seq_eff": round(seq_eff, 1),
    }


def gpu_hour_price(cfg: JobConfig) -> tuple[float, str]:
    """(USD per GPU-hour, or per CPU node-hour on ``cpu``; where the price comes from): the configured
    ``cost.gpu_hour_usd``, else the dated list price of ``cost.gpu_type`` (:mod:`indexer.prices`; a CPU
    node has the vCPUs the CPU throughput assumes)."""
    c = cfg.cost
    try:
        return hour_price(c.gpu_type, c.gpu_hour_usd, c.gpu_hour_source, os.cpu_count() or 1)
    except NoListPrice as e:
        raise ConfigError(str(e.args[0])) from None
