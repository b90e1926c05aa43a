"""Stdout of a ``--json`` command: exactly one JSON object, whatever else the process prints.

Ray's log monitor, its raylet messages and C libraries write to file descriptor 1 directly and
keep doing so after a command's work is done (a retried task's notice can arrive after the run
manifest). :func:`hold_stdout` therefore points fd 1 at stderr at the OS level for the rest of the
process and keeps a duplicate of the original stdout, which only :func:`emit_json` writes to.
Under a test runner that swaps ``sys.stdout`` for an in-memory stream, nothing is redirected and
the JSON goes to that stream.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_saved_fd: int | None = None


def _stdout_is_fd1() -> bool:
    try:
        return sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def hold_stdout() -> None:
    """From now until the process exits, everything written to fd 1 goes to stderr (idempotent)."""
    global _saved_fd
    if _saved_fd is not None or not _stdout_is_fd1():
        return
    sys.stdout.flush()
    _saved_fd = os.dup(1)
    os.dup2(2, 1)


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one line of JSON to the real stdout (the one :func:`hold_stdout` kept)."""
    data = json.dumps(obj, default=str) + "\n"
    if _saved_fd is None:
        sys.stdout.write(data)
        sys.stdout.flush()
        return
    raw = data.encode()
    while raw:
        raw = raw[os.write(_saved_fd, raw):]
