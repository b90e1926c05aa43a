"""Forward-pass shapes for the dense encoder: which rows run together, at what padded width.

Batches are planned by a token budget over length-sorted rows (padding counted), not a fixed row
count, so long and short chunks both keep the device busy without running out of memory. Rows are
then either right-padded to the pass's width or packed into one unpadded row (variable-length
attention). Pure numpy: no torch, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

CUDA_WIDTH_MULTIPLE = 8  # tensor-core friendly widths on GPU; costs a few padding tokens per row at most
COMPILE_WIDTH_MULTIPLE = 32  # fewer distinct shapes for compiled backends (one compilation per shape)
COMPILE_MIN_ROWS = 8  # row counts of compiled shapes are powers of two from here up to the budget


@dataclass(frozen=True)
class ForwardPass:
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
                max_width: int | None = None, bucket_rows: bool = False) -> list[ForwardPass]:
    """Group row indices into batches, longest first, so ``rows * width <= batch_tokens``.

    ``width`` is the batch's longest row rounded up to ``width_multiple`` (never above
    ``max_width``, the model's token limit). With ``bucket_rows`` the row count of a batch that
    is not full is rounded up to a power of two (at least :data:`COMPILE_MIN_ROWS`), so a
    compiled model sees few distinct shapes. A single row longer than the budget gets a batch of
    its own. Every index appears in exactly one batch.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches: list[ForwardPass] = []
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
        batches.append(ForwardPass(idx, width, rows))
        start += cap
    return batches


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_rows: int | None = None) -> list[np.ndarray]:
    """Row indices of each batch, longest first, so ``rows * longest <= batch_tokens``.

    A single row longer than the budget gets a batch of its own. Returns index arrays into
    ``lengths``; every index appears exactly once.
    """
    return [b.idx for b in plan_shapes(lengths, batch_tokens, max_rows)]


def padding_share(lengths: np.ndarray, batches: Sequence[ForwardPass]) -> float:
    """Share of the tokens a device computes that are padding: ``1 - real / (sum rows * width)``."""
    lengths = np.asarray(lengths)
    computed = sum(b.rows * b.width for b in batches)
    real = sum(int(lengths[b.idx].sum()) for b in batches)
    return 0.0 if computed == 0 else 1.0 - real / computed


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
