"""Qdrant server vector store (``qdrant-client``): versioned collections behind an alias.

The point layout is the embedded store's (:mod:`indexer.stores.qdrant_common`), so an index moves
between the two engines without re-encoding and search scores mean the same thing in both.

Connection: ``url`` with gRPC preferred (REST when the gRPC port can't be reached), the API key
read from the environment variable named by ``api_key_env`` (never logged, never in a repr or an
error), TLS verification always on (against ``ca_file`` when one is configured).

Bulk loading: a new collection is created with ``hnsw_config.m = 0`` (no HNSW graph is built while
points stream in) and with its payload indexes already in place; :meth:`QdrantServerStore.finalize`
sets the configured ``m`` and waits until the collection is green. The deferred state lives on
the server, so the process that finalizes need not be the one that created the collection.

Writes: a batch is cut into requests bounded by ``batch_rows`` and ``batch_bytes``, up to
``parallel`` of them in flight. Timeouts, 408, 429 and 5xx are retried with exponential backoff
(``max_retries``), then raise :class:`~indexer.stores.base.TransientStoreError` so the datasink
retries the block; any other refusal fails at once naming the collection and the first chunk.

With ``local_path`` the store runs on ``qdrant-client``'s local mode (``QdrantClient(path=...)``,
or ``":memory:"``): same API, one process at a time, exact search, no server-side settings
(shards, HNSW, payload indexes and quantization are accepted and have no effect there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Sequence

import numpy as np

from ..config import QdrantServerConfig
from ..ids import point_id
from ..schema import Columns, Hit, SparseQuery, VectorSpec
from . import qdrant_common as qc
from .base import TransientStoreError, VectorStore, WriteResult, retry_transient

log = logging.getLogger(__name__)

TRANSIENT_HTTP = frozenset({408, 429})
"""HTTP statuses worth retrying besides 5xx."""
TRANSIENT_GRPC = ("DEADLINE_EXCEEDED", "UNAVAILABLE", "RESOURCE_EXHAUSTED")
"""gRPC status codes worth retrying."""
GRPC_FALLBACK = ("UNAVAILABLE", "UNIMPLEMENTED", "DEADLINE_EXCEEDED")
"""gRPC status codes of a first request that make the store switch to REST."""
AUTH_HTTP = frozenset({401, 403})
AUTH_GRPC = ("UNAUTHENTICATED", "PERMISSION_DENIED")

_sleep = time.sleep  # the backoff's clock (tests record delays instead of waiting)


def _client_module():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the Qdrant server store needs qdrant-client: pip install 'qdrant-client>=1.15'") from e
    return qdrant_client, models


def _grpc_code(e: BaseException) -> str | None:
    """Name of the gRPC status code of an RPC error (``None`` for anything else)."""
    code = getattr(e, "code", None)
    if code is None or not callable(code):
        return None
    try:
        import grpc
    except ImportError:  # pragma: no cover - installed with qdrant-client
        return None
    if not isinstance(e, grpc.RpcError):
        return None
    try:
        c = code()
    except Exception:  # noqa: BLE001 - an RpcError without a status
        return None
    return getattr(c, "name", None)


def http_status(e: BaseException) -> int | None:
    """HTTP status of a REST error from ``qdrant-client`` (``None`` for anything else)."""
    from qdrant_client.http.exceptions import UnexpectedResponse

    return e.status_code if isinstance(e, UnexpectedResponse) else None


def is_transient(e: BaseException) -> bool:
    """Whether a failed request is worth retrying: timeouts, 408, 429, 5xx, unreachable server."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException

    if isinstance(e, (ResourceExhaustedResponse, ResponseHandlingException, TimeoutError)):
        return True
    status = http_status(e)
    if status is not None:
        return status in TRANSIENT_HTTP or status >= 500
    return _grpc_code(e) in TRANSIENT_GRPC


