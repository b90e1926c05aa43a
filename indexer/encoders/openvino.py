"""OpenVINO CPU backend for the dense model: which setting a node runs, the export cache, inference.

:func:`choose_setting` is the pure decision (backend and precision from the config, the device and
the CPU's flags): ``auto`` runs OpenVINO on CPUs, in bf16 where the CPU computes bf16 natively
(``avx512_bf16`` or ``amx_bf16``) and fp32 elsewhere; on CUDA the torch path stays as it is.

The sentence-transformers model (transformer, pooling, normalisation) is converted once per model
and precision with ``openvino.convert_model`` and saved into a cache keyed by a sha256 of the model's
files and the setting (:func:`export_key`); int8 is NNCF post-training quantization on a sample of
corpus texts. An export is written to a temporary folder and renamed into place, so encoder actors
exporting at the same time never see a half-written model. The compiled model has its inference
precision and thread count set explicitly (OpenVINO's own default precision depends on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

OV_PRECISIONS = ("fp32", "bf16", "int8")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
EXPORT_FORMAT = 1  # bump when the exported graph changes, so old cache entries are not reused
CALIBRATION_TEXTS = 300
"""Corpus texts NNCF calibrates int8 activations on."""
INT8_SEQ_LENGTH = 256
"""Calibration texts are cut to this many tokens (or the model's limit if lower)."""


class OpenVINOError(RuntimeError):
    """OpenVINO can't run this setting here; the message says what to change."""


@dataclass(frozen=True)
class DenseSetting:
    """What one node's dense encoder runs: ``backend`` (torch, compile, cudagraphs, openvino) and,
    for openvino, ``precision`` (fp32, bf16, int8); torch backends keep ``dense.dtype`` ("dtype")."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` can't be read)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(flags: frozenset[str]) -> bool:
    return bool(NATIVE_BF16_FLAGS & flags)


def choose_setting(backend: str, precision: str, dtype: str, device: str, flags: frozenset[str]) -> DenseSetting:
    """The setting a node with ``device`` ("cpu" or "cuda...") and CPU ``flags`` runs.

    ``auto``: torch on CUDA (unchanged), and on CPU torch when ``dtype`` is set (a torch setting),
    else OpenVINO at ``precision`` (``auto``: bf16 with native bf16, fp32 otherwise). The config
    already rejected the combinations that make no sense (:class:`indexer.config.DenseConfig`).
    """
    cuda = device.startswith("cuda")
    if backend == "auto":
        if cuda or dtype != "auto":
            return DenseSetting("torch", "dtype")
        backend = "openvino"
    if backend != "openvino":
        return DenseSetting(backend, "dtype")
    if cuda:
        raise OpenVINOError("dense.backend=openvino runs on CPU only; set encode.device=cpu or dense.backend=auto")
    if precision == "auto":
        precision = "bf16" if native_bf16(flags) else "fp32"
    if precision not in OV_PRECISIONS:
        raise OpenVINOError(f"unknown OpenVINO precision {precision!r}; allowed: {', '.join(OV_PRECISIONS)}")
    return DenseSetting("openvino", precision)


# -- the export cache ------------------------------------------------------------------------

def cache_root(configured: str | None = None) -> Path:
    """``dense.cache_dir``, else ``$INDEXER_CACHE_DIR/openvino``, else ``~/.cache/indexer/openvino``."""
    if configured:
        return Path(configured).expanduser()
    from .models import cache_base

    return cache_base() / "openvino"


def model_folder(model_path: str) -> Path:
    """The local folder of a model (a hub name: its snapshot in the local HF cache, offline)."""
    p = Path(model_path)
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_path, local_files_only=True))
    except Exception as e:  # noqa: BLE001
        raise OpenVINOError(f"{model_path!r} is not a local folder nor in the local HF cache: {e}") from e


def export_key(model_path: str, precision: str) -> str:
    """sha256 of the model's files (relative names and bytes) and the setting it is exported at."""
    import openvino

    folder = model_folder(model_path)
    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    setting = {"precision": precision, "format": EXPORT_FORMAT, "openvino": openvino.__version__}
    if precision == "int8":
        import nncf

        setting["nncf"] = nncf.__version__
    h.update(json.dumps(setting, sort_keys=True).encode())
    return h.hexdigest()


class _Embed:
    """The sentence-transformers model as ``(input_ids, attention_mask) -> sentence_embedding``."""

    @staticmethod
    def module(st_model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, st):
                super().__init__()
                self.st = st

            def forward(self, input_ids, attention_mask):
                return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

        return Wrapped(st_model).eval()


def convert(model_path: str, precision: str, calibration_ids: Sequence[np.ndarray] | None, pad_id: int):
    """The model as an OpenVINO graph with dynamic batch and width (int8: NNCF-quantized)."""
    import openvino as ov
    import torch
    from sentence_transformers import SentenceTransformer

    folder = str(model_folder(model_path))
    try:
        st = SentenceTransformer(folder, device="cpu", model_kwargs={"attn_implementation": "sdpa"})
    except ValueError:  # an architecture without SDPA support (e.g. MPNet): its own attention
        st = SentenceTransformer(folder, device="cpu")
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    # tracing warns about every shape-dependent branch; the graph is dynamic in batch and width
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(_Embed.module(st), example_input=(ids, mask),
                                 input=[("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)])
    if precision == "int8":
        if not calibration_ids:
            raise OpenVINOError("int8 export needs calibration texts from the corpus")
        import nncf

        from .batching import pad_rows

        items = []
        for row in calibration_ids:
            a, m = pad_rows([row], len(row), 1, pad_id)
            items.append({"input_ids": a, "attention_mask": m})
        model = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items))
    return model


def ensure_export(model_path: str, precision: str, root: Path, calibration_ids: Sequence[np.ndarray] | None = None,
                  pad_id: int = 0) -> tuple[Path, bool]:
    """``(model.xml of the cached export, whether this call exported it)``. Exports when missing:
    written into a temporary folder beside the cache entry, then renamed into place; a concurrent
    export that finished first wins and this one is dropped."""
    import openvino as ov

    key = export_key(model_path, precision)
    final = root / key
    xml = final / "model.xml"
    if xml.exists():
        return xml, False
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-{uuid.uuid4().hex[:8]}-", dir=root))
    try:
        model = convert(model_path, precision, calibration_ids, pad_id)
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "export.json").write_text(json.dumps({
            "model": str(model_path), "precision": precision, "format": EXPORT_FORMAT, "openvino": ov.__version__,
            "calibration_texts": len(calibration_ids or []), "seconds": round(time.perf_counter() - t0, 2)}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not xml.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to OpenVINO %s in %.1fs: %s", model_path, precision, time.perf_counter() - t0, final)
    return xml, True


# -- inference -------------------------------------------------------------------------------

class OpenVINOEncoder:
    """A compiled export: batches of ``(input_ids, attention_mask)`` int64 arrays -> float32 embeddings (:meth:`map`).

    Inference precision is bf16 only for the bf16 setting (f32 for fp32 and for the layers int8
    leaves unquantized); ``threads`` sets ``INFERENCE_NUM_THREADS`` (the actor's CPUs). Compiled
    for throughput: OpenVINO splits the threads into streams, and :meth:`map` keeps one batch in
    flight per stream, so a core taken by another process stalls one stream, not every thread of
    one wide inference."""

    def __init__(self, xml: Path, precision: str, threads: int | None):
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                  "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.dim = int(self.compiled.outputs[0].get_partial_shape()[1].get_length())

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Embeddings of each ``(input_ids, attention_mask)`` batch, in order. ``batches`` is read
        lazily: the next one is built while up to :attr:`requests` batches run."""
        results: dict[int, np.ndarray] = {}
        held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # inputs stay alive until their request is done

        def done(request, k: int) -> None:
            results[k] = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
            held.pop(k, None)

        self.queue.set_callback(done)
        count = 0
        for count, (ids, mask) in enumerate(batches, start=1):
            held[count - 1] = (ids, mask)
            self.queue.start_async({0: ids, 1: mask}, count - 1, share_inputs=True)
        self.queue.wait_all()
        return [results[k] for k in range(count)]
