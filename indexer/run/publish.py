"""Moving the alias: to a new version after its gate passed (dropping versions beyond
``index.keep_versions``), or back to an older kept version (rollback)."""

from __future__ import annotations

from typing import Any

from ..config import JobConfig
from ..layout import Layout, list_runs, read_version, version_number
from ..schema import VectorSpec
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
    """Undo the latest run, holding the index's lease (a rollback never runs under a live run).

    Without ``to``: when the latest run not yet rolled back is an incremental run into the live version
    with an undo record, apply it (:mod:`indexer.run.undo`): the live version is back to exactly the
    state before that run. Otherwise (a full build, or ``to`` given) move the alias back to the
    previous version (or to ``to``) in both stores."""
    from .lease import held

    storage, layout = Storage(cfg.corpus.s3), Layout(cfg.index.dir)
    with held(storage, layout, cfg.index.lease_timeout_s, command="rollback"):
        latest = None if to else _latest_run(storage, layout)
        if latest is not None and latest["mode"] == "incremental" and latest["versions"]["built"] == _live(cfg):
            return _undo_run(cfg, storage, layout, latest)
        res = _switch_version(cfg, to)
        if latest is not None and latest["versions"]["built"] == res["from"]:
            _mark_rolled_back(storage, layout, latest, {"alias": res["to"]})
        return res


def _live(cfg: JobConfig) -> str | None:
    vectors = vector_store_factory(cfg)()
    try:
        return vectors.get_alias(cfg.index.name)
    finally:
        vectors.close()


def _latest_run(storage: Storage, layout: Layout) -> dict[str, Any] | None:
    """The manifest of the newest run that changed the index and was not rolled back (failed runs changed
    nothing that stayed: an incremental one was rolled back, a full one never published)."""
    for run_id in reversed(list_runs(storage, layout)):
        m = storage.read_json(layout.run_manifest(run_id))
        if m.get("rolled_back") or m.get("status") != "succeeded":
            continue
        return m
    return None


def _mark_rolled_back(storage: Storage, layout: Layout, manifest: dict[str, Any], how: dict[str, Any]) -> None:
    storage.write_json(layout.run_manifest(manifest["run_id"]), {**manifest, "rolled_back": True, "rollback": how})


def _undo_run(cfg: JobConfig, storage: Storage, layout: Layout, manifest: dict[str, Any]) -> dict[str, Any]:
    """Apply an incremental run's undo record to the live version."""
    from . import undo

    run_id, collection = manifest["run_id"], manifest["versions"]["built"]
    rec = undo.read_record(storage, layout, run_id)
    if rec is None:
        raise RuntimeError(f"the latest run {run_id} changed {collection} in place and its undo record is not kept "
                           f"(index.keep_versions={cfg.index.keep_versions}); to serve an older version instead "
                           "run: indexer rollback CONFIG --to VERSION")
    version = read_version(storage, layout, collection)
    spec = VectorSpec.from_version(version)
    done = undo.apply(storage, layout, run_id, vector_store_factory(cfg, spec), text_store_factory(cfg))
    _mark_rolled_back(storage, layout, manifest, {"undo": done})
    return {"alias": cfg.index.name, "from": collection, "to": collection, "undone_run": run_id, **done}


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
