"""Dense encoding on an actor: token ids -> sentence-transformers model -> MRL truncation ->
normalisation -> quantization, all on the model's device before copying back.

Batches are planned by a token budget over length-sorted rows (padding counted), not a fixed row
count, so long and short chunks both keep the device busy without running out of memory.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from .. import schema
from ..quantize import Calibration
from ..stats import StageReporter

log = logging.getLogger(__name__)


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_rows: int | None = None) -> list[np.ndarray]:
    """Group row indices into batches, longest first, so ``rows * longest <= batch_tokens``.

    A single row longer than the budget gets a batch of its own. Returns index arrays into
    ``lengths``; every index appears exactly once.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        rows = max(1, batch_tokens // longest)
        if max_rows:
            rows = min(rows, max_rows)
        batches.append(order[start:start + rows])
        start += rows
    return batches


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class DenseModel:
    """A sentence-transformers model run on pre-tokenized ids with token-budget batching."""

    def __init__(self, model_ref: str, device: str = "auto", dtype: str = "auto",
                 max_seq_length: int | None = None, torch_threads: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        from .models import resolve_model, tokenizer_info

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = resolve_device(device)
        self.model_ref = model_ref
        self.info = tokenizer_info(model_ref, max_seq_length)
        self.model = SentenceTransformer(resolve_model(model_ref), device=self.device)
        self.model.max_seq_length = self.info.max_seq_length
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.torch_dtype = getattr(torch, dtype)
        if self.torch_dtype != torch.float32:
            self.model.to(self.torch_dtype)
        self.model.eval()
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.full_dim = int(dim_fn())
        self.padding_tokens = 0
        self.real_tokens = 0

    def embed_ids(self, ids: list[np.ndarray], batch_tokens: int):
        """Embeddings (float32 torch tensor on the model's device), rows in input order."""
        import torch

        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = torch.empty((len(ids), self.full_dim), dtype=torch.float32, device=self.device)
        pin = self.device.startswith("cuda")
        for idx in plan_batches(lengths, batch_tokens):
            width = int(lengths[idx].max())
            arr = np.full((len(idx), width), self.info.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                arr[r, : lengths[i]] = ids[i]
                mask[r, : lengths[i]] = 1
            self.real_tokens += int(lengths[idx].sum())
            self.padding_tokens += int(len(idx) * width - lengths[idx].sum())
            t_ids, t_mask = torch.from_numpy(arr), torch.from_numpy(mask)
            if pin:
                t_ids, t_mask = t_ids.pin_memory(), t_mask.pin_memory()
            features = {"input_ids": t_ids.to(self.device, non_blocking=True),
                        "attention_mask": t_mask.to(self.device, non_blocking=True)}
            with torch.inference_mode():
                emb = self.model(features)["sentence_embedding"]
            out[torch.from_numpy(idx).to(self.device)] = emb.float()
        return out

    def encode_texts(self, texts: list[str], batch_tokens: int = 16384, prefix: str = ""):
        """Embed raw texts (used for queries): same tokenization and model path as documents."""
        from .tokenize import tokenize_texts

        ids, _, _, _ = tokenize_texts([prefix + t for t in texts], self.model_ref, self.info.max_seq_length)
        return self.embed_ids(ids, batch_tokens)


def postprocess(emb, dim: int | None, quantization: str, calibration: Calibration | None,
                rescore: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """MRL truncation + re-normalisation + quantization on the tensor's device; numpy results.

    Returns (storage-form vectors, int8 rescoring codes or None). Binary packs sign bits.
    """
    import torch

    x = emb[:, :dim] if dim else emb
    x = torch.nn.functional.normalize(x.float(), dim=1)
    rescore_codes = None
    if quantization == "none":
        return x.cpu().numpy().astype(np.float32), None
    if quantization in ("int8", "uint8"):
        if calibration is None:
            raise ValueError(f"quantization {quantization} needs a calibration")
        lo = torch.as_tensor(calibration.lo, device=x.device)
        scale = torch.as_tensor(calibration.scale, device=x.device)
        codes = torch.clamp(torch.round((x - lo) / scale), 0, 255).to(torch.uint8)
        return codes.cpu().numpy(), None
    if quantization == "binary":
        bits = (x > 0).cpu().numpy()
        if rescore and calibration is not None:
            lo = torch.as_tensor(calibration.lo, device=x.device)
            scale = torch.as_tensor(calibration.scale, device=x.device)
            rescore_codes = torch.clamp(torch.round((x - lo) / scale), 0, 255).to(torch.uint8).cpu().numpy()
        return np.packbits(bits, axis=1), rescore_codes
    raise ValueError(f"unknown quantization {quantization!r}")


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
        self.model = DenseModel(p["model"], p["device"], p["dtype"], p["max_seq_length"], p["torch_threads"])
        cal = p.get("calibration")
        self.calibration = Calibration.from_json(cal) if isinstance(cal, dict) else cal
        self.splade = None
        if p.get("splade_model"):
            from .sparse import SpladeModel

            self.splade = SpladeModel(p["splade_model"], self.model.device, p.get("splade_max_seq_length"))
        log.info("encoder ready on %s in %.1fs", self.model.device, time.perf_counter() - t0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[schema.ID])
        with self.reporter.measure(self.name, n) as extra:
            pad0, real0 = self.model.padding_tokens, self.model.real_tokens
            emb = self.model.embed_ids(list(batch[schema.INPUT_IDS]), self.p["batch_tokens"])
            dense, rescore = postprocess(emb, self.p["dim"], self.p["quantization"], self.calibration,
                                         self.p.get("rescore", False))
            batch[schema.DENSE] = dense
            if rescore is not None:
                batch[schema.DENSE_RESCORE] = rescore
            if self.splade is not None:
                from .tokenize import _ragged, document_texts

                idx, val = self.splade.encode_documents(document_texts(batch, self.p.get("document_prefix", "")))
                batch[schema.SPARSE_INDICES] = _ragged(idx)
                batch[schema.SPARSE_VALUES] = _ragged(val)
            del batch[schema.INPUT_IDS]
            extra["tokens"] = self.model.real_tokens - real0
            extra["padding_tokens"] = self.model.padding_tokens - pad0
        return batch
