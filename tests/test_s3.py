"""S3: the corpus read through pyarrow's S3 filesystem, run records written with boto3, both against a
moto server on loopback with an ``endpoint_url`` (the same calls as against AWS or MinIO).

Every request the server receives is recorded with its signing key id, region and client, so the
tests check that pyarrow and boto3 both sign with the standard credential chain and the configured
region, in the driver and in Ray workers alike.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from indexer import schema
from indexer.config import ConfigError, CorpusConfig, S3Config, load_config
from indexer.sources.parquet import SourceError, list_files, plan_corpus, read_fragment
from indexer.storage import Storage
from tests.conftest import ROOT, S3_TEST_ENV, sample_docs, write_parquet

REGION = "eu-west-1"  # differs from AWS_DEFAULT_REGION, so a request signed for it proves the config is used
_AUTH = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/s3/")


class _RecordAuth:
    """WSGI middleware: remembers (key id, region, client) of every signed request."""

    def __init__(self, app):
        self.app = app
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, environ, start_response):
        m = _AUTH.search(environ.get("HTTP_AUTHORIZATION", ""))
        agent = environ.get("HTTP_USER_AGENT", "").lower()
        client = "pyarrow" if "aws-sdk-cpp" in agent else "boto3" if "botocore" in agent else agent
        self.seen.append((m.group(1), m.group(2), client) if m else ("<unsigned>", "", client))
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, the placeholder credentials in the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            mp.delenv(var, raising=False)
        for k, v in S3_TEST_ENV.items():
            mp.setenv(k, v)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        recorder = _RecordAuth(server._server.app)
        server._server.app = recorder
        host, port = server.get_host_and_port()
        try:
            yield {"endpoint": f"http://{host}:{port}", "requests": recorder.seen}
        finally:
            server.stop()


def _bucket(s3, name: str, region: str = REGION):
    import boto3

    c = boto3.client("s3", endpoint_url=s3["endpoint"], region_name=region)
    if region == "us-east-1":
        c.create_bucket(Bucket=name)
    else:
        c.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return c


def _upload(client, bucket: str, key: str, local: Path) -> str:
    client.upload_file(str(local), bucket, key)
    return f"s3://{bucket}/{key}"


def _docs(n: int) -> list[dict]:
    return sample_docs(n, 300)


def _keys(client, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _signers(s3, start: int) -> set[tuple[str, str, str]]:
    return set(s3["requests"][start:])


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------

def test_s3_index_dir_with_embedded_stores_needs_a_local_store_dir():
    with pytest.raises(ConfigError, match=r"index.store_dir") as e:
        load_config(ROOT / "configs" / "local.yaml", ["index.dir=s3://bkt/index"])
    assert "vector_store.kind=edge" in str(e.value) and "text_store.kind=tantivy" in str(e.value)
    cfg = load_config(ROOT / "configs" / "local.yaml", ["index.dir=s3://bkt/index", "index.store_dir=/tmp/x"])
    assert cfg.index.store_dir == "/tmp/x"
    cfg = load_config(ROOT / "configs" / "cluster.yaml")  # server stores: nothing local needed
    assert cfg.index.dir.startswith("s3://") and cfg.index.store_dir is None
    with pytest.raises(ConfigError, match="must be a local directory"):
        load_config(ROOT / "configs" / "local.yaml", ["index.dir=s3://bkt/index", "index.store_dir=s3://bkt/st"])


def test_endpoint_url_refuses_credentials_without_echoing_them():
    with pytest.raises(ConfigError, match="credential chain") as e:
        load_config(None, ["corpus.s3.endpoint_url=http://minio:hunter2pass@localhost:9000"])
    assert "hunter2pass" not in str(e.value)
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_config(None, ["corpus.s3.endpoint_url=localhost:9000"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["corpus.s3.aws_secret_access_key=abc"])


# ------------------------------------------------------------------------------------------
# Planning and reading Parquet from S3
# ------------------------------------------------------------------------------------------

def test_plan_and_read_parquet_from_s3(s3, tmp_path):
    c = _bucket(s3, "corpus-plan", "us-east-1")
    docs = _docs(30)
    _upload(c, "corpus-plan", "chunks/a.parquet", write_parquet(tmp_path / "a.parquet", docs, row_group_size=10))
    no_text = [{"id": f"x{i}", "body": "no text column"} for i in range(4)]
    _upload(c, "corpus-plan", "chunks/sub/b.parquet", write_parquet(tmp_path / "b.parquet", no_text))
    c.put_object(Bucket="corpus-plan", Key="chunks/c.parquet", Body=b"PAR1 broken")
    c.put_object(Bucket="corpus-plan", Key="chunks/_SUCCESS", Body=b"")
    c.put_object(Bucket="corpus-plan", Key="chunks/notes.txt", Body=b"not parquet")

    start = len(s3["requests"])
    # No region in the config: the credential chain's (AWS_DEFAULT_REGION) is used.
    cfg = CorpusConfig(path="s3://corpus-plan/chunks/", s3=S3Config(endpoint_url=s3["endpoint"]))
    files = list_files(cfg)
    assert files == ["s3://corpus-plan/chunks/a.parquet", "s3://corpus-plan/chunks/c.parquet",
                     "s3://corpus-plan/chunks/sub/b.parquet"]
    p = plan_corpus(cfg)
    assert [(f.file, f.row_group, f.row_offset, f.num_rows) for f in p.fragments] == [
        ("s3://corpus-plan/chunks/a.parquet", g, g * 10, 10) for g in range(3)]
    bad = {b.file.rsplit("/", 1)[1]: b for b in p.bad_files}
    assert bad["c.parquet"].reason.startswith("unreadable Parquet file") and bad["c.parquet"].num_rows == 0
    assert bad["b.parquet"].reason.startswith("missing column(s) ['text']") and bad["b.parquet"].ids == [
        f"x{i}" for i in range(4)]
    assert p.total_rows == 30 + 4 + 1

    rows = read_fragment(p.fragments[1], cfg)
    assert list(rows["id"]) == [d["id"] for d in docs[10:20]]
    assert list(rows[schema.ROW]) == list(range(10, 20))
    assert set(rows[schema.FILE]) == {"s3://corpus-plan/chunks/a.parquet"}
    assert list_files(CorpusConfig(path="s3://corpus-plan/chunks/a*.parquet",
                                   s3=S3Config(endpoint_url=s3["endpoint"]))) == ["s3://corpus-plan/chunks/a.parquet"]
    with pytest.raises(SourceError, match="not found"):
        list_files(CorpusConfig(path="s3://corpus-plan/nothing-here/", s3=S3Config(endpoint_url=s3["endpoint"])))
    assert _signers(s3, start) == {(S3_TEST_ENV["AWS_ACCESS_KEY_ID"], "us-east-1", "pyarrow")}


def test_storage_roundtrip_on_s3(s3):
    _bucket(s3, "index-store")
    st = Storage(S3Config(endpoint_url=s3["endpoint"], region=REGION))
    base = "s3://index-store/idx/"
    start = len(s3["requests"])
    st.write_json(base + "a/state.json", {"k": 1})
    for i in range(3):
        st.write_bytes(f"{base}a/parts/p{i}", b"x")
    assert st.exists(base + "a/state.json") and not st.exists(base + "a/missing.json")
    assert st.read_json(base + "a/state.json") == {"k": 1}
    assert st.list(base + "a/parts") == [f"s3://index-store/idx/a/parts/p{i}" for i in range(3)]
    st.delete_prefix(base + "a/parts")
    assert st.list(base + "a") == ["s3://index-store/idx/a/state.json"]
    assert _signers(s3, start) == {(S3_TEST_ENV["AWS_ACCESS_KEY_ID"], REGION, "boto3")}


def test_standard_aws_variables_alone_reach_the_endpoint(s3, tmp_path, monkeypatch):
    """No ``corpus.s3`` settings: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and AWS_REGION (as MinIO,
    LocalStack and moto users set them) lead pyarrow and boto3 to the same endpoint and region."""
    from indexer.storage import resolve_s3

    c = _bucket(s3, "std-env")
    _upload(c, "std-env", "chunks/a.parquet", write_parquet(tmp_path / "a.parquet", _docs(12), row_group_size=6))
    monkeypatch.setenv("AWS_REGION", REGION)
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv(var, s3["endpoint"] + "/")
        assert resolve_s3(S3Config()) == (s3["endpoint"], REGION)
        start = len(s3["requests"])
        cfg = CorpusConfig(path="s3://std-env/chunks/")  # nothing S3-specific configured
        p = plan_corpus(cfg)
        assert [f.num_rows for f in p.fragments] == [6, 6] and not p.bad_files
        assert len(read_fragment(p.fragments[1], cfg)["id"]) == 6
        st = Storage()
        st.write_json(f"s3://std-env/idx-{var}/state.json", {"k": var})
        assert st.read_json(f"s3://std-env/idx-{var}/state.json") == {"k": var}
        assert _signers(s3, start) == {(S3_TEST_ENV["AWS_ACCESS_KEY_ID"], REGION, "pyarrow"),
                                       (S3_TEST_ENV["AWS_ACCESS_KEY_ID"], REGION, "boto3")}

    # boto3's order: the S3-specific variable beats the general one, the config beats both;
    # AWS_REGION beats AWS_DEFAULT_REGION.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general.invalid:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific.invalid:2")
    assert resolve_s3(S3Config()) == ("http://s3-specific.invalid:2", REGION)
    assert resolve_s3(S3Config(endpoint_url="http://cfg.invalid:3", region="ap-south-1")) == (
        "http://cfg.invalid:3", "ap-south-1")
    monkeypatch.delenv("AWS_REGION")
    assert resolve_s3(S3Config()).region == S3_TEST_ENV["AWS_DEFAULT_REGION"]
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert resolve_s3(S3Config()).endpoint_url is None
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "minio:9000")
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL_S3.*http:// or https://"):
        resolve_s3(S3Config())


# ------------------------------------------------------------------------------------------
# The whole pipeline: corpus and index.dir on S3, embedded stores under a local store_dir
# ------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("ray_local")
def test_pipeline_on_s3_full_then_incremental_and_no_credentials_leak(s3, tmp_path, caplog, capfd):
    from indexer.run.pipeline import run
    from indexer.search import Searcher

    caplog.set_level(logging.INFO)
    c = _bucket(s3, "idx-e2e")
    docs = _docs(50)
    _upload(c, "idx-e2e", "corpus/a.parquet", write_parquet(tmp_path / "a.parquet", docs[:40], row_group_size=20))
    bad = [{"id": "bad.empty", "title": "t", "text": " ", "module": "x"},
           {"id": docs[0]["id"], "title": "dup", "text": "duplicate of the first id", "module": "x"}, *docs[40:]]
    _upload(c, "idx-e2e", "corpus/b.parquet", write_parquet(tmp_path / "b.parquet", bad))
    c.put_object(Bucket="idx-e2e", Key="corpus/c.parquet", Body=b"PAR1 broken")

    store_dir = tmp_path / "stores"
    cfg = load_config(ROOT / "configs" / "local.yaml", [
        "corpus.path=s3://idx-e2e/corpus/", "corpus.sample=false", f"corpus.s3.endpoint_url={s3['endpoint']}",
        f"corpus.s3.region={REGION}", "index.dir=s3://idx-e2e/index", f"index.store_dir={store_dir}",
        "encode.block_rows=64", "dense.dim=128", "verify.sample_ids=20"])
    start = len(s3["requests"])
    m1 = run(cfg)
    counts = m1["counts"]
    assert m1["status"] == "succeeded" and m1["mode"] == "full" and m1["alias_moved"]
    assert counts["input"] == 40 + 12 + 1 and counts["rejected"] == 3
    assert counts["indexed"] == counts["encoded"] == 50 and counts["input"] == counts["indexed"] + counts["rejected"]

    run_dir = f"index/runs/{m1['run_id']}/"
    coll = m1["versions"]["built"]
    keys = _keys(c, "idx-e2e", "index/")
    assert set(keys) == {run_dir + "manifest.json", run_dir + "rejects.parquet", f"index/versions/{coll}.json",
                         f"index/versions/{coll}/hashes/part-0.parquet", "index/state/chunks.json"}
    assert m1["rejects_path"] == f"s3://idx-e2e/{run_dir}rejects.parquet"
    on_s3 = json.loads(c.get_object(Bucket="idx-e2e", Key=run_dir + "manifest.json")["Body"].read())
    assert on_s3["counts"] == counts
    rejects = pq.read_table(io.BytesIO(c.get_object(Bucket="idx-e2e", Key=run_dir + "rejects.parquet")["Body"].read()))
    by_file = {(r["file"].rsplit("/", 1)[1], r["row"]): r["reason"] for r in rejects.to_pylist()}
    assert by_file[("b.parquet", 0)].startswith("text is empty")
    assert by_file[("b.parquet", 1)].startswith("duplicate id")
    assert by_file[("c.parquet", None)].startswith("unreadable Parquet file")
    hashes = pq.read_table(io.BytesIO(c.get_object(
        Bucket="idx-e2e", Key=f"index/versions/{coll}/hashes/part-0.parquet")["Body"].read()))
    assert sorted(hashes.column("id").to_pylist()) == sorted(d["id"] for d in docs)
    # Only the embedded engines' files are local.
    assert {p.name for p in store_dir.iterdir()} <= {"vectors", "text"}

    s = Searcher(cfg)  # reads the version manifest back from S3
    try:
        assert s.search(docs[7]["text"][:200], mode="hybrid", k=3)[0].id == docs[7]["id"]
    finally:
        s.close()

    m2 = run(cfg)
    c2 = m2["counts"]
    assert m2["status"] == "succeeded" and m2["mode"] == "incremental" and m2["versions"]["built"] == coll
    assert (c2["encoded"], c2["unchanged"], c2["new"], c2["deleted"], c2["indexed"]) == (0, 50, 0, 0, 50)
    assert c.head_object(Bucket="idx-e2e", Key=f"index/runs/{m2['run_id']}/manifest.json")

    # Driver (pyarrow footers, boto3 records) and Ray workers (pyarrow reads, boto3 parts) all signed
    # with the credential chain's key and the configured region.
    assert _signers(s3, start) == {(S3_TEST_ENV["AWS_ACCESS_KEY_ID"], REGION, "pyarrow"),
                                   (S3_TEST_ENV["AWS_ACCESS_KEY_ID"], REGION, "boto3")}

    # Credentials appear nowhere: manifests (returned and stored), state, logs, stdout/stderr.
    out, err = capfd.readouterr()
    texts = [json.dumps(m1), json.dumps(m2), json.dumps(on_s3), caplog.text, out, err,
             c.get_object(Bucket="idx-e2e", Key="index/state/chunks.json")["Body"].read().decode(),
             c.get_object(Bucket="idx-e2e", Key=f"index/versions/{coll}.json")["Body"].read().decode()]
    for secret in (S3_TEST_ENV["AWS_ACCESS_KEY_ID"], S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert not any(secret in t for t in texts)
    assert caplog.text  # the run did log
