"""Helpers shared by the embedded stores: collections are directories under a root, aliases are
one JSON file replaced atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


class LocalCollections:
    """Directories ``root/<collection>`` plus ``root/aliases.json``."""

    def __init__(self, root: str):
        self.root = Path(root)

    def path(self, collection: str) -> Path:
        return self.root / collection

    def list(self, prefix: str) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith(prefix))

    def drop(self, collection: str) -> None:
        shutil.rmtree(self.path(collection), ignore_errors=True)

    def _aliases(self) -> dict[str, str]:
        f = self.root / "aliases.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def get_alias(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        if not self.path(collection).exists():
            raise KeyError(f"can't point alias {alias!r} at missing collection {collection!r} under {self.root}")
        data = self._aliases()
        data[alias] = collection
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".aliases.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.root / "aliases.json")
