"""Per-stage accounting across Ray workers: rows, busy seconds, wall span, and the nodes that ran it.

Each stage reports to one small actor after every batch (fire-and-forget); the driver reads the
totals for the run manifest. Wall span is first start to last end, so throughput = rows / wall.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


class StageStats:
    """Ray actor body accumulating per-stage counters."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Any]] = {}

    def record(self, stage: str, rows: int, seconds: float, start: float, end: float, node: str,
               extra: dict[str, float | str] | None = None) -> None:
        s = self._stages.setdefault(
            stage, {"rows": 0, "busy_seconds": 0.0, "start": start, "end": end, "nodes": set(), "extra": {}}
        )
        s["rows"] += rows
        s["busy_seconds"] += seconds
        s["start"] = min(s["start"], start)
        s["end"] = max(s["end"], end)
        s["nodes"].add(node)
        for k, v in (extra or {}).items():
            if isinstance(v, str):  # a per-node setting (e.g. the dense backend chosen there): kept per node
                s["extra"].setdefault(k, {})[node] = v
            else:
                s["extra"][k] = s["extra"].get(k, 0) + v

    def snapshot(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self._stages.items():
            wall = max(s["end"] - s["start"], 1e-9)
            out[name] = {
                "rows": s["rows"],
                "seconds": round(wall, 4),
                "busy_seconds": round(s["busy_seconds"], 4),
                "rows_per_s": round(s["rows"] / wall, 2),
                "start": round(s["start"], 3),  # epoch seconds: where the stage sits in the run's timeline
                "end": round(s["end"], 3),
                "nodes": sorted(s["nodes"]),
                **{k: (round(v, 4) if isinstance(v, float) else dict(sorted(v.items())) if isinstance(v, dict) else v)
                   for k, v in s["extra"].items()},
            }
        return out


def start_stats_actor():
    """The run's stats actor (no CPU slot): stages report to it through a :class:`StageReporter`."""
    import ray

    return ray.remote(StageStats).options(num_cpus=0).remote()


def node_id() -> str:
    """The Ray node this process runs on ("local" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (unit tests)
        return "local"


class StageReporter:
    """Picklable handle that stages use to report a batch's work to the stats actor."""

    def __init__(self, actor=None):
        self.actor = actor

    @contextmanager
    def measure(self, stage: str, rows: int, extra: dict[str, float] | None = None):
        extra = {} if extra is None else extra
        start = time.time()
        t0 = time.perf_counter()
        yield extra
        if self.actor is not None:
            self.actor.record.remote(stage, rows, time.perf_counter() - t0, start, time.time(), node_id(), extra)


@contextmanager
def polling(actor, callback: Callable[[dict[str, dict[str, Any]]], None] | None,
            interval: float = 1.0) -> Iterator[None]:
    """Meanwhile, call ``callback`` with the stats actor's snapshot every ``interval`` seconds
    (from a driver thread; a snapshot that fails is skipped). ``callback`` None: nothing."""
    if callback is None or actor is None:
        yield
        return
    import ray

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                callback(ray.get(actor.snapshot.remote(), timeout=max(5.0, 5 * interval)))
            except Exception as e:  # noqa: BLE001 - progress must never fail the run
                log.debug("progress snapshot skipped: %s", e)

    t = threading.Thread(target=loop, name="stage-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=10 * interval)
