"""Dense encoding on an actor: token ids -> sentence-transformers model -> MRL truncation ->
normalisation -> quantization, all on the model's device before copying back.

Batches are planned by a token budget over length-sorted rows (padding counted), not a fixed row
count, so long and short chunks both keep the device busy without running out of memory.

On CUDA the encoder keeps more than one batch in flight: the next batch's ids are padded on the
host into pinned memory and copied on a side stream while the current batch computes, and each
batch's (already quantized) result is copied back on another stream while the next one computes.
Weights run in bfloat16 (float16 where bf16 is unsupported). With FlashAttention-2 installed,
BERT-class models run unpadded (variable-length sequences packed into one row); otherwise SDPA
attention on length-bucketed batches, where padding is small. ``backend="compile"`` or
``"cudagraphs"`` adds ``torch.compile`` per bucketed shape (widths rounded up, row counts
bucketed), off by default: measure speed and quality on a GPU before turning it on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import schema
from ..quantize import Calibration
from ..stats import StageReporter

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "flash_attention_2", "eager")
BACKEND_CHOICES = ("torch", "compile", "cudagraphs")
CUDA_WIDTH_MULTIPLE = 8  # tensor-core friendly widths on GPU; costs a few padding tokens per row at most
COMPILE_WIDTH_MULTIPLE = 32  # fewer distinct shapes for compiled backends (one compilation per shape)
COMPILE_MIN_ROWS = 8  # row counts of compiled shapes are powers of two from here up to the budget
COMPILE_RECOMPILE_LIMIT = 256  # torch._dynamo's per-function limit is 8 shapes; bucketing needs more


@dataclass(frozen=True)
class Batch:
    """One forward pass: row indices into the block, padded width, padded row count.

    ``rows > len(idx)`` only for compiled backends, which need a small set of fixed shapes; the
    extra rows are dummies whose outputs are dropped.
    """

    idx: np.ndarray
    width: int
    rows: int


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def plan_shapes(lengths: np.ndarray, batch_tokens: int, max_rows: int | None = None, width_multiple: int = 1,
                max_width: int | None = None, bucket_rows: bool = False) -> list[Batch]:
    """Group row indices into batches, longest first, so ``rows * width <= batch_tokens``.

    ``width`` is the batch's longest row rounded up to ``width_multiple`` (never above
    ``max_width``, the model's token limit). With ``bucket_rows`` the row count of a batch that
    is not full is rounded up to a power of two (at least :data:`COMPILE_MIN_ROWS`), so a
    compiled model sees few distinct shapes. A single row longer than the budget gets a batch of
    its own. Every index appears in exactly one batch.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches: list[Batch] = []
    start, n = 0, len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        width = _round_up(longest, max(1, width_multiple))
        if max_width:
            width = max(longest, min(width, max_width))
        cap = max(1, batch_tokens // width)
        if max_rows:
            cap = min(cap, max_rows)
        idx = order[start:start + cap]
        rows = len(idx)
        if bucket_rows and rows < cap:
            rows = min(cap, max(COMPILE_MIN_ROWS, 1 << (rows - 1).bit_length()))
        batches.append(Batch(idx, width, rows))
        start += cap
    return batches


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_rows: int | None = None) -> list[np.ndarray]:
    """Row indices of each batch, longest first, so ``rows * longest <= batch_tokens``.

    A single row longer than the budget gets a batch of its own. Returns index arrays into
    ``lengths``; every index appears exactly once.
    """
    return [b.idx for b in plan_shapes(lengths, batch_tokens, max_rows)]


def padding_share(lengths: np.ndarray, batches: Sequence[Batch]) -> float:
    """Share of the tokens a device computes that are padding: ``1 - real / (sum rows * width)``."""
    lengths = np.asarray(lengths)
    computed = sum(b.rows * b.width for b in batches)
    real = sum(int(lengths[b.idx].sum()) for b in batches)
    return 0.0 if computed == 0 else 1.0 - real / computed


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


