"""One run per index at a time: a lease object in ``index.dir`` (``lease.json``).

The lease names its holder (run id, host, pid, start time) and is renewed by a background thread while
the run lives (every ``index.lease_timeout_s / 3``). It is taken with a compare-and-swap on the object
(:meth:`~indexer.storage.Storage.create_if_absent`, :meth:`~indexer.storage.Storage.replace_if`: an
flocked local file, or S3 conditional puts), so of two runs starting together exactly one wins; the
other is refused at once (:class:`IndexLeased`, exit 3) with a message naming the holder.

A crashed holder never blocks the next run: on the same host a holder whose process is gone is stale at
once (a rerun right after a SIGKILL resumes); any holder not renewed for ``index.lease_timeout_s`` is
stale (the only test possible for a holder on another host; clocks are assumed to agree to well within
the timeout). A stale lease is taken over with the same compare-and-swap.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..layout import Layout
from ..storage import Storage, is_s3, join
from .guard import RunRefused

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"


def lease_uri(layout: Layout) -> str:
    return join(layout.root, LEASE_FILE)


@dataclass(frozen=True)
class LeaseHolder:
    """What the lease says about the run holding it."""

    run_id: str | None  # None while the run is still planning
    host: str
    pid: int
    started_at: float  # epoch seconds
    renewed_at: float  # epoch seconds
    token: str  # unique per acquisition: tells our lease from a later holder's
    command: str = "run"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LeaseHolder":
        return cls(d.get("run_id"), str(d.get("host", "?")), int(d.get("pid", -1)), float(d.get("started_at", 0)),
                   float(d.get("renewed_at", 0)), str(d.get("token", "")), str(d.get("command", "run")))

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))
        run = f"run {self.run_id}" if self.run_id else f"an {self.command} still planning"
        return (f"{run} (indexer {self.command}, host {self.host}, pid {self.pid}, since {since}, "
                f"renewed {max(0, now - self.renewed_at):.0f}s ago)")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(holder: LeaseHolder, now: float, timeout_s: float, host: str,
             alive: Callable[[int], bool] = pid_alive) -> bool:
    """A holder on this host whose process is gone is stale at once; any holder not renewed for
    ``timeout_s`` is stale."""
    if holder.host == host and not alive(holder.pid):
        return True
    return now - holder.renewed_at > timeout_s


class IndexLeased(RunRefused):
    """Another run holds the index's lease: this one was refused before doing anything."""

    def __init__(self, holder: LeaseHolder, uri: str, timeout_s: float, now: float):
        free_in = max(0.0, holder.renewed_at + timeout_s - now)
        RuntimeError.__init__(
            self, f"refused: another run holds the index: {holder.describe(now)}; lease {uri}. Wait for it to "
            f"finish and run again; if that process is gone, the lease is stale at once on host {holder.host} "
            f"and elsewhere {free_in:.0f}s after its last renewal (index.lease_timeout_s={timeout_s:g})")
        self.verdict = None
        self.holder = holder

    def to_json(self) -> dict[str, Any]:
        return {"status": "refused", "reason": str(self), "lease": self.holder.to_json()}


class LeaseLost(RuntimeError):
    """The lease was taken over by another run while this one was working (it stopped renewing for
    longer than ``index.lease_timeout_s``): this run must not publish."""


