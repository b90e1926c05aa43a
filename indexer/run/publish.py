"""Moving the alias: to a new version after its gate passed (dropping versions beyond
``index.keep_versions``), or back to an older kept version (rollback)."""

from __future__ import annotations

from typing import Any

from ..config import JobConfig
from ..layout import Layout, version_number
from ..storage import Storage
from ..stores.base import StoreTarget
from ..stores.factory import text_store_factory, vector_store_factory


def publish(cfg: JobConfig, vector_store: StoreTarget, text_store: StoreTarget, storage: Storage, layout: Layout,
            collection: str, existing: list[str]) -> list[str]:
    """Point the alias at ``collection`` in both stores; keep the newest ``index.keep_versions``.

    Returns the versions dropped (from both stores, with their hash manifests)."""
    vectors, text = vector_store(), text_store()
    dropped = []
    try:
        vectors.set_alias(cfg.index.name, collection)
        text.set_alias(cfg.index.name, collection)
        keep = sorted(set(existing) | {collection}, key=version_number)[-cfg.index.keep_versions:]
        for old in existing:
            if old not in keep:
                vectors.drop_collection(old)
                text.drop_collection(old)
                storage.delete_prefix(layout.hashes_dir(old))
                dropped.append(old)
    finally:
        vectors.close()
        text.close()
    return dropped


def rollback(cfg: JobConfig, to: str | None = None) -> dict[str, Any]:
    """Move the alias back to the previous version (or to ``to``) in both stores, holding the index's
    lease (a rollback never runs under a live run)."""
    from .lease import held

    with held(Storage(cfg.corpus.s3), Layout(cfg.index.dir), cfg.index.lease_timeout_s, command="rollback"):
        return _switch_version(cfg, to)


def _switch_version(cfg: JobConfig, to: str | None) -> dict[str, Any]:
    vectors, text = vector_store_factory(cfg)(), text_store_factory(cfg)()
    try:
        live = vectors.get_alias(cfg.index.name)
        versions = sorted(set(vectors.list_collections(cfg.index.name + "_v")) &
                          set(text.list_collections(cfg.index.name + "_v")), key=version_number)
        if to is None:
            older = [c for c in versions if version_number(c) < version_number(live or "")]
            if not older:
                raise RuntimeError(f"no version older than {live} is kept (versions: {versions})")
            to = older[-1]
        if to not in versions:
            raise RuntimeError(f"version {to} is not present in both stores (versions: {versions})")
        vectors.set_alias(cfg.index.name, to)
        text.set_alias(cfg.index.name, to)
    finally:
        vectors.close()
        text.close()
    return {"alias": cfg.index.name, "from": live, "to": to, "versions": versions}
