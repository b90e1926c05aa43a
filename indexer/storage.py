"""Small file layer for ``index.dir``: local paths or ``s3://bucket/prefix`` URIs.

Run manifests, rejects and hash manifests are written here so every node of a cluster run, and
the next scheduled run, can find them. S3 goes through boto3 with the standard credential chain
(environment, shared config, instance/pod roles); an ``endpoint_url`` serves S3-compatible stores.
:func:`resolve_s3` picks the endpoint and region for boto3 here and for pyarrow's S3 filesystem
(``sources.parquet``) alike, so both clients talk to the same place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from .config import ConfigError, S3Config


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join path parts; keeps ``s3://`` URIs intact."""
    if is_s3(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return str(Path(base, *parts))


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


class S3Target(NamedTuple):
    """Where S3 requests go: an endpoint (None: AWS's own) and a signing region (None: the SDK's default)."""

    endpoint_url: str | None
    region: str | None


def resolve_s3(s3: S3Config) -> S3Target:
    """The endpoint and region, resolved the way boto3 resolves them, for every S3 client of the job.

    Endpoint: ``corpus.s3.endpoint_url``, then ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``
    (both ignored when ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true``). Region: ``corpus.s3.region``,
    then ``AWS_REGION``, then ``AWS_DEFAULT_REGION``. pyarrow's S3 filesystem reads neither endpoint
    variable, so without this a MinIO / LocalStack / moto setup that boto3 honours would send
    pyarrow's requests to AWS. Resolved in each process (driver and Ray workers read their own
    environment). Raises :class:`ConfigError` for an endpoint variable that is not an http(s) URL.
    """
    endpoint = s3.endpoint_url
    if endpoint is None and os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            value = os.environ.get(var, "").strip()
            if value:
                if not value.startswith(("http://", "https://")):
                    raise ConfigError(f"{var} must be an http:// or https:// URL, e.g. http://localhost:9000")
                endpoint = value.rstrip("/")
                break
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return S3Target(endpoint, region)


_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _s3_client(endpoint_url: str | None, region: str | None):
    """One boto3 S3 client per (endpoint, region) and process: every task of a Ray worker reuses it."""
    key = (endpoint_url, region)
    with _CLIENTS_LOCK:  # creating clients is not thread-safe; using one is
        if key not in _CLIENTS:
            import boto3
            from botocore.config import Config

            # Credentials: boto3's standard chain only. Transient errors (throttling, 5xx) are retried.
            # S3-compatible stores get checksums only where the API requires them (many reject the rest).
            extra = {"request_checksum_calculation": "when_required",
                     "response_checksum_validation": "when_required"} if endpoint_url else {}
            _CLIENTS[key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region,
                config=Config(retries={"max_attempts": 8, "mode": "standard"}, **extra),
            )
        return _CLIENTS[key]


class Storage:
    """Read/write bytes, JSON and Parquet under local paths or S3 URIs."""

    def __init__(self, s3: S3Config | None = None):
        self.s3cfg = s3 or S3Config()
        self._client = None

    # -- S3 -----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = _s3_client(*resolve_s3(self.s3cfg))
        return self._client

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_client"] = None
        return d

    # -- primitives ---------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
            return
        p = Path(uri)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)  # atomic: readers never see a half-written file

    def read_bytes(self, uri: str) -> bytes:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()

    def exists(self, uri: str) -> bool:
        if is_s3(uri):
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                self.client.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return Path(uri).exists()

    def list(self, prefix: str) -> list[str]:
        """Every file under a prefix (recursively), as full URIs/paths, sorted."""
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/" if key else ""
            out = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
            return sorted(out)
        p = Path(prefix)
        if not p.exists():
            return []
        return sorted(str(x) for x in p.rglob("*") if x.is_file() and not x.name.startswith("."))

    def delete_prefix(self, prefix: str) -> None:
        if is_s3(prefix):
            bucket, _ = split_s3(prefix)
            keys = [split_s3(uri)[1] for uri in self.list(prefix)]
            for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                resp = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
                if resp.get("Errors"):
                    e = resp["Errors"][0]
                    raise OSError(f"could not delete s3://{bucket}/{e.get('Key')}: {e.get('Code')} {e.get('Message')}")
            return
        shutil.rmtree(prefix, ignore_errors=True)

    # -- compare-and-swap on one small object (the run lease) -----------------------------
    # Local files: every operation holds an flock on a hidden sidecar (``.<name>.lock``), and the tag is a
    # hash of the content. S3: conditional requests (If-None-Match: * to create, If-Match: <ETag> to
    # replace or delete), so of two writers racing for the same object exactly one wins.

    def read_tagged(self, uri: str) -> tuple[bytes, str] | None:
        """The object's bytes and its tag (ETag on S3, content hash locally), or None when it is absent."""
        if is_s3(uri):
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                resp = self.client.get_object(Bucket=bucket, Key=key)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return resp["Body"].read(), resp["ETag"]
        with _file_lock(uri):
            return _read_local_tagged(uri)

    def create_if_absent(self, uri: str, data: bytes) -> str | None:
        """Write the object only if it does not exist; its new tag, or None when another writer has it."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return _s3_conditional(lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data,
                                                                  IfNoneMatch="*")["ETag"])
        with _file_lock(uri):
            try:
                fd = os.open(uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return _tag(data)

    def replace_if(self, uri: str, data: bytes, tag: str) -> str | None:
        """Replace the object only if its tag is still ``tag``; its new tag, or None when it changed."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return _s3_conditional(lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data,
                                                                  IfMatch=tag)["ETag"])
        with _file_lock(uri):
            current = _read_local_tagged(uri)
            if current is None or current[1] != tag:
                return None
            self.write_bytes(uri, data)
            return _tag(data)

    def delete_if(self, uri: str, tag: str) -> bool:
        """Delete the object only if its tag is still ``tag``; False when it changed or is gone."""
        if is_s3(uri):
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                return _s3_conditional(lambda: self.client.delete_object(Bucket=bucket, Key=key, IfMatch=tag)
                                       or True) is not None
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code in ("404", "NoSuchKey", "NotFound"):
                    return False
                if code not in ("NotImplemented", "InvalidArgument"):
                    raise
                # A store without conditional deletes: check, then delete (a narrow race, on release only).
                current = self.read_tagged(uri)
                if current is None or current[1] != tag:
                    return False
                self.client.delete_object(Bucket=bucket, Key=key)
                return True
        with _file_lock(uri):
            current = _read_local_tagged(uri)
            if current is None or current[1] != tag:
                return False
            os.unlink(uri)
            return True

    # -- formats ------------------------------------------------------------------------
    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_parquet(self, uri: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(uri, buf.getvalue())

    def read_parquet(self, uri: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(uri)))