class Lease:
    """A held lease: renewed by a thread between :meth:`start_renewing` and :meth:`release`."""

    def __init__(self, storage: Storage, uri: str, holder: LeaseHolder, tag: str, timeout_s: float,
                 clock: Callable[[], float] = time.time):
        self.storage, self.uri, self.holder, self.tag = storage, uri, holder, tag
        self.timeout_s, self.clock = timeout_s, clock
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, holder: LeaseHolder) -> bool:
        with self._lock:
            if self.lost:
                return False
            tag = self.storage.replace_if(self.uri, _encode(holder), self.tag)
            if tag is None:
                self.lost = True
                log.error("the index lease %s was taken over by another run; this run will not publish", self.uri)
                return False
            self.holder, self.tag = holder, tag
            return True

    def renew(self) -> bool:
        """Write a fresh ``renewed_at``; False (and :attr:`lost`) when another run holds the lease now."""
        return self._write(_with(self.holder, renewed_at=self.clock()))

    def name_run(self, run_id: str) -> None:
        """Record the run id once the run is planned (resumed or new)."""
        self._write(_with(self.holder, run_id=run_id, renewed_at=self.clock()))

    def check(self) -> None:
        """Raise :class:`LeaseLost` when the lease is no longer ours (checked before publishing)."""
        if self.lost or not self.renew():
            raise LeaseLost(f"the index lease {self.uri} was taken over by another run while this run was working "
                            "(it was not renewed for index.lease_timeout_s); nothing was published: run again")

    def start_renewing(self) -> None:
        every = max(0.05, self.timeout_s / 3)

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    if not self.renew():
                        return
                except Exception as e:  # noqa: BLE001 - a transient failure: the next tick tries again
                    log.warning("renewing the index lease failed: %s", e)

        self._thread = threading.Thread(target=loop, name="indexer-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if not self.lost:
                self.storage.delete_if(self.uri, self.tag)


def _encode(holder: LeaseHolder) -> bytes:
    return (json.dumps(holder.to_json(), indent=2) + "\n").encode()


def _with(holder: LeaseHolder, **changes: Any) -> LeaseHolder:
    return LeaseHolder(**{**holder.to_json(), **changes})


def acquire(storage: Storage, layout: Layout, timeout_s: float, *, command: str = "run",
            run_id: str | None = None, host: str | None = None, pid: int | None = None,
            clock: Callable[[], float] = time.time, alive: Callable[[int], bool] = pid_alive) -> Lease:
    """Take the index's lease, or raise :class:`IndexLeased` naming the live holder. A stale lease is
    taken over (logged)."""
    uri = lease_uri(layout)
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    for _ in range(8):  # each turn loses a race only to a writer that then holds a live lease
        now = clock()
        mine = LeaseHolder(run_id, host, pid, now, now, uuid.uuid4().hex, command)
        current = storage.read_tagged(uri)
        if current is None:
            tag = storage.create_if_absent(uri, _encode(mine))
        else:
            data, old_tag = current
            try:
                holder = LeaseHolder.from_json(json.loads(data))
            except (ValueError, TypeError):  # a torn or foreign file: treat as stale
                holder = LeaseHolder(None, "?", -1, 0.0, 0.0, "")
            if not is_stale(holder, now, timeout_s, host, alive):
                raise IndexLeased(holder, uri, timeout_s, now)
            log.warning("taking over a stale index lease from %s", holder.describe(now))
            tag = storage.replace_if(uri, _encode(mine), old_tag)
        if tag is not None:
            return Lease(storage, uri, mine, tag, timeout_s, clock)
    raise RuntimeError(f"could not take the index lease {uri}: it kept changing under this run")


@contextmanager
def held(storage: Storage, layout: Layout, timeout_s: float, *, command: str = "run") -> Iterator[Lease]:
    """Hold the index's lease (renewed in the background) for the ``with`` block; released on the way
    out, whether the block succeeded or failed."""
    root = Path(layout.root)
    fresh = not is_s3(layout.root) and not root.exists()
    lease = acquire(storage, layout, timeout_s, command=command)
    lease.start_renewing()
    try:
        yield lease
    finally:
        lease.release()
        if fresh:  # a run stopped before writing anything (a config mistake) leaves no index folder behind
            _remove_if_only_lease_files(root)


def _remove_if_only_lease_files(root: Path) -> None:
    leftovers = list(root.iterdir()) if root.is_dir() else []
    if all(p.is_file() and p.name.startswith(".lease") for p in leftovers):
        for p in leftovers:
            p.unlink(missing_ok=True)
        try:
            root.rmdir()
        except OSError:  # another process wrote into it meanwhile: keep it
            pass
