"""Dense encoding: token ids -> sentence-transformers model -> MRL truncation -> normalisation ->
quantization, all on the model's device before copying back.

Forward passes are shaped by :mod:`indexer.encoders.batching` (a token budget over length-sorted
rows); the actor stage that runs this model is :class:`indexer.stages.encode.Encode`.

On CUDA the encoder keeps more than one batch in flight: the next batch's ids are padded on the
host into pinned memory and copied on a side stream while the current batch computes, and each
batch's (already quantized) result is copied back on another stream while the next one computes.
Weights run in bfloat16 (float16 where bf16 is unsupported). With FlashAttention-2 installed,
BERT-class models run unpadded (variable-length sequences packed into one row); otherwise SDPA
attention on length-bucketed batches, where padding is small. ``backend="compile"`` or
``"cudagraphs"`` adds ``torch.compile`` per bucketed shape (widths rounded up, row counts
bucketed), off by default: measure speed and quality on a GPU before turning it on.

On CPU, ``backend="openvino"`` (and ``auto``, the config's default) runs an OpenVINO export of the
model instead (:mod:`indexer.encoders.openvino`): fp32, bf16 or NNCF int8, same batching and
post-processing.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable, Sequence

import numpy as np

from ..quantize import Calibration
from .batching import (COMPILE_WIDTH_MULTIPLE, CUDA_WIDTH_MULTIPLE, ForwardPass, flatten_features, pad_rows,
                       plan_shapes)

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "flash_attention_2", "eager")
BACKEND_CHOICES = ("auto", "torch", "compile", "cudagraphs", "openvino")
COMPILE_RECOMPILE_LIMIT = 256  # torch._dynamo's per-function limit is 8 shapes; bucketing needs more


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    """``auto``: bfloat16 on CUDA devices that support it, else float16 on CUDA; float32 on CPU."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def resolve_attention(attention: str, device: str, torch_dtype, backend: str = "torch") -> str:
    """``auto``: FlashAttention-2 (unpadded, variable length) on CUDA in 16-bit when ``flash_attn``
    is installed and the model runs eagerly; SDPA otherwise."""
    import torch

    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"unknown attention {attention!r}; allowed: {', '.join(ATTENTION_CHOICES)}")
    if attention != "auto":
        return attention
    if (device.startswith("cuda") and torch_dtype in (torch.float16, torch.bfloat16) and backend == "torch"
            and importlib.util.find_spec("flash_attn") is not None):
        return "flash_attention_2"
    return "sdpa"


