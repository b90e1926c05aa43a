"""A writer actor that has finished its store leaves at once: its memory is not held while the
slowest store (the vector store's last index build) is still finalising."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import pytest

from indexer.stores.base import StoreTarget, WriteResult
from indexer.stores.datasink import StoreDatasink


def _alive(name: str) -> bool:
    import ray

    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True


@pytest.mark.usefixtures("ray_local")
def test_a_finished_writer_is_gone_while_the_other_still_finalises(tmp_path):
    class Store:  # defined here so that Ray ships it by value to the writer actors
        def __init__(self, gate: str | None):
            self.gate = Path(gate) if gate else None

        def ensure_collection(self, collection):
            pass

        def upsert(self, collection, batch):
            return WriteResult(written=0)

        def finalize(self, collection):
            while self.gate is not None and not self.gate.exists():  # the slow store: until the test opens it
                time.sleep(0.05)

        def count(self, collection):
            return 0

        def close(self):
            pass

    gate = tmp_path / "open"
    sink = StoreDatasink([("vectors", StoreTarget(partial(Store, str(gate)), True), "c"),
                          ("text", StoreTarget(partial(Store, None), True), "c")], run_tag="release")
    sink.on_write_start()  # both writer actors up
    assert _alive(sink._writer_name("text")) and _alive(sink._writer_name("vectors"))
    finishing = threading.Thread(target=sink._finish, args=([],))  # finalise, as after the last block
    finishing.start()
    try:
        deadline = time.monotonic() + 30
        while _alive(sink._writer_name("text")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(sink._writer_name("text"))  # done and gone ...
        assert _alive(sink._writer_name("vectors"))  # ... while the vector store still finalises
    finally:
        gate.touch()
        finishing.join(timeout=60)
    assert not finishing.is_alive() and not _alive(sink._writer_name("vectors"))
    assert set(sink.finalize_seconds) == {"vectors", "text"}
