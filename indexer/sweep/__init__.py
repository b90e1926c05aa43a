"""Evaluation sweeps over dense storage settings and fusion settings from one encode pass.

``indexer eval CONFIG --queries Q --qrels R --sweep dims=384,256 --sweep quantization=none,int8 --out DIR``
answers "what would nDCG be with 256-d int8 vectors, or with another fusion?" without re-indexing:

1. Full-dimension float document vectors are fetched once: read back from the live index when it
   stores float vectors at the model's dimension, otherwise the corpus is encoded once (and cached
   under ``index.dir/cache``).
2. Each dense setting (dimension x quantization x oversample) is derived in numpy exactly as the
   pipeline would store it (:mod:`indexer.quantize`: Matryoshka truncation, re-normalisation,
   calibration on a corpus sample, codes) and searched exactly in memory the way the vector store
   does: cosine for float; Euclid on codes then oversampled rescoring with the float query for
   int8/uint8; Hamming on bits for binary, optionally oversampled and rescored with int8 codes or
   float vectors (``binary+int8``, ``binary+float``).
3. BM25 and sparse hit lists come from the live index once per query; each fusion setting
   (fusion x rrf_k x fused modes x weights x candidates) fuses them with each dense setting.

Results: one row per (mode, setting) with nDCG@k, recall@100, MRR@k, bytes per vector (stored,
and searched in RAM) and per-query latency p50/p95, written as ``sweep.json``, ``sweep.md`` and
``sweep.png`` (quality against bytes per vector).

Modules: ``axes`` (flags and setting grids), ``memory`` (document vectors and the in-memory
dense index), ``run`` (:func:`run_sweep`), ``report`` (table, plots, files).
"""

from .axes import SweepError, parse_sweep
from .report import markdown, write_outputs
from .run import run_sweep

__all__ = ["SweepError", "markdown", "parse_sweep", "run_sweep", "write_outputs"]
