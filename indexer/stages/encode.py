"""Encode stage (actor pool): token ids -> storage-form dense vectors (and SPLADE sparse vectors).

:class:`EncodeSpec` is everything an encoder actor needs, decided on the driver; the model loads
in the actor (:meth:`Encode.setup`), never on the driver. :func:`encode_stage` adds the actor pool
to a dataset, sized by the run's placement.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import schema
from ..config import JobConfig, SparseKind
from ..encoders.dense import DenseModel, Postprocess
from ..encoders.tokens import document_texts, ragged
from ..quantize import Calibration
from .base import Stage
from .stats import StageReporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeSpec:
    """What an encoder actor runs: the model and its device settings, the token budget of a forward
    pass, the stored form of the vectors (dimension, quantization, calibration ranges as JSON) and
    the SPLADE model for sparse vectors (None: no sparse vectors from this stage)."""

    model: str
    device: str  # "cuda" or "cpu" (resolved by the placement), or "auto"
    dtype: str
    max_seq_length: int | None
    torch_threads: int | None
    batch_tokens: int
    dim: int | None  # stored dimension (MRL truncation); None keeps the model's
    quantization: str  # none | int8 | uint8 | binary
    calibration: dict[str, Any] | None = None  # Calibration.to_json(), for int8/uint8 and binary rescoring
    attention: str = "auto"
    backend: str = "torch"
    rescore: bool = False
    document_prefix: str = ""
    splade_model: str | None = None
    splade_max_seq_length: int | None = None
    precision: str = "auto"  # OpenVINO precision (backend openvino / auto on CPU)
    cache_dir: str | None = None  # OpenVINO exports; None = the default cache on each node
    export_texts: tuple[str, ...] | None = None  # int8: corpus texts a node without the export calibrates on

    @classmethod
    def from_config(cls, cfg: JobConfig, *, device: str, torch_threads: int | None, dim: int | None, quantization: str,
                    calibration: dict[str, Any] | None, export_texts: tuple[str, ...] | None = None) -> "EncodeSpec":
        """The spec of a run: model settings from ``cfg``, device and threads from the placement."""
        return cls(
            model=cfg.dense.model,
            device=device,
            dtype=cfg.dense.dtype,
            attention=cfg.dense.attention,
            backend=cfg.dense.backend,
            precision=cfg.dense.precision,
            cache_dir=cfg.dense.cache_dir,
            export_texts=export_texts,
            max_seq_length=cfg.dense.max_seq_length,
            torch_threads=torch_threads,
            batch_tokens=cfg.encode.tokens_per_batch(device),
            dim=dim,
            quantization=quantization,
            calibration=calibration,
            rescore=cfg.dense.rescore,
            document_prefix=cfg.dense.document_prefix,
            splade_model=cfg.sparse.model if cfg.sparse.kind == SparseKind.splade else None,
            splade_max_seq_length=cfg.sparse.max_seq_length,
        )

    def dense_only(self) -> "EncodeSpec":
        """The same spec without SPLADE (calibration samples need dense vectors only)."""
        return dataclasses.replace(self, splade_model=None)


class Encode(Stage):
    """Pipeline stage (actor pool): dense vectors (and SPLADE sparse vectors when configured).

    The model loads when the actor starts, never on the driver. Rows arrive with token ids from
    :class:`indexer.stages.tokenize.Tokenize`; rows leave with storage-form vectors.
    """

    name = "encode"

    def __init__(self, spec: EncodeSpec, reporter: StageReporter | None = None):
        super().__init__(reporter)
        self.spec = spec
        self.setup()

    def setup(self) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        t0 = time.perf_counter()
        spec = self.spec
        self.model = DenseModel(spec.model, spec.device, spec.dtype, spec.max_seq_length, spec.torch_threads,
                                spec.attention, spec.backend, spec.precision, spec.cache_dir, spec.export_texts)
        cal = spec.calibration
        self.calibration = Calibration.from_json(cal) if isinstance(cal, dict) else cal
        self.post = Postprocess(spec.dim, spec.quantization, self.calibration, spec.rescore)
        self.splade = None
        if spec.splade_model:
            from ..encoders.sparse import SpladeModel

            self.splade = SpladeModel(spec.splade_model, self.model.device, spec.splade_max_seq_length)
        log.info("encoder ready on %s (%s, %s, attention %s) in %.1fs", self.model.device, self.dense_setting,
                 str(self.model.torch_dtype).removeprefix("torch."), self.model.attention, time.perf_counter() - t0)

    @property
    def dense_setting(self) -> str:
        """What this actor's dense model runs, e.g. ``openvino/bf16`` or ``torch/float32``."""
        s = self.model.setting
        if s.backend == "openvino":
            return s.label
        return f"{s.backend}/{str(self.model.torch_dtype).removeprefix('torch.')}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            pad0, real0 = self.model.padding_tokens, self.model.real_tokens
            outs = self.model.encode_ids(list(batch[schema.INPUT_IDS]), self.spec.batch_tokens, self.post)
            batch[schema.DENSE] = outs[0]
            if len(outs) > 1:
                batch[schema.DENSE_RESCORE] = outs[1]
            if self.splade is not None:
                idx, val = self.splade.encode_documents(document_texts(batch, self.spec.document_prefix))
                batch[schema.SPARSE_INDICES] = ragged(idx)
                batch[schema.SPARSE_VALUES] = ragged(val)
            del batch[schema.INPUT_IDS]
            extra["tokens"] = self.model.real_tokens - real0
            extra["padding_tokens"] = self.model.padding_tokens - pad0
            extra["dense_setting"] = self.dense_setting
        return batch


