"""Column names and the row contract between pipeline stages.

Every stage takes and returns numpy batches (``dict[str, np.ndarray]``, Ray Data's ``numpy`` format)
whose columns are named here. Internal columns start with ``_``; user columns never do after reading.
"""

from __future__ import annotations

import pyarrow as pa

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
DUPLICATE = "_duplicate"  # bool: an earlier row of the run has the same id
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
"""Schema of the per-version (id, hash) manifest used for incremental runs."""
