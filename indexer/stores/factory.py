"""Pick the store implementations named in the config. Returns picklable :class:`StoreTarget` s
(a zero-argument factory plus whether the engine takes one writer process), so Ray tasks and actors
open their own clients and the datasink knows how to write to each without opening it."""

from __future__ import annotations

import functools

from ..config import JobConfig, TextStoreKind, VectorStoreKind
from ..layout import Layout
from ..schema import VectorSpec
from .base import StoreTarget


def vector_store_factory(cfg: JobConfig, spec: VectorSpec | None = None) -> StoreTarget:
    """The configured vector store. Without ``spec`` the store serves catalog operations only
    (aliases, collection lists, drops, counts), e.g. to find or move the live version."""
    layout = Layout(cfg.index.store_dir or cfg.index.dir)  # embedded files stay on local disk
    kind = cfg.vector_store.kind
    if kind == VectorStoreKind.edge:
        from .qdrant_edge import EdgeVectorStore

        return StoreTarget(functools.partial(EdgeVectorStore, layout.vectors_root, spec, cfg.vector_store.edge),
                           single_writer=EdgeVectorStore.single_writer)
    from .qdrant_server import QdrantServerStore

    if kind == VectorStoreKind.qdrant_local:
        path = cfg.vector_store.qdrant.local_path or layout.qdrant_local_root
        # qdrant-client's local mode locks its folder for one process.
        return StoreTarget(functools.partial(QdrantServerStore, spec, cfg.vector_store.qdrant, path),
                           single_writer=True)
    return StoreTarget(functools.partial(QdrantServerStore, spec, cfg.vector_store.qdrant), single_writer=False)


def text_store_factory(cfg: JobConfig) -> StoreTarget:
    """The configured text store."""
    layout = Layout(cfg.index.store_dir or cfg.index.dir)  # embedded files stay on local disk
    if cfg.text_store.kind == TextStoreKind.tantivy:
        from .tantivy_text import TantivyTextStore

        return StoreTarget(functools.partial(TantivyTextStore, layout.text_root, cfg.text_store),
                           single_writer=TantivyTextStore.single_writer)
    from .elasticsearch import ElasticsearchTextStore

    return StoreTarget(functools.partial(ElasticsearchTextStore, cfg.text_store),
                       single_writer=ElasticsearchTextStore.single_writer)
