"""Throughput profiles: what ``indexer bench`` measured, one JSON file keyed by device and model
(``cost.profile_path``, default ``.indexer/profiles.json``); the estimate prices with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import JobConfig


def profile_path(cfg: JobConfig) -> Path:
    return Path(cfg.cost.profile_path or ".indexer/profiles.json")


def profile_key(gpu_type: str, model_ref: str) -> str:
    return f"{gpu_type}|{model_ref}"


def load_profile(cfg: JobConfig) -> dict[str, Any] | None:
    """The measured profile for (gpu_type, model), if ``indexer bench`` saved one."""
    p = profile_path(cfg)
    if not p.exists():
        return None
    return json.loads(p.read_text()).get(profile_key(cfg.cost.gpu_type, cfg.dense.model))


def save_profile(cfg: JobConfig, prof: dict[str, Any]) -> Path:
    path = profile_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = json.loads(path.read_text()) if path.exists() else {}
    profiles[profile_key(prof.get("gpu_type", cfg.cost.gpu_type), cfg.dense.model)] = prof
    path.write_text(json.dumps(profiles, indent=2) + "\n")
    return path