def flatten_features(ids: Sequence[np.ndarray], position_offset: int = 0) -> dict[str, Any]:
    """Variable-length rows packed into one row, as ``transformers.DataCollatorWithFlattening``
    (flash-attention kwargs and ``seq_idx``) builds them: numpy arrays plus two ints."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    total = int(lengths.sum())
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]) if len(ids) else np.zeros(0, np.int64)
    starts = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], lengths) + position_offset
    cu = starts.astype(np.int32)
    longest = int(lengths.max()) if len(ids) else 0
    return {"input_ids": flat[None, :], "position_ids": positions[None, :],
            "seq_idx": np.repeat(np.arange(len(ids), dtype=np.int32), lengths)[None, :],
            "cu_seq_lens_q": cu, "cu_seq_lens_k": cu.copy(), "max_length_q": longest, "max_length_k": longest}


def pad_rows(ids: Sequence[np.ndarray], width: int, rows: int, pad_id: int,
             out_ids: np.ndarray | None = None, out_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(rows, width)`` int64 ids and attention mask; rows past ``len(ids)`` are
    dummies (one pad token, masked in) so no row is fully masked. Writes into ``out_*`` if given."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    arr = out_ids if out_ids is not None else np.empty((rows, width), dtype=np.int64)
    mask = out_mask if out_mask is not None else np.empty((rows, width), dtype=np.int64)
    arr.fill(pad_id)
    np.less(np.arange(width)[None, :], np.concatenate([lengths, np.ones(rows - len(ids), np.int64)])[:, None],
            out=mask, casting="unsafe")
    if len(ids):
        flat = np.concatenate([np.asarray(x) for x in ids])
        row = np.repeat(np.arange(len(ids)), lengths)
        starts = np.cumsum(lengths) - lengths
        arr[row, np.arange(len(flat)) - np.repeat(starts, lengths)] = flat
    return arr, mask


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
    graphs, GPU only). ``real_tokens`` and ``padding_tokens`` count what the device computed.
    """

    def __init__(self, model_ref: str, device: str = "auto", dtype: str = "auto",
                 max_seq_length: int | None = None, torch_threads: int | None = None,
                 attention: str = "auto", backend: str = "torch"):
        import torch
        from sentence_transformers import SentenceTransformer

        from .models import ModelError, resolve_model, tokenizer_info

        if backend not in BACKEND_CHOICES:
            raise ValueError(f"unknown dense backend {backend!r}; allowed: {', '.join(BACKEND_CHOICES)}")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = resolve_device(device)
        self.cuda = self.device.startswith("cuda")
        if backend == "cudagraphs" and not self.cuda:
            raise ValueError("dense.backend=cudagraphs needs a CUDA device; use torch or compile on CPU")
        self.model_ref = model_ref
        self.backend = backend
        self.info = tokenizer_info(model_ref, max_seq_length)
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
        self.width_multiple = (COMPILE_WIDTH_MULTIPLE if backend != "torch"
                               else CUDA_WIDTH_MULTIPLE if self.cuda else 1)
        if backend != "torch":
            self._compile(first)
        if self.cuda:
            self._h2d = torch.cuda.Stream(device=self.device)
            self._d2h = torch.cuda.Stream(device=self.device)
        self.padding_tokens = 0
        self.real_tokens = 0

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

    def plan(self, lengths: np.ndarray, batch_tokens: int) -> list[Batch]:
        """The batches this model runs for rows of these lengths."""
        if self.flatten:
            return plan_shapes(lengths, batch_tokens)
        return plan_shapes(lengths, batch_tokens, width_multiple=self.width_multiple,
                           max_width=self.info.max_seq_length, bucket_rows=self.backend != "torch")

    # -- one batch: host features, copy to device ---------------------------------------------
    def _host_features(self, ids: Sequence[np.ndarray], b: Batch) -> dict[str, Any]:
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

    def _stage(self, ids: Sequence[np.ndarray], b: Batch):
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
        batches = self.plan(lengths, batch_tokens)
        order = np.concatenate([b.idx for b in batches]) if batches else np.zeros(0, np.int64)
        sorted_out: list | None = None
        pos = 0
        with torch.inference_mode():
            staged = self._stage(ids, batches[0]) if batches else None
            for k, b in enumerate(batches):
                feats, ready = staged
                if self.cuda:
                    compute = torch.cuda.current_stream(self.device)
                    compute.wait_event(ready)
                    for v in feats.values():
                        if isinstance(v, torch.Tensor):
                            v.record_stream(compute)
                outs = post(self._forward(feats, len(b.idx)))
                if k + 1 < len(batches):
                    staged = self._stage(ids, batches[k + 1])  # overlaps this batch's compute
                if sorted_out is None:
                    sorted_out = [self._alloc((n, *o.shape[1:]), o.dtype, to_host) for o in outs]
                self._collect(outs, sorted_out, pos, to_host)
                pos += len(b.idx)
                real = int(lengths[b.idx].sum())
                self.real_tokens += real
                self.padding_tokens += 0 if "cu_seq_lens_q" in feats else b.rows * b.width - real
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
        from .tokenize import tokenize_texts

        ids, _, _, _ = tokenize_texts([prefix + t for t in texts], self.model_ref, self.info.max_seq_length)
        return self.embed_ids(ids, batch_tokens)


class Encode:
    """Pipeline stage (actor pool): dense vectors (and SPLADE sparse vectors when configured).

    The model loads when the actor starts, never on the driver. Rows arrive with token ids from
    :class:`indexer.encoders.tokenize.Tokenize`; rows leave with storage-form vectors.
    """

    name = "encode"

    def __init__(self, params: dict[str, Any], reporter: StageReporter | None = None):
        self.p = params
        self.reporter = reporter or StageReporter()
        self.setup()

    def setup(self) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        t0 = time.perf_counter()
        p = self.p
        self.model = DenseModel(p["model"], p["device"], p["dtype"], p["max_seq_length"], p["torch_threads"],
                                p.get("attention", "auto"), p.get("backend", "torch"))
        cal = p.get("calibration")
        self.calibration = Calibration.from_json(cal) if isinstance(cal, dict) else cal
        self.post = Postprocess(p["dim"], p["quantization"], self.calibration, p.get("rescore", False))
        self.splade = None
        if p.get("splade_model"):
            from .sparse import SpladeModel

            self.splade = SpladeModel(p["splade_model"], self.model.device, p.get("splade_max_seq_length"))
        log.info("encoder ready on %s (%s, attention %s, backend %s) in %.1fs", self.model.device,
                 str(self.model.torch_dtype).removeprefix("torch."), self.model.attention, self.model.backend,
                 time.perf_counter() - t0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            pad0, real0 = self.model.padding_tokens, self.model.real_tokens
            outs = self.model.encode_ids(list(batch[schema.INPUT_IDS]), self.p["batch_tokens"], self.post)
            batch[schema.DENSE] = outs[0]
            if len(outs) > 1:
                batch[schema.DENSE_RESCORE] = outs[1]
            if self.splade is not None:
                from .tokenize import _ragged, document_texts

                idx, val = self.splade.encode_documents(document_texts(batch, self.p.get("document_prefix", "")))
                batch[schema.SPARSE_INDICES] = _ragged(idx)
                batch[schema.SPARSE_VALUES] = _ragged(val)
            del batch[schema.INPUT_IDS]
            extra["tokens"] = self.model.real_tokens - real0
            extra["padding_tokens"] = self.model.padding_tokens - pad0
        return batch
