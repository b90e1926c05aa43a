"""Store contracts: what every engine implements, and how the job opens one.

A *store* is one engine (embedded or server) that holds versioned collections and an alias that
names the live one. Vector stores hold dense + sparse vectors with the chunk payload; text stores
hold text + metadata for BM25. The job opens stores through a :class:`StoreTarget` (a picklable
factory plus whether the engine takes one writer process), so Ray tasks and actors open their own
clients; :mod:`indexer.stores.datasink` writes to them from Ray Data.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..schema import Columns, Hit, SparseQuery, VectorSpec

log = logging.getLogger(__name__)


@dataclass
class WriteResult:
    """What one write call did. ``rejects`` holds (id, reason) of rows the store refused terminally."""

    written: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: "WriteResult") -> "WriteResult":
        return WriteResult(self.written + other.written, self.rejects + other.rejects, self.seconds + other.seconds)


class TransientStoreError(RuntimeError):
    """A failure worth retrying (timeouts, 408/429/5xx)."""


class Store(abc.ABC):
    """Common lifecycle of a versioned store. Collections are named '<index.name>_v<N>'."""

    single_writer: bool = False
    """True when only one process may write at a time (embedded engines)."""

    @abc.abstractmethod
    def ensure_collection(self, collection: str) -> None:
        """Create the collection if missing (idempotent); apply the bulk-load profile."""

    @abc.abstractmethod
    def upsert(self, collection: str, batch: Columns) -> WriteResult:
        """Write chunks (idempotent by id). Terminal per-row failures come back as rejects."""

    @abc.abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Delete chunks by chunk id; returns how many were asked to be deleted."""

    @abc.abstractmethod
    def finalize(self, collection: str) -> None:
        """Make everything written durable and searchable; restore bulk-load settings."""

    @abc.abstractmethod
    def count(self, collection: str) -> int:
        """Exact number of chunks in the collection."""

    @abc.abstractmethod
    def retrieve(self, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored fields of the given chunk ids (missing ids are absent from the result)."""

    @abc.abstractmethod
    def export_rows(self, collection: str, ids: Sequence[str]) -> Columns:
        """Stored chunks of ``ids`` as the batch :meth:`upsert` accepts (missing ids are left out), so
        upserting the result writes them back exactly as they are: what an undo record keeps."""

    @abc.abstractmethod
    def list_collections(self, prefix: str) -> list[str]:
        """Collections whose name starts with prefix."""

    @abc.abstractmethod
    def drop_collection(self, collection: str) -> None:
        """Delete a collection (idempotent)."""

    @abc.abstractmethod
    def get_alias(self, alias: str) -> str | None:
        """The collection the alias points to, or None."""

    @abc.abstractmethod
    def set_alias(self, alias: str, collection: str) -> None:
        """Point the alias at collection atomically."""

    def close(self) -> None:
        """Release clients and file handles."""


class VectorStore(Store):
    """A store of dense + sparse vectors with the chunk payload.

    Opened without a spec, a vector store serves the catalog operations only (``list_collections``,
    ``get_alias``, ``set_alias``, ``drop_collection``, ``count``): finding or moving the live version
    needs no knowledge of the vectors. Anything that lays out or reads vectors needs the spec.
    """

    def __init__(self, spec: VectorSpec | None):
        self._spec = spec

    @property
    def spec(self) -> VectorSpec:
        if self._spec is None:
            raise ValueError(f"{type(self).__name__} was opened for catalog operations only (no VectorSpec); "
                             "open it with the collection's VectorSpec to write or search vectors")
        return self._spec

    def _spec_repr(self) -> str:
        """The spec's part of a store's repr (works for a catalog-only store too)."""
        s = self._spec
        return "catalog only" if s is None else f"dim={s.dim}, quantization={s.quantization!r}"

    @abc.abstractmethod
    def search_dense(self, collection: str, vector: np.ndarray, k: int, with_vectors: bool = False) -> list[Hit]:
        """Nearest chunks to a query vector in storage form (float32, uint8 codes, or packed bits).

        With ``with_vectors`` each hit carries its stored vectors (``dense`` and, when the spec has
        one, ``dense_rescore``) in storage form, for rescoring."""

    @abc.abstractmethod
    def search_sparse(self, collection: str, query: SparseQuery, k: int) -> list[Hit]:
        """Best chunks by sparse dot product (IDF applied by the store when configured)."""

    def fetch_vectors(self, collection: str, ids: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """Stored vectors by chunk id (used for rescoring). Optional."""
        raise NotImplementedError


class TextStore(Store):
    """A BM25 text store."""

    def export_rows(self, collection: str, ids: Sequence[str]) -> Columns:
        """Stored chunks as an upsert batch (id, text, title, metadata JSON, hash), from :meth:`retrieve`
        (every text engine returns the text, title, metadata and hash it stores)."""
        return text_rows(self.retrieve(collection, ids), ids)

    @abc.abstractmethod
    def search_bm25(self, collection: str, query: str, k: int) -> list[Hit]:
        """Best chunks by BM25 over text (and title when present)."""


def text_rows(stored: dict[str, dict[str, Any]], order: Sequence[str]) -> Columns:
    """Retrieved text-store payloads (id -> text, title, metadata, hash) as an upsert batch, in the
    order of ``order`` (ids not stored are left out)."""
    import json

    from .. import schema

    found = [stored[i] for i in dict.fromkeys(str(i) for i in order) if i in stored]
    return {
        schema.ID: np.array([p["id"] for p in found], dtype=object),
        schema.TEXT: np.array([p.get("text") or "" for p in found], dtype=object),
        schema.TITLE: np.array([p.get("title") or "" for p in found], dtype=object),
        schema.METADATA: np.array([json.dumps(p.get("metadata") or {}, ensure_ascii=False, sort_keys=True)
                                   for p in found], dtype=object),
        schema.HASH: np.array([p.get("hash") or "" for p in found], dtype=object),
    }


StoreFactory = Callable[[], Store]
"""A picklable zero-argument callable that opens a store (a client per task / actor)."""


@dataclass(frozen=True)
class StoreTarget:
    """A store as the job writes to it: the factory that opens it, and whether the engine allows one
    writer process only (then every write goes through one :class:`~indexer.stores.datasink.SingleWriter`
    actor). Picklable; calling it opens the store, so a target is itself a :data:`StoreFactory`."""

    factory: StoreFactory
    single_writer: bool

    def __call__(self) -> Store:
        return self.factory()


def retry_transient(fn: Callable[[], Any], *, retries: int, base_delay: float = 0.5, max_delay: float = 30.0,
                    what: str = "request", transient: Callable[[BaseException], bool] | None = None,
                    retry_after: Callable[[BaseException], float | None] | None = None,
                    describe: Callable[[BaseException], str] = str,
                    sleep: Callable[[float], Any] | None = None, hint: str = "") -> Any:
    """Run ``fn``; on a transient failure retry with exponential backoff, then raise
    :class:`TransientStoreError`. Other failures propagate unchanged.

    ``transient`` tells which exceptions are worth a retry (default: :class:`TransientStoreError`);
    ``retry_after`` may read a server's requested delay (honoured up to ``max_delay``); ``describe``
    renders an error for logs and the final message (e.g. with secrets redacted); ``sleep`` is the
    backoff's clock (default ``time.sleep``); ``hint`` ends the final message with what to do.
    At most ``retries + 1`` attempts, waiting at most ``retries * max_delay`` in all: the caller is
    the only layer that retries the request.
    """
    attempt, waited = 0, 0.0
    while True:
        try:
            return fn()
        except Exception as e:
            if not (transient(e) if transient else isinstance(e, TransientStoreError)):
                raise
            attempt += 1
            if attempt > retries:
                raise TransientStoreError(f"{what} still failing after {retries} retries ({waited:.1f}s of backoff): "
                                          f"{' '.join(describe(e).split())}" + (f"; {hint}" if hint else "")) from e
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            asked = retry_after(e) if retry_after else None
            if asked is not None:
                delay = max(delay, min(asked, max_delay))
            first_line = (describe(e).splitlines() or [type(e).__name__])[0]
            log.warning("%s failed transiently (%s); retry %d/%d in %.1fs", what, first_line, attempt, retries, delay)
            (sleep or time.sleep)(delay)
            waited += delay