def export_dense(spec: EncodeSpec) -> dict[str, Any]:
    """The dense setting this node runs for ``spec``, exporting the OpenVINO model into the cache
    when that setting is OpenVINO and the export is missing (nothing is loaded for torch settings).
    Run before the encode stage, so no timed stage pays for an export."""
    from ..encoders import openvino as ov
    from ..encoders.models import resolve_model, tokenizer_info
    from ..encoders.tokens import tokenize_texts

    t0 = time.perf_counter()
    device = "cuda" if spec.device.startswith("cuda") else "cpu"
    setting = ov.choose_setting(spec.backend, spec.precision, spec.dtype, device, ov.cpu_flags())
    out: dict[str, Any] = {"setting": setting.label, "exported": False}
    if setting.backend == "openvino":
        info = tokenizer_info(spec.model, spec.max_seq_length)
        calibration = None
        if setting.precision == "int8" and spec.export_texts:
            limit = min(ov.INT8_SEQ_LENGTH, info.max_seq_length)
            calibration, _, _, _ = tokenize_texts(list(spec.export_texts), spec.model, limit)
        xml, out["exported"] = ov.ensure_export(resolve_model(spec.model), setting.precision,
                                                ov.cache_root(spec.cache_dir), calibration, info.pad_id)
        out["export"] = xml.parent.name
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def encode_stage(ds: Any, spec: EncodeSpec, *, block_rows: int, workers: int, max_workers: int, num_cpus: float,
                 num_gpus: float, reporter: StageReporter) -> Any:
    """``ds`` through a pool of :class:`Encode` actors: ``workers`` of them (autoscaling up to
    ``max_workers``), each with ``num_cpus`` CPU slots and ``num_gpus`` GPUs (0: CPU actors),
    ``block_rows`` rows per call. Actors restart and batches retry when a worker dies, and several
    actors spread over the nodes."""
    from ray.data import ActorPoolStrategy

    pool = ActorPoolStrategy(size=workers) if max_workers == workers else \
        ActorPoolStrategy(min_size=workers, max_size=max_workers)
    remote_args: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1}
    if workers > 1:
        remote_args["scheduling_strategy"] = "SPREAD"
    return ds.map_batches(
        Encode,
        fn_constructor_kwargs={"spec": spec, "reporter": reporter},
        batch_size=block_rows,
        batch_format="numpy",
        compute=pool,
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
        **remote_args,
    )
