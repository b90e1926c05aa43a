"""What ``indexer run`` shows on stderr while it works: one live table (a row per stage: rows,
rows/s, ETA) on a terminal, a plain line every few seconds otherwise (job logs), fed by the run's
stats actor; and, unless ``-v``, none of Ray's and transformers' chatter.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

STAGES = ("read", "validate", "diff", "tokenize", "encode", "write")
"""The stages shown, in pipeline order (others the stats actor reports are left out)."""

ENCODED_STAGES = ("tokenize", "encode", "write")
"""Stages that see only the rows the diff lets through (new and changed ones)."""

NOISY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "transformers", "sentence_transformers",
                 "httpx", "urllib3", "elastic_transport", "filelock", "jieba", "indexer")
"""Loggers whose INFO lines a user does not need in a default run (``-v`` shows them)."""

NOTICE_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")
"""Loggers whose warnings are notices with nothing to act on (token auth on by default, progress
bars off because this display replaces them)."""


def quiet_libraries(verbose: bool) -> None:
    """Without ``verbose``: only warnings from every logger, no Ray Data progress bars, operator
    dumps or execution-stats logs, no deprecation notices, no download/loading progress bars in the
    workers (they inherit this environment), no notices that need no action (Ray's token-auth and
    disabled-progress-bar notes). With ``verbose``, Ray's own defaults stay."""
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Ray's workers inherit this environment: the same warning filters there
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning,"
                                            "ignore::PendingDeprecationWarning")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bar too
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.verbose_stats_logs = False
    ctx.enable_auto_log_stats = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def stage_rows(stages: dict[str, dict[str, Any]], total_rows: int) -> list[tuple[str, int, int, float, float | None]]:
    """Per shown stage: (name, rows done, rows expected, rows/s, seconds left or None).

    Reading, validation and diff expect every input row; the stages after the diff expect the
    share of rows the diff let through so far, extrapolated to the whole input."""
    diff = stages.get("diff", {})
    through = None
    if diff.get("rows"):
        passed = diff["rows"] - diff.get("unchanged", 0)
        through = passed / diff["rows"]
    out = []
    for name in STAGES:
        s = stages.get(name)
        if not s:
            continue
        rows, rate = int(s.get("rows", 0)), float(s.get("rows_per_s", 0.0))
        expected = total_rows if name not in ENCODED_STAGES or through is None else round(total_rows * through)
        expected = max(expected, rows)
        left = (expected - rows) / rate if rate > 0 else None
        out.append((name, rows, expected, rate, left))
    return out


class RunProgress:
    """The run's progress on ``console`` (stderr): call it with the stats actor's snapshot."""

    def __init__(self, console: Console, every: float = 10.0):
        self.console = console
        self.every = every
        self.live: Live | None = None
        self.last_line = 0.0
        self.started = time.monotonic()

    def __enter__(self) -> "RunProgress":
        if self.console.is_terminal:
            self.live = Live(self._table([]), console=self.console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def __call__(self, stages: dict[str, dict[str, Any]], total_rows: int) -> None:
        rows = stage_rows(stages, total_rows)
        if self.live is not None:
            self.live.update(self._table(rows))
            return
        now = time.monotonic()
        if rows and now - self.last_line >= self.every:
            self.last_line = now
            self.console.print(self.line(rows, now - self.started), soft_wrap=True, highlight=False)

    @staticmethod
    def line(rows: list[tuple[str, int, int, float, float | None]], elapsed: float) -> str:
        parts = [f"{n} {done:,}/{exp:,} ({rate:,.0f}/s{', ETA ' + _eta(left) if left else ''})"
                 for n, done, exp, rate, left in rows]
        return f"[{_eta(elapsed)}] " + ", ".join(parts)

    @staticmethod
    def _table(rows: list[tuple[str, int, int, float, float | None]]) -> Table:
        t = Table(title="indexing", title_justify="left", box=None)
        for c in ("stage", "rows", "rows/s", "ETA"):
            t.add_column(c, justify="left" if c == "stage" else "right")
        for n, done, exp, rate, left in rows:
            t.add_row(n, f"{done:,}/{exp:,}", f"{rate:,.0f}", _eta(left))
        return t
