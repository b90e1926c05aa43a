"""One owner of retries per request: the store client. A dead endpoint fails a run within its
``max_retries`` x ``max_backoff`` budget with one line naming the store, the request and what to do,
and the datasink does not multiply the attempts."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from indexer import schema
from indexer.cli import app
from indexer.run import exit_codes
from indexer.stores.base import StoreTarget, TransientStoreError
from indexer.stores.datasink import StoreDatasink
from tests.conftest import ROOT, sample_docs, write_parquet


class Unavailable:
    """A loopback HTTP server answering 503 to every request, counting what it received."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.requests.append((self.command, self.path))
                body = b'{"status":{"error":"service unavailable"}}'
                self.send_response(503)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def unavailable():
    srv = Unavailable()
    yield srv
    srv.close()


RETRIES, BACKOFF = 2, 0.2


def _store_settings(kind: str, url: str) -> list[str]:
    if kind == "qdrant":
        pre = "vector_store.qdrant"
        return ["vector_store.kind=qdrant", f"{pre}.url={url}", f"{pre}.prefer_grpc=false",
                f"{pre}.max_retries={RETRIES}", f"{pre}.initial_backoff=0.1", f"{pre}.max_backoff={BACKOFF}"]
    pre = "text_store.elasticsearch"
    return ["text_store.kind=elasticsearch", f"{pre}.hosts=[{url}]",
            f"{pre}.max_retries={RETRIES}", f"{pre}.initial_backoff=0.1", f"{pre}.max_backoff={BACKOFF}"]


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("kind,name", [("qdrant", "Qdrant"), ("elasticsearch", "Elasticsearch")])
def test_dead_endpoint_fails_the_run_within_the_retry_budget(tmp_path, unavailable, kind, name):
    write_parquet(tmp_path / "corpus" / "a.parquet", sample_docs(20, 80))
    sets = [f"corpus.path={tmp_path / 'corpus'}", "corpus.sample=false", f"index.dir={tmp_path / 'index'}",
            *_store_settings(kind, unavailable.url)]
    args = ["run", str(ROOT / "configs" / "local.yaml")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == exit_codes.STORE_UNAVAILABLE, res.output
    assert "Traceback" not in res.output
    # one attempt plus max_retries, each waiting at most max_backoff: no other layer retried the request
    assert len(unavailable.requests) == RETRIES + 1, unavailable.requests
    assert len(set(unavailable.requests)) == 1
    line = [ln for ln in res.output.splitlines() if "still failing" in ln]
    assert len(line) == 1, res.output
    assert name in line[0] and unavailable.url in line[0] and f"after {RETRIES} retries" in line[0]
    assert "then rerun" in line[0]


class AlwaysBusy:
    """A store every write of which fails transiently, counting the calls (in this process)."""

    single_writer = False
    calls = 0

    def ensure_collection(self, collection):
        pass

    def upsert(self, collection, batch):
        type(self).calls += 1
        raise TransientStoreError("busy")

    def close(self):
        pass


def test_datasink_does_not_retry_on_top_of_the_store(tmp_path):
    AlwaysBusy.calls = 0
    sink = StoreDatasink([("vector store", StoreTarget(AlwaysBusy, False), "chunks_v1")], run_tag="t")
    block = pa.table({schema.ID: np.array(["a", "b"]), schema.TEXT: np.array(["x", "y"])})
    t0 = time.monotonic()
    with pytest.raises(TransientStoreError):
        sink.write([block], None)
    assert AlwaysBusy.calls == 1  # the store client's own budget was the only one
    assert time.monotonic() - t0 < 1.0  # and the sink did not back off either
