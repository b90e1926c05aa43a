"""Deterministic ids and content hashes, so a retried write is an idempotent upsert."""

from __future__ import annotations

import hashlib
import uuid

NAMESPACE = uuid.UUID("6f1c1b1e-58a4-4f7c-9a53-2d0c0a3f4e11")
"""Fixed namespace for point ids: the same chunk id maps to the same point id in every run and store."""


def point_id(chunk_id: str) -> str:
    """uuid5 of the chunk id (string form), used as the vector-store point id."""
    return str(uuid.uuid5(NAMESPACE, chunk_id))


def content_hash(text: str, title: str, metadata_json: str) -> str:
    """Hash of everything that ends up in the index for a chunk (text, title, metadata)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (text, title, metadata_json):
        b = part.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