def _tag(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_local_tagged(uri: str) -> tuple[bytes, str] | None:
    try:
        data = Path(uri).read_bytes()
    except FileNotFoundError:
        return None
    return data, _tag(data)


class _file_lock:
    """An exclusive flock on ``.<name>.lock`` next to ``uri``, held for one compare-and-swap step."""

    def __init__(self, uri: str):
        p = Path(uri)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p.parent / f".{p.name}.lock"
        self.fd = -1

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock


def _s3_conditional(call):
    """Run a conditional S3 request: its result, or None when its precondition failed (412, or 409
    for a conditional write that raced another one)."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return None
        raise


def part_key(files: Iterable[str], rows: Iterable[int]) -> str:
    """A name for a part from the (file, row) pairs it holds: a retried task rewrites its own part."""
    h = hashlib.blake2b(digest_size=12)
    for f, r in zip(files, rows):
        h.update(f"{f}:{int(r)}|".encode())
    return h.hexdigest()


def write_part(storage: Storage, directory: str, table: pa.Table) -> None:
    """Write ``table`` (with ``file`` and ``row`` columns) as one part under ``directory``."""
    if table.num_rows:
        key = part_key(table.column("file").to_pylist(), table.column("row").to_pylist())
        storage.write_parquet(join(directory, f"part-{key}.parquet"), table)


def read_parts(storage: Storage, directory: str, schema: pa.Schema) -> pa.Table:
    """Every part under ``directory``, as one table of ``schema``; a column a part lacks (written before
    the column existed, by an earlier attempt of a resumed run) reads as nulls."""
    tables = [storage.read_parquet(u) for u in storage.list(directory) if u.endswith(".parquet")]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([_with_columns(t, schema).select(schema.names).cast(schema) for t in tables])


def _with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table
