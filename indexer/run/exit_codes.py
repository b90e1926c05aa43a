"""Exit codes of ``indexer run`` and ``jobs/index.py``, for schedulers (README, "Running it unattended")."""

from __future__ import annotations

from typing import Any

OK = 0  # succeeded
GATE_FAILED = 1  # the run finished but a gate failed; the alias did not move
USER_ERROR = 2  # config or corpus mistake found before any work (the message names it)
REFUSED = 3  # refused before anything was written: the deletion guard, or another run holds the index's lease
UNREADABLE = 4  # succeeded, but some corpus files could not be read: their live chunks were kept as they were
STORE_UNAVAILABLE = 5  # a store kept failing transiently past its retry budget; nothing published, a rerun resumes


def exit_code(manifest: dict[str, Any]) -> int:
    """The exit code a finished run's manifest calls for."""
    if manifest.get("status") != "succeeded":
        return GATE_FAILED
    return UNREADABLE if manifest.get("unreadable_files") else OK
