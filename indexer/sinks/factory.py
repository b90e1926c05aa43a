"""Pick the store implementations named in the config. Returns picklable zero-argument factories,
so Ray tasks and actors open their own clients."""

from __future__ import annotations

import functools

from ..config import JobConfig, TextStoreKind, VectorStoreKind
from ..manifest import Layout
from .base import StoreFactory, VectorSpec


def vector_store_factory(cfg: JobConfig, spec: VectorSpec) -> StoreFactory:
    layout = Layout(cfg.index.store_dir or cfg.index.dir)  # embedded files stay on local disk
    kind = cfg.vector_store.kind
    if kind == VectorStoreKind.edge:
        from .qdrant_edge import EdgeVectorStore

        return functools.partial(EdgeVectorStore, layout.vectors_root, spec, cfg.vector_store.edge)
    from .qdrant_server import QdrantServerStore

    if kind == VectorStoreKind.qdrant_local:
        path = cfg.vector_store.qdrant.local_path or layout.qdrant_local_root
        return functools.partial(QdrantServerStore, spec, cfg.vector_store.qdrant, path)
    return functools.partial(QdrantServerStore, spec, cfg.vector_store.qdrant)


def text_store_factory(cfg: JobConfig) -> StoreFactory:
    layout = Layout(cfg.index.store_dir or cfg.index.dir)  # embedded files stay on local disk
    if cfg.text_store.kind == TextStoreKind.tantivy:
        from .tantivy_text import TantivyTextStore

        return functools.partial(TantivyTextStore, layout.text_root, cfg.text_store)
    from .elasticsearch import ElasticsearchTextStore

    return functools.partial(ElasticsearchTextStore, cfg.text_store)


def is_single_writer(factory: StoreFactory) -> bool:
    """Whether the store behind a factory allows one writer process (checked without opening it)."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if getattr(target, "__name__", "") == "QdrantServerStore":
        return len(getattr(factory, "args", ())) >= 3 and factory.args[2] is not None
    return bool(getattr(target, "single_writer", False))
