"""Column names and the row contract between pipeline stages.

Every stage takes and returns numpy batches (``dict[str, np.ndarray]``, Ray Data's ``numpy`` format)
whose columns are named here. Internal columns start with ``_``; user columns never do after reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

Columns = dict[str, np.ndarray]
"""A numpy batch of named columns (Ray Data's ``numpy`` batch format)."""

ID = "id"  # chunk id (string), the user's key
TEXT = "text"  # chunk text
TITLE = "title"  # optional title ("" when the corpus has none)
METADATA = "metadata"  # JSON object of every other column
HASH = "_hash"  # content hash of text + title + metadata
FILE = "_file"  # source file of the row
ROW = "_row"  # row number within the source file (0-based)
POINT_ID = "_point_id"  # uuid5 of the chunk id (vector store id)
N_TOKENS = "_n_tokens"  # tokens before truncation (special tokens included)
TRUNCATED = "_truncated"  # bool: the text was longer than the model's limit
INPUT_IDS = "_input_ids"  # token ids after truncation (list<int32>)
DENSE = "_dense"  # (N, D) float32 / uint8 codes / packed bits
DENSE_RESCORE = "_dense_rescore"  # (N, D) uint8 int8-codes kept for rescoring (binary mode)
SPARSE_INDICES = "_sparse_indices"  # list<int32> per row
SPARSE_VALUES = "_sparse_values"  # list<float32> per row
DUPLICATE = "_duplicate"  # "file row N" of the copy kept when an earlier row has the same id, else ""
REJECT_REASON = "_reject_reason"  # set by validation; rows with a reason go to rejects

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("file", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("reason", pa.string()),
    ]
)
"""Schema of the rejects Parquet output: one row per input row that was not indexed."""

HASH_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("hash", pa.string())])
HASH_FILE_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("hash", pa.string()), pa.field("file", pa.string())])
"""The hash manifest with each chunk's source file (what a run keeps when that file can't be read)."""

# Run records (written by stages, read by the run): what each valid row became, and which rows were written.
ROWS_SCHEMA = pa.schema([("file", pa.string()), ("row", pa.int64()), ("id", pa.string()),
                         ("hash", pa.string()), ("state", pa.string())])
WRITTEN_SCHEMA = pa.schema([("file", pa.string()), ("row", pa.int64()), ("tokens", pa.int64()),
                            ("truncated", pa.bool_())])
"""Rows every store acknowledged, with the row's tokens before truncation and whether it was truncated:
the records that survive an interrupted attempt, so a resumed run counts tokens over all attempts."""

NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"  # diff states of a valid row
"""Schema of the per-version (id, hash) manifest used for incremental runs."""


@dataclass
class Hit:
    """One search result: chunk id, score, and the stored fields (text, title, metadata)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # only when asked for (rescoring)


@dataclass
class SparseQuery:
    indices: list[int]
    values: list[float]


@dataclass
class VectorSpec:
    """What a vector collection stores; derived from the config and the model on the driver."""

    dim: int  # dense dimension after Matryoshka truncation
    quantization: str  # none | int8 | uint8 | binary
    sparse: bool  # a sparse vector named 'sparse' with the IDF modifier
    sparse_idf: bool = True  # IDF applied by the store (bm25 term weights); False for SPLADE
    rescore: bool = False  # an extra 'dense_rescore' uint8 vector (int8 codes) for binary mode

    @classmethod
    def build(cls, dim: int, quantization: str, sparse_kind: str, rescore: bool) -> "VectorSpec":
        """The spec of a collection from its settings (``sparse_kind``: bm25 | splade | none): the one
        place they become a spec, for a run (from the config) and for search (from the version manifest)."""
        return cls(dim=dim, quantization=quantization, sparse=sparse_kind != "none",
                   sparse_idf=sparse_kind == "bm25", rescore=rescore)

    @classmethod
    def from_version(cls, version: dict[str, Any]) -> "VectorSpec":
        """The spec a version was written with, read from its version manifest."""
        dense = version["dense"]
        return cls.build(int(dense["dim"]), dense["quantization"], version["sparse"]["kind"],
                         bool(dense.get("rescore")))