def pack_bits(bits):
    """``(n, d)`` booleans -> ``(n, ceil(d / 8))`` uint8, big-endian like :func:`numpy.packbits`."""
    import torch

    n, d = bits.shape
    b = bits.to(torch.int32)
    if d % 8:
        b = torch.nn.functional.pad(b, (0, 8 - d % 8))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=bits.device)
    return (b.view(n, b.shape[1] // 8, 8) * weights).sum(dim=2).to(torch.uint8)


class Postprocess:
    """MRL truncation, re-normalisation and quantization as torch ops on the embeddings' device.

    Called on each batch before it is copied back, so only storage-form bytes cross the bus.
    Returns a tuple: (storage-form vectors,) plus int8 rescoring codes for binary with rescoring.
    Results match :mod:`indexer.quantize` (numpy), which stays the reference.
    """

    def __init__(self, dim: int | None, quantization: str, calibration: Calibration | None, rescore: bool = False):
        if quantization not in ("none", "int8", "uint8", "binary"):
            raise ValueError(f"unknown quantization {quantization!r}")
        if quantization in ("int8", "uint8") and calibration is None:
            raise ValueError(f"quantization {quantization} needs a calibration")
        self.dim = dim
        self.quantization = quantization
        self.calibration = calibration
        self.rescore = quantization == "binary" and rescore and calibration is not None
        self._ranges: dict[str, tuple[Any, Any]] = {}

    def _codes(self, x):
        import torch

        key = str(x.device)
        if key not in self._ranges:
            self._ranges[key] = (torch.as_tensor(self.calibration.lo_arr, device=x.device),
                                 torch.as_tensor(self.calibration.scale_arr, device=x.device))
        lo, scale = self._ranges[key]
        return torch.clamp(torch.round((x - lo) / scale), 0, 255).to(torch.uint8)

    def __call__(self, emb) -> tuple:
        import torch

        x = emb[:, : self.dim] if self.dim else emb
        x = torch.nn.functional.normalize(x.float(), dim=1)
        if self.quantization == "none":
            return (x,)
        if self.quantization in ("int8", "uint8"):
            return (self._codes(x),)
        packed = pack_bits(x > 0)
        return (packed, self._codes(x)) if self.rescore else (packed,)


def postprocess(emb, dim: int | None, quantization: str, calibration: Calibration | None,
                rescore: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """MRL truncation + re-normalisation + quantization on the tensor's device; numpy results.

    Returns (storage-form vectors, int8 rescoring codes or None). Binary packs sign bits.
    """
    out = Postprocess(dim, quantization, calibration, rescore)(emb)
    host = [t.cpu().numpy() for t in out]
    return host[0], (host[1] if len(host) > 1 else None)


class DenseModel:
    """A sentence-transformers model run on pre-tokenized ids with token-budget batching.

    ``attention`` is passed to transformers as ``attn_implementation`` (``auto``: see
    :func:`resolve_attention`); ``backend`` is ``torch`` (eager), ``compile`` (``torch.compile``,
    ``dynamic=False``, one compilation per bucketed shape) or ``cudagraphs`` (the same with CUDA
    graphs, GPU only), ``openvino`` (CPU: an OpenVINO export at ``precision``) or ``auto``
    (:func:`indexer.encoders.openvino.choose_setting`; ``setting`` says what was chosen). Exports
    live under ``cache_dir``; an int8 export not cached yet calibrates on ``calibration_texts``.
    ``real_tokens`` and ``padding_tokens`` count what the device computed.
    """

    def __init__(self, model_ref: str, device: str = "auto", dtype: str = "auto",
                 max_seq_length: int | None = None, torch_threads: int | None = None,
                 attention: str = "auto", backend: str = "torch", precision: str = "auto",
                 cache_dir: str | None = None, calibration_texts: Sequence[str] | None = None):
        import torch

        from . import openvino as ov
        from .models import tokenizer_info

        if backend not in BACKEND_CHOICES:
            raise ValueError(f"unknown dense backend {backend!r}; allowed: {', '.join(BACKEND_CHOICES)}")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = resolve_device(device)
        self.cuda = self.device.startswith("cuda")
        if backend == "cudagraphs" and not self.cuda:
            raise ValueError("dense.backend=cudagraphs needs a CUDA device; use torch or compile on CPU")
        self.model_ref = model_ref
        self.setting = ov.choose_setting(backend, precision, dtype, self.device, ov.cpu_flags())
        self.backend = self.setting.backend
        self.info = tokenizer_info(model_ref, max_seq_length)
        self.padding_tokens = 0
        self.real_tokens = 0
        self.ov: ov.OpenVINOEncoder | None = None
        if self.backend == "openvino":
            self._load_openvino(cache_dir, calibration_texts, torch_threads)
            return
        self._load_torch(dtype, attention)

    def _load_openvino(self, cache_dir: str | None, calibration_texts: Sequence[str] | None,
                       threads: int | None) -> None:
        import torch

        from . import openvino as ov
        from .models import resolve_model
        from .tokens import tokenize_texts

        precision = self.setting.precision
        calibration = None
        if precision == "int8" and calibration_texts:
            limit = min(ov.INT8_SEQ_LENGTH, self.info.max_seq_length)
            calibration, _, _, _ = tokenize_texts(list(calibration_texts), self.model_ref, limit)
        self.export_path, self.exported = ov.ensure_export(resolve_model(self.model_ref), precision,
                                                           ov.cache_root(cache_dir), calibration, self.info.pad_id)
        self.ov = ov.OpenVINOEncoder(self.export_path, precision, threads)
        self.model = None
        self.torch_dtype = torch.float32
        self.attention = "openvino"
        self.full_dim = self.ov.dim
        self.flatten = False
        self.position_offset = 0
        self.width_multiple = 1

    def _load_torch(self, dtype: str, attention: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from .models import ModelError, resolve_model

        model_ref, backend = self.model_ref, self.backend
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.attention = resolve_attention(attention, self.device, self.torch_dtype, backend)
        kwargs: dict[str, Any] = {"attn_implementation": self.attention}
        if self.torch_dtype != torch.float32:
            kwargs["dtype"] = self.torch_dtype
        path = resolve_model(model_ref)
        try:
            self.model = SentenceTransformer(path, device=self.device, model_kwargs=kwargs)
        except (ValueError, ImportError) as e:
            if attention != "auto":
                raise ModelError(f"can't load {model_ref!r} with attention={self.attention!r}: {e}; "
                                 "set dense.attention=auto") from e
            log.warning("%s: attention %s unavailable (%s); using the model's default", model_ref, self.attention, e)
            self.attention = "default"
            self.model = SentenceTransformer(path, device=self.device)
        self.model.max_seq_length = self.info.max_seq_length
        if self.torch_dtype != torch.float32:
            self.model.to(self.torch_dtype)
        self.model.eval()
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.full_dim = int(dim_fn())
        first = self.model[0]
        # Unpadded (packed) batches: sentence-transformers decides (FlashAttention-2 varlen available).
        self.flatten = backend == "torch" and bool(getattr(first, "can_flatten_inputs", False))
        self.position_offset = int(getattr(first, "_flatten_position_offset", 0) or 0)
        self.width_multiple = (COMPILE_WIDTH_MULTIPLE if backend in ("compile", "cudagraphs")
                               else CUDA_WIDTH_MULTIPLE if self.cuda else 1)
        if backend in ("compile", "cudagraphs"):
            self._compile(first)
        if self.cuda:
            self._h2d = torch.cuda.Stream(device=self.device)
            self._d2h = torch.cuda.Stream(device=self.device)

    def _compile(self, first) -> None:
        import torch

        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), COMPILE_RECOMPILE_LIMIT))
        target = getattr(first, "auto_model", None)
        if target is None:
            target = self.model
        # sentence-transformers calls ``model.forward`` directly, so wrap that (Module.compile only
        # wraps ``__call__``).
        target.forward = torch.compile(target.forward, dynamic=False,
                                       mode="reduce-overhead" if self.backend == "cudagraphs" else None)

    def shapes(self, lengths: np.ndarray, batch_tokens: int) -> list[ForwardPass]:
        """The batches this model runs for rows of these lengths."""
        if self.flatten:
            return plan_shapes(lengths, batch_tokens)
        return plan_shapes(lengths, batch_tokens, width_multiple=self.width_multiple,
                           max_width=self.info.max_seq_length, bucket_rows=self.backend in ("compile", "cudagraphs"))

    # -- one batch: host features, copy to device ---------------------------------------------
    def _host_features(self, ids: Sequence[np.ndarray], b: ForwardPass) -> dict[str, Any]:
        import torch

        rows = [ids[i] for i in b.idx]
        if self.flatten and all(len(r) for r in rows):
            return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                    for k, v in flatten_features(rows, self.position_offset).items()}
        if self.cuda:  # pad straight into pinned memory (cached by torch's host allocator)
            t_ids = torch.empty((b.rows, b.width), dtype=torch.int64, pin_memory=True)
            t_mask = torch.empty((b.rows, b.width), dtype=torch.int64, pin_memory=True)
            pad_rows(rows, b.width, b.rows, self.info.pad_id, t_ids.numpy(), t_mask.numpy())
            return {"input_ids": t_ids, "attention_mask": t_mask}
        arr, mask = pad_rows(rows, b.width, b.rows, self.info.pad_id)
        return {"input_ids": torch.from_numpy(arr), "attention_mask": torch.from_numpy(mask)}

    def _stage(self, ids: Sequence[np.ndarray], b: ForwardPass):
        """Features of batch ``b`` on the device, and the event that marks them copied (CUDA)."""
        import torch

        host = self._host_features(ids, b)
        if not self.cuda:
            return host, None
        if not host["input_ids"].is_pinned():
            host = {k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in host.items()}
        with torch.cuda.stream(self._h2d):
            dev = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                   for k, v in host.items()}
            ready = torch.cuda.Event()
            ready.record(self._h2d)
        return dev, ready

    def _forward(self, feats: dict[str, Any], n: int):
        import torch

        if self.backend == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        return self.model(feats)["sentence_embedding"][:n]

    # -- the loop --------------------------------------------------------------------------
    def run(self, ids: Sequence[np.ndarray], batch_tokens: int, post: Callable[[Any], tuple],
            to_host: bool = True) -> list:
        """``post(embeddings)`` of every row, in input order; one array per output of ``post``.

        ``to_host``: numpy arrays (copied back asynchronously, batch by batch); else tensors on
        the model's device. While batch k computes, batch k+1 is padded on the host and copied on
        a side stream, and batch k-1's result is copied back on another.
        """
        import torch

        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        batches = self.shapes(lengths, batch_tokens)
        order = np.concatenate([b.idx for b in batches]) if batches else np.zeros(0, np.int64)
        sorted_out: list | None = None
        pos = 0
        with torch.inference_mode():
            passes = self._openvino_passes(ids, batches) if self.ov is not None else self._torch_passes(ids, batches)
            for b, emb, packed in passes:
                outs = post(emb)
                if sorted_out is None:
                    sorted_out = [self._alloc((n, *o.shape[1:]), o.dtype, to_host) for o in outs]
                self._collect(outs, sorted_out, pos, to_host)
                pos += len(b.idx)
                real = int(lengths[b.idx].sum())
                self.real_tokens += real
                self.padding_tokens += 0 if packed else b.rows * b.width - real
            if sorted_out is None:  # no rows: empty outputs with the right shapes and dtypes
                outs = post(torch.zeros((0, self.full_dim), device=self.device))
                return [o.cpu().numpy() for o in outs] if to_host else list(outs)
            if self.cuda and to_host:
                self._d2h.synchronize()
            if to_host:
                result = []
                for s in sorted_out:
                    arr = np.empty(s.shape, dtype=s.numpy().dtype)
                    arr[order] = s.numpy()
                    result.append(arr)
                return result
            inverse = torch.empty_like(torch.from_numpy(order))
            inverse[torch.from_numpy(order)] = torch.arange(n)
            return [s[inverse.to(self.device)] for s in sorted_out]

    def _torch_passes(self, ids: Sequence[np.ndarray], batches: list[ForwardPass]):
        """``(batch, embeddings, packed)`` per batch, in order; on CUDA the next batch is padded and
        copied on a side stream while the caller post-processes this one."""
        import torch

        staged = self._stage(ids, batches[0]) if batches else None
        for k, b in enumerate(batches):
            feats, ready = staged
            if self.cuda:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(ready)
                for v in feats.values():
                    if isinstance(v, torch.Tensor):
                        v.record_stream(compute)
            emb = self._forward(feats, len(b.idx))
            yield b, emb, "cu_seq_lens_q" in feats
            if k + 1 < len(batches):
                staged = self._stage(ids, batches[k + 1])  # overlaps this batch's compute

    def _openvino_passes(self, ids: Sequence[np.ndarray], batches: list[ForwardPass]):
        """The same for the OpenVINO export: every batch runs first, one in flight per stream."""
        import torch

        padded = (pad_rows([ids[i] for i in b.idx], b.width, b.rows, self.info.pad_id) for b in batches)
        for b, emb in zip(batches, self.ov.map(padded)):
            yield b, torch.from_numpy(emb[:len(b.idx)]), False

    def _alloc(self, shape, dtype, to_host: bool):
        import torch

        if not to_host:
            return torch.empty(shape, dtype=dtype, device=self.device)
        return torch.empty(shape, dtype=dtype, pin_memory=self.cuda)

    def _collect(self, outs: tuple, dst: list, pos: int, to_host: bool) -> None:
        import torch

        m = len(outs[0])
        if not (self.cuda and to_host):
            for o, d in zip(outs, dst):
                d[pos:pos + m].copy_(o)
            return
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._d2h):
            self._d2h.wait_event(done)
            for o, d in zip(outs, dst):
                d[pos:pos + m].copy_(o, non_blocking=True)
                o.record_stream(self._d2h)

    def embed_ids(self, ids: list[np.ndarray], batch_tokens: int):
        """Embeddings (float32 torch tensor on the model's device), rows in input order."""
        return self.run(ids, batch_tokens, lambda e: (e.float(),), to_host=False)[0]

    def encode_ids(self, ids: list[np.ndarray], batch_tokens: int, post: Postprocess) -> list[np.ndarray]:
        """Storage-form vectors (numpy, input order): ``post`` runs on the device per batch."""
        return self.run(ids, batch_tokens, post, to_host=True)

    def encode_texts(self, texts: list[str], batch_tokens: int = 16384, prefix: str = ""):
        """Embed raw texts (used for queries): same tokenization and model path as documents."""
        from .tokens import tokenize_texts

        ids, _, _, _ = tokenize_texts([prefix + t for t in texts], self.model_ref, self.info.max_seq_length)
        return self.embed_ids(ids, batch_tokens)