def _retry_after(e: BaseException) -> float | None:
    """Seconds the server asked us to wait (429 with Retry-After), if it said."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    if isinstance(e, ResourceExhaustedResponse):
        return float(e.retry_after_s)
    headers = getattr(e, "headers", None)
    if http_status(e) is not None and headers is not None:
        try:
            return float(headers.get("retry-after"))
        except (TypeError, ValueError):
            return None
    return None


def _is_auth_error(e: BaseException) -> bool:
    return http_status(e) in AUTH_HTTP or _grpc_code(e) in AUTH_GRPC


def connection_options(cfg: QdrantServerConfig, api_key: str | None) -> dict[str, Any]:
    """Keyword arguments of ``QdrantClient`` for a server (everything but ``prefer_grpc``).

    TLS verification is never turned off: with ``ca_file`` both transports verify against that CA
    (an ``ssl.SSLContext`` for REST, ``root_certificates`` for gRPC); without it, against the
    system's trust store (the clients' default)."""
    opts: dict[str, Any] = {
        "url": cfg.url,
        "grpc_port": cfg.grpc_port,
        "timeout": max(1, math.ceil(cfg.timeout)),
        "api_key": api_key or None,
        "check_compatibility": False,  # one request less per opened store; the probe checks the connection
    }
    if cfg.ca_file:
        try:
            with open(cfg.ca_file, "rb") as f:
                ca = f.read()
            opts["verify"] = ssl.create_default_context(cafile=cfg.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"vector_store.qdrant.ca_file {cfg.ca_file!r} is not a readable PEM CA bundle: {e}") from e
        opts["grpc_options"] = {"root_certificates": ca}
    return opts


class QdrantServerStore(VectorStore):
    """Versioned collections on a Qdrant server (or in ``qdrant-client`` local mode at ``local_path``).

    One client per instance (a Ray write task opens its own); :meth:`close` releases it. Dense
    scores are "higher is better": cosine similarity, or the negated Euclid distance for uint8
    codes and bits, as in :class:`~indexer.stores.qdrant_edge.EdgeVectorStore`.
    """

    READY_POLL = 1.0
    """Seconds between collection status polls while waiting for green."""
    IDS_PER_REQUEST = 1000
    """Ids per retrieve/delete request."""
    SERVER_OVERSAMPLING = 2.0
    """Candidates per hit fetched from server-side quantized vectors before rescoring with the originals."""

    def __init__(self, spec: VectorSpec | None, cfg: QdrantServerConfig | None = None, local_path: str | None = None):
        super().__init__(spec)
        if spec is not None:  # None: opened for catalog operations only
            qc.check_spec(spec)
        self.cfg = cfg or QdrantServerConfig()
        self.local_path = str(local_path) if local_path is not None else None
        self.single_writer = self.local_path is not None  # local mode locks its folder for one process
        self._api_key = (os.environ.get(self.cfg.api_key_env) or None) if self.local_path is None else None
        self.transport = "local"
        self.client = self._connect()
        # The local engine is plain Python over sqlite bound to one thread: requests go one by one.
        self.parallel = 1 if self.local_path is not None else self.cfg.parallel
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        where = f"local_path={self.local_path!r}" if self.local_path is not None else f"url={self.cfg.url!r}"
        return f"QdrantServerStore({where}, transport={self.transport!r}, {self._spec_repr()})"

    # -- connection ---------------------------------------------------------------------------
    def _redact(self, text: Any) -> str:
        s = str(text)
        return s.replace(self._api_key, "***") if self._api_key else s

    def _connect(self):
        qdrant_client, _ = _client_module()
        if self.local_path is not None:
            if self.local_path == ":memory:":
                return qdrant_client.QdrantClient(location=":memory:")
            os.makedirs(self.local_path, exist_ok=True)
            try:
                return qdrant_client.QdrantClient(path=self.local_path)
            except RuntimeError as e:
                raise RuntimeError(f"Qdrant local storage {self.local_path} is open in another process (a running "
                                   f"writer?); local mode allows one process at a time") from e
        opts = connection_options(self.cfg, self._api_key)
        if self.cfg.prefer_grpc:
            client = qdrant_client.QdrantClient(prefer_grpc=True, **opts)
            try:
                client.get_collections()
                self.transport = "grpc"
                return client
            except Exception as e:  # noqa: BLE001 - classified below
                if _is_auth_error(e):
                    client.close()
                    raise self._auth_error(e) from e
                if _grpc_code(e) in GRPC_FALLBACK:
                    log.warning("Qdrant gRPC at port %d of %s is not reachable (%s); using REST", self.cfg.grpc_port,
                                self.cfg.url, _grpc_code(e))
                    client.close()
                elif is_transient(e):  # reachable but busy: requests retry
                    self.transport = "grpc"
                    return client
                else:
                    client.close()
                    raise RuntimeError(f"Qdrant at {self.cfg.url} (gRPC port {self.cfg.grpc_port}) refused the "
                                       f"first request: {self._redact(e)}") from e
        self.transport = "rest"
        return qdrant_client.QdrantClient(prefer_grpc=False, **opts)

    def _auth_error(self, e: BaseException) -> PermissionError:
        how = (f"the API key from ${self.cfg.api_key_env}" if self._api_key
               else f"no API key (${self.cfg.api_key_env} is not set)")
        return PermissionError(f"Qdrant at {self.cfg.url} refused the request with {how}: {self._redact(e)}")

    # -- requests -----------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        """Run one request; retry transient failures with exponential backoff, then raise
        :class:`TransientStoreError`. Other failures propagate unchanged."""
        return retry_transient(fn, retries=self.cfg.max_retries, base_delay=self.cfg.initial_backoff,
                               max_delay=self.cfg.max_backoff, what=what, transient=is_transient,
                               retry_after=_retry_after, describe=self._redact, sleep=lambda d: _sleep(d),
                               hint=self._retry_hint())

    def _retry_hint(self) -> str:
        where = f"local storage {self.local_path}" if self.local_path is not None else self.cfg.url
        return (f"check that Qdrant at {where} is up and reachable (vector_store.qdrant.max_retries and "
                "max_backoff set how long to wait), then rerun: the run resumes where it stopped")

    def _request(self, fn: Callable[[], Any], what: str) -> Any:
        """:meth:`_call`, with terminal failures re-raised as errors that say what failed (redacted)."""
        try:
            return self._call(fn, what)
        except TransientStoreError:
            raise
        except Exception as e:
            if _is_auth_error(e):
                raise self._auth_error(e) from e
            raise RuntimeError(f"{what} failed: {self._redact(e)}") from e

    # -- collection layout ----------------------------------------------------------------------
    def vectors_config(self) -> dict[str, Any]:
        """Named dense vectors of a new collection (the shared layout plus server-side storage options)."""
        _, m = _client_module()
        s, cfg = self.spec, self.cfg
        if s.quantization == "none":
            server_q = None
            if cfg.server_quantization == "int8":
                server_q = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
                    type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
            dense = m.VectorParams(size=s.dim, distance=m.Distance.COSINE, quantization_config=server_q,
                                   on_disk=True if server_q is not None else (cfg.on_disk or None))
        else:
            if cfg.server_quantization != "none":
                log.info("server_quantization=%s skipped: dense vectors are already %s codes (one byte per value)",
                         cfg.server_quantization, s.quantization)
            dense = m.VectorParams(size=s.dim, distance=m.Distance.EUCLID, datatype=m.Datatype.UINT8,
                                   on_disk=cfg.on_disk or None)
        vectors = {qc.DENSE: dense}
        if s.rescore:
            # Read only for the candidates of a search: on disk, no HNSW graph (m=0).
            vectors[qc.DENSE_RESCORE] = m.VectorParams(size=s.dim, distance=m.Distance.EUCLID,
                                                       datatype=m.Datatype.UINT8, on_disk=True,
                                                       hnsw_config=m.HnswConfigDiff(m=0))
        return vectors

    def sparse_vectors_config(self) -> dict[str, Any] | None:
        if not self.spec.sparse:
            return None
        _, m = _client_module()
        return {qc.SPARSE: m.SparseVectorParams(
            modifier=m.Modifier.IDF if self.spec.sparse_idf else None,
            index=m.SparseIndexParams(on_disk=True) if self.cfg.on_disk else None)}

    def payload_index_fields(self) -> dict[str, Any]:
        """Payload key -> schema of the indexes created before a load: ``id`` and ``metadata.<field>``."""
        _, m = _client_module()
        fields = {"id": m.PayloadSchemaType.KEYWORD}
        for name, kind in self.cfg.payload_indexes.items():
            fields[f"metadata.{name}"] = m.PayloadSchemaType(kind)
        return fields

    def _check_layout(self, collection: str, info) -> None:
        """Refuse an existing collection whose vectors don't match the spec (a different index build)."""
        _, m = _client_module()
        params = info.config.params
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        want = self.vectors_config()
        problems = []
        for name, w in want.items():
            have = vectors.get(name)
            if have is None:
                problems.append(f"no {name!r} vector")
                continue
            if have.size != w.size or have.distance != w.distance:
                problems.append(f"{name!r} is {have.size}-d {have.distance.value}, expected {w.size}-d "
                                f"{w.distance.value}")
            if (have.datatype == m.Datatype.UINT8) != (w.datatype == m.Datatype.UINT8):
                problems.append(f"{name!r} datatype is {getattr(have.datatype, 'value', 'float32')}, expected "
                                f"{getattr(w.datatype, 'value', 'float32')}")
        if self.spec.sparse and qc.SPARSE not in (params.sparse_vectors or {}):
            problems.append(f"no {qc.SPARSE!r} sparse vector")
        if problems:
            raise ValueError(f"Qdrant collection {collection!r} was built with other vector settings than dim="
                             f"{self.spec.dim}, quantization={self.spec.quantization!r}: {'; '.join(problems)}")

    # -- lifecycle -----------------------------------------------------------------------------
    def _info(self, collection: str):
        return self._request(lambda: self.client.get_collection(collection), f"reading Qdrant collection "
                                                                            f"{collection!r}")

    def ensure_collection(self, collection: str) -> None:
        """Create the collection with the bulk-load profile and its payload indexes, or check an existing one.

        A new collection starts with ``hnsw_config.m = 0``: points are stored and searchable
        (brute force) but no graph is built until :meth:`finalize`. An existing collection (an
        incremental run writes into the live version) keeps its settings: its graph stays in
        place and is updated as points arrive."""
        _, m = _client_module()
        exists = self._request(lambda: self.client.collection_exists(collection), f"checking Qdrant collection "
                                                                                  f"{collection!r}")
        if not exists:
            try:
                self._request(lambda: self.client.create_collection(
                    collection,
                    vectors_config=self.vectors_config(),
                    sparse_vectors_config=self.sparse_vectors_config(),
                    shard_number=self.cfg.shard_number,
                    replication_factor=self.cfg.replication_factor,
                    hnsw_config=m.HnswConfigDiff(m=0, ef_construct=self.cfg.hnsw_ef_construct),
                ), f"creating Qdrant collection {collection!r}")
                log.info("created Qdrant collection %s (dim=%d, %s, sparse=%s, rescore=%s; HNSW deferred)", collection,
                         self.spec.dim, self.spec.quantization, self.spec.sparse, self.spec.rescore)
            except RuntimeError as e:
                # another process created it between the check and the create
                if not self.client.collection_exists(collection):
                    raise
                log.info("Qdrant collection %s was created concurrently (%s)", collection, e)
        info = self._info(collection)
        self._check_layout(collection, info)
        have = set(info.payload_schema or {})
        for key, schema in self.payload_index_fields().items():
            if key in have:
                continue
            with warnings.catch_warnings():
                # local mode accepts payload indexes and warns that they have no effect there
                warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
                self._request(lambda: self.client.create_payload_index(collection, key, field_schema=schema,
                                                                       wait=True),
                              f"creating payload index {key!r} on Qdrant collection {collection!r}")

    def finalize(self, collection: str) -> None:
        """Restore HNSW indexing after a load (``m`` from the config) and wait until the collection is green."""
        _, m = _client_module()
        info = self._info(collection)
        if info.config.hnsw_config.m == 0:
            hnsw = m.HnswConfigDiff(m=self.cfg.hnsw_m, ef_construct=self.cfg.hnsw_ef_construct)
            self._request(lambda: self.client.update_collection(collection, hnsw_config=hnsw),
                          f"restoring HNSW indexing of Qdrant collection {collection!r}")
            log.info("Qdrant collection %s: HNSW indexing enabled (m=%d); waiting for green", collection,
                     self.cfg.hnsw_m)
        self.wait_ready(collection)

    def wait_ready(self, collection: str, timeout: float | None = None) -> None:
        """Poll until the collection is green (optimizations done, indexes built), or raise after ``timeout``."""
        _, m = _client_module()
        timeout = self.cfg.ready_timeout if timeout is None else timeout
        t0 = time.monotonic()
        nudged = False
        while True:
            info = self._info(collection)
            if info.status == m.CollectionStatus.GREEN:
                log.info("Qdrant collection %s is green: %s points, %s indexed vectors (%.1fs)", collection,
                         info.points_count, info.indexed_vectors_count, time.monotonic() - t0)
                return
            if info.status == m.CollectionStatus.RED:
                raise RuntimeError(f"Qdrant collection {collection!r} is red (optimizer: "
                                   f"{self._redact(info.optimizer_status)}); see the server log")
            if info.status == m.CollectionStatus.GREY and not nudged:
                # optimizations pending but not started: an empty optimizer update triggers them
                self._request(lambda: self.client.update_collection(
                    collection, optimizers_config=m.OptimizersConfigDiff()), f"starting optimizers of {collection!r}")
                nudged = True
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(
                    f"Qdrant collection {collection!r} is still {info.status.value} after {timeout:.0f}s "
                    f"({info.indexed_vectors_count} of {info.points_count} points indexed); raise "
                    f"vector_store.qdrant.ready_timeout, or check the server's optimizer")
            _sleep(self.READY_POLL)

    # -- writes ----------------------------------------------------------------------------------
    def _row_bytes(self, rows: qc.Rows, i: int) -> int:
        """Approximate request bytes of one point: 4 per vector value over gRPC (~10 as JSON),
        8 per sparse entry, the payload as JSON."""
        per_value = 4 if self.transport == "grpc" else 10
        n = rows.dense.shape[1] + (rows.rescore.shape[1] if rows.rescore is not None else 0)
        sp = rows.sparse[i] if rows.sparse is not None else None
        return 64 + per_value * n + (2 * per_value * len(sp[0]) if sp else 0) + len(json.dumps(rows.payloads[i]))

    def request_ranges(self, rows: qc.Rows) -> list[tuple[int, int]]:
        """Cut rows into ``[lo, hi)`` requests of at most ``batch_rows`` points and about ``batch_bytes``
        bytes (a single point larger than ``batch_bytes`` goes alone)."""
        out: list[tuple[int, int]] = []
        lo, size = 0, 0
        for i in range(len(rows)):
            b = self._row_bytes(rows, i)
            if i > lo and (i - lo >= self.cfg.batch_rows or size + b > self.cfg.batch_bytes):
                out.append((lo, i))
                lo, size = i, 0
            size += b
        if len(rows) > lo:
            out.append((lo, len(rows)))
        return out

    def _points(self, rows: qc.Rows, lo: int, hi: int) -> list:
        _, m = _client_module()
        dense = rows.dense[lo:hi].astype(np.float32, copy=False).tolist()
        rescore = rows.rescore[lo:hi].astype(np.float32).tolist() if rows.rescore is not None else None
        out = []
        for j, i in enumerate(range(lo, hi)):
            vec: dict[str, Any] = {qc.DENSE: dense[j]}
            if rescore is not None:
                vec[qc.DENSE_RESCORE] = rescore[j]
            if rows.sparse is not None and rows.sparse[i] is not None:
                idx, val = rows.sparse[i]
                vec[qc.SPARSE] = m.SparseVector(indices=idx, values=val)
            out.append(m.PointStruct(id=rows.point_ids[i], vector=vec, payload=rows.payloads[i]))
        return out

    def _upload(self, collection: str, rows: qc.Rows, lo: int, hi: int) -> None:
        what = (f"upsert into Qdrant collection {collection!r} ({hi - lo} points starting at chunk "
                f"{rows.chunk_ids[lo]!r})")
        points = self._points(rows, lo, hi)
        try:
            self._call(lambda: self.client.upsert(collection, points=points, wait=True), what)
        except TransientStoreError:
            raise
        except Exception as e:
            if _is_auth_error(e):
                raise self._auth_error(e) from e
            raise RuntimeError(f"{what} was refused (not retried: the same request would fail again): "
                               f"{self._redact(e)}") from e

    def upsert(self, collection: str, batch: Columns) -> WriteResult:
        """Write a batch (idempotent: point ids are uuid5 of chunk ids) in bounded requests, several in flight."""
        t0 = time.perf_counter()
        rows = qc.prepare_rows(self.spec, batch)
        if not len(rows):
            return WriteResult(0, rows.rejects, time.perf_counter() - t0)
        ranges = self.request_ranges(rows)
        if self.parallel <= 1 or len(ranges) == 1:
            for lo, hi in ranges:
                self._upload(collection, rows, lo, hi)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="qdrant-upsert")
            futures = [self._pool.submit(self._upload, collection, rows, lo, hi) for lo, hi in ranges]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in futures:  # in request order: the error names the first failing chunk
                if f in done and f.exception() is not None:
                    wait(pending)
                    raise f.exception()
        return WriteResult(len(rows), rows.rejects, time.perf_counter() - t0)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        _, m = _client_module()
        ids = list(ids)
        for lo in range(0, len(ids), self.IDS_PER_REQUEST):
            sel = m.PointIdsList(points=[point_id(i) for i in ids[lo:lo + self.IDS_PER_REQUEST]])
            self._request(lambda: self.client.delete(collection, points_selector=sel, wait=True),
                          f"delete from Qdrant collection {collection!r} (starting at chunk {ids[lo]!r})")
        return len(ids)

    # -- reads -----------------------------------------------------------------------------------
    def count(self, collection: str) -> int:
        res = self._request(lambda: self.client.count(collection, exact=True), f"counting Qdrant collection "
                                                                              f"{collection!r}")
        return int(res.count)

    def _retrieve(self, collection: str, ids: Sequence[str], with_vectors: Any) -> list:
        ids = list(ids)
        out = []
        for lo in range(0, len(ids), self.IDS_PER_REQUEST):
            pids = [point_id(i) for i in ids[lo:lo + self.IDS_PER_REQUEST]]
            out.extend(self._request(lambda: self.client.retrieve(collection, ids=pids, with_payload=True,
                                                                  with_vectors=with_vectors),
                                     f"retrieve from Qdrant collection {collection!r}"))
        return out

    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {r.payload["id"]: dict(r.payload) for r in self._retrieve(collection, ids, False) if r.payload}

    def export_rows(self, collection: str, ids: Sequence[str]) -> Columns:
        """Stored points of ``ids`` with payload and every vector, as an upsert batch."""
        ids = [str(i) for i in ids]
        return qc.export_columns(self.spec, self._retrieve(collection, ids, True), ids)

    def fetch_vectors(self, collection: str, ids: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """Stored vectors (storage form) of the given chunk ids."""
        recs = self._retrieve(collection, ids, [name])
        return {r.payload["id"]: qc.storage_form(self.spec, name, r.vector[name])
                for r in recs if r.payload and isinstance(r.vector, dict) and name in r.vector}

    def list_collections(self, prefix: str) -> list[str]:
        res = self._request(lambda: self.client.get_collections(), "listing Qdrant collections")
        return sorted(c.name for c in res.collections if c.name.startswith(prefix))

    def drop_collection(self, collection: str) -> None:
        if self._request(lambda: self.client.collection_exists(collection), f"checking Qdrant collection "
                                                                           f"{collection!r}"):
            self._request(lambda: self.client.delete_collection(collection), f"dropping Qdrant collection "
                                                                            f"{collection!r}")

    def get_alias(self, alias: str) -> str | None:
        res = self._request(lambda: self.client.get_aliases(), "listing Qdrant aliases")
        return next((a.collection_name for a in res.aliases if a.alias_name == alias), None)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point the alias at the collection in one atomic request (delete + create)."""
        _, m = _client_module()
        if not self._request(lambda: self.client.collection_exists(collection), f"checking Qdrant collection "
                                                                               f"{collection!r}"):
            raise KeyError(f"can't point alias {alias!r} at missing Qdrant collection {collection!r}")
        ops: list[Any] = []
        if self.get_alias(alias) is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=collection, alias_name=alias)))
        self._request(lambda: self.client.update_collection_aliases(change_aliases_operations=ops),
                      f"pointing alias {alias!r} at Qdrant collection {collection!r}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("closing the Qdrant client failed", exc_info=True)

    # -- search ----------------------------------------------------------------------------------
    def _search_params(self, k: int):
        """Search-time ef, exactness and quantized-search rescoring (None in local mode: always exact)."""
        if self.local_path is not None:
            return None
        _, m = _client_module()
        quant = None
        if self.cfg.server_quantization != "none" and self.spec.quantization == "none":
            quant = m.QuantizationSearchParams(rescore=True, oversampling=self.SERVER_OVERSAMPLING)
        return m.SearchParams(hnsw_ef=max(self.cfg.hnsw_ef, k), exact=self.cfg.exact, quantization=quant)

    def _hits(self, points, dense: bool, with_vectors: bool) -> list[Hit]:
        return qc.to_hits(self.spec, points, dense, with_vectors)

    def _dense_query(self, vector: np.ndarray) -> list[float]:
        return qc.query_vector(self.spec, vector).astype(np.float32, copy=False).tolist()

    def _sparse_query(self, query: SparseQuery):
        _, m = _client_module()
        return m.SparseVector(indices=np.asarray(query.indices).tolist(),
                              values=np.asarray(query.values, dtype=np.float32).tolist())

    def search_dense(self, collection: str, vector: np.ndarray, k: int, with_vectors: bool = False) -> list[Hit]:
        """Nearest chunks to ``vector`` in storage form (float32, uint8 codes, or packed bits).

        With ``with_vectors`` each hit carries ``dense`` (and ``dense_rescore``) in storage form."""
        names = [qc.DENSE] + ([qc.DENSE_RESCORE] if self.spec.rescore else [])
        q = self._dense_query(vector)
        res = self._request(lambda: self.client.query_points(
            collection, query=q, using=qc.DENSE, limit=k, with_payload=True,
            with_vectors=names if with_vectors else False, search_params=self._search_params(k)),
            f"dense search in Qdrant collection {collection!r}")
        return self._hits(res.points, True, with_vectors)

    def search_sparse(self, collection: str, query: SparseQuery, k: int) -> list[Hit]:
        """Best chunks by sparse dot product (IDF weighting by the server when the spec says so)."""
        if not self.spec.sparse:
            raise ValueError("this vector collection has no sparse vectors (spec.sparse is False)")
        if not len(query.indices):
            return []
        sv = self._sparse_query(query)
        res = self._request(lambda: self.client.query_points(collection, query=sv, using=qc.SPARSE, limit=k,
                                                             with_payload=True),
                            f"sparse search in Qdrant collection {collection!r}")
        return self._hits(res.points, False, False)

    def search_hybrid(self, collection: str, vector: np.ndarray, query: SparseQuery | None, k: int,
                      candidates: int = 100) -> list[Hit]:
        """Dense + sparse fused by the server with reciprocal rank fusion (one request).

        Scores are the server's RRF scores. :class:`~indexer.search.Searcher` fuses per-mode lists
        itself (with BM25 and configurable fusion); this is the single-request form of dense+sparse."""
        _, m = _client_module()
        cand = max(k, candidates)
        prefetch = [m.Prefetch(query=self._dense_query(vector), using=qc.DENSE, limit=cand,
                               params=self._search_params(cand))]
        if self.spec.sparse and query is not None and len(query.indices):
            prefetch.append(m.Prefetch(query=self._sparse_query(query), using=qc.SPARSE, limit=cand))
        res = self._request(lambda: self.client.query_points(
            collection, prefetch=prefetch, query=m.FusionQuery(fusion=m.Fusion.RRF), limit=k, with_payload=True),
            f"hybrid search in Qdrant collection {collection!r}")
        return self._hits(res.points, False, False)
