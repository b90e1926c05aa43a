"""Dry-run cost estimate: tokens, GPU-hours, wall time, dollars and storage, before spending any.

Never loads model weights, never writes to a store or to ``index.dir``; only reads.

* ``chunks``: exact, from Parquet footers.
* Tokens (the model's tokenizer, special tokens included): a uniform sample of valid rows is
  tokenized and scaled to the rows to encode (``cost.sample_rows``; accuracy in README, "Cost
  estimate"), or, with ``exact``, every row is tokenized by Ray tasks on the cluster's CPUs.
* Incremental runs (a live version with the same vector settings, as the run itself decides):
  only new and changed rows get encoded, and which rows those are needs every row's content hash,
  which no sample can give. So every row is read and hashed (id, text, title, metadata: the same
  hash the pipeline's diff uses) and compared with the live version's hash manifest; tokens then
  come from a sample of the rows to encode (all of them when they are fewer than the sample).
  Reading and hashing a row costs a small fraction of encoding it on a CPU, but about as much as
  a GPU's encode: this process does it for small and mid-size corpora; ``exact`` runs the scan as
  Ray tasks on every CPU of the cluster.
* Encode time: tokens after truncation / throughput (:mod:`indexer.estimate.cost`: the FLOP
  model, and a profile measured by ``indexer bench`` or a default derived from FLOPs).

Modules: ``dry_run`` (the estimate, the scans, storage), ``sample`` (row and token-length
samples), ``cost`` (FLOPs and throughput), ``profiles`` (saved measurements), ``bench``
(``indexer bench``).
"""

from .bench import bench_throughput
from .dry_run import estimate
from .profiles import save_profile

__all__ = ["bench_throughput", "estimate", "save_profile"]
