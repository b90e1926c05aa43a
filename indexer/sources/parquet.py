"""Parquet input: list files (local, glob or S3), plan row-group fragments, read them into the row contract.

Planning happens on the driver from Parquet footers only (exact row counts, schemas), so a file
that can't be read or lacks the id/text columns is known before any work starts and goes to the
rejects output; the run goes on with the rest. Reading happens in Ray tasks, one row group at a
time, and keeps every row's file and row number so any problem can be reported precisely.
"""

from __future__ import annotations

import functools
import glob as _glob
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from ..config import ConfigError, CorpusConfig, S3Config
from ..storage import resolve_s3

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The corpus location itself is unusable (nothing to read)."""


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint_url: str | None, region: str | None):
    """One S3FileSystem per (endpoint, region) and process, reused for every file. Credentials come
    from the standard AWS chain (environment, shared config/profile, web identity, instance or pod role)."""
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {}
    if endpoint_url:
        kwargs["endpoint_override"] = endpoint_url
        if endpoint_url.startswith("http://"):
            kwargs["scheme"] = "http"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem(path: str, s3: S3Config):
    """pyarrow filesystem + path within it. S3 uses the standard AWS credential chain and the
    endpoint and region of :func:`~indexer.storage.resolve_s3` (the same as boto3's)."""
    from pyarrow import fs as pafs

    if path.startswith("s3://"):
        return _s3_filesystem(*resolve_s3(s3)), path[len("s3://"):]
    return pafs.LocalFileSystem(), os.path.abspath(path)


def list_files(cfg: CorpusConfig) -> list[str]:
    """Parquet files named by ``corpus.path`` (file, directory, glob or s3:// prefix), sorted."""
    from pyarrow import fs as pafs

    path = cfg.path
    fs, p = filesystem(path, cfg.s3)
    if any(ch in path for ch in "*?["):
        if path.startswith("s3://"):
            base = p.split("*")[0].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            import fnmatch

            files = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, p)]
            return sorted("s3://" + f for f in files)
        return sorted(os.path.abspath(f) for f in _glob.glob(path, recursive=True) if os.path.isfile(f))
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"corpus.path not found: {path}")
    if info.type == pafs.FileType.File:
        files = [p]
    else:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
        files = [
            i.path for i in infos
            if i.type == pafs.FileType.File and i.path.endswith((".parquet", ".pq", ".parq"))
            and not os.path.basename(i.path).startswith((".", "_"))
        ]
    prefix = "s3://" if path.startswith("s3://") else ""
    return sorted(prefix + f for f in files)


@dataclass
class Fragment:
    """One row group of one file: the unit of reading, progress and resume."""

    file: str
    row_group: int
    row_offset: int  # row number of the group's first row within the file
    num_rows: int
    duplicate_rows: list[int] = field(default_factory=list)  # rows (file-relative) whose id was seen earlier
    duplicate_of: list[tuple[str, int]] = field(default_factory=list)  # (file, row) of the copy kept, per duplicate row

    @property
    def key(self) -> str:
        return f"{self.file}#{self.row_group}"


@dataclass
class BadFile:
    """A file rejected whole: unreadable footer, or id/text column missing."""

    file: str
    reason: str
    num_rows: int  # rows known from the footer (0 when the footer itself is unreadable)
    ids: list[str | None] = field(default_factory=list)
    unreadable: bool = False  # the file could not be read (not its content's fault): its live rows are kept


@dataclass
class CorpusPlan:
    """What planning found: the fragments to read, the files rejected whole, the row total."""

    fragments: list[Fragment]
    bad_files: list[BadFile]
    total_rows: int  # rows of readable files + rows of bad files (a bad file with unknown rows counts 1)
    files: list[str]
    ids: set[str] = field(default_factory=set)  # non-empty string ids of readable files (when duplicates are checked)
    columns: set[str] = field(default_factory=set)  # columns of any readable file

    @property
    def unreadable_files(self) -> list[BadFile]:
        """Files that could not be read at all: what they hold is unknown, so nothing of theirs is deleted."""
        return [b for b in self.bad_files if b.unreadable]


def _open(file: str, s3: S3Config) -> pq.ParquetFile:
    fs, p = filesystem(file, s3)
    return pq.ParquetFile(fs.open_input_file(p))


def plan_corpus(cfg: CorpusConfig, check_duplicates: bool = True) -> CorpusPlan:
    """Read footers (and the id column, to find duplicate ids) of every file; never reads text."""
    files = list_files(cfg)
    if not files:
        raise SourceError(f"no Parquet files under corpus.path={cfg.path}")
    fragments: list[Fragment] = []
    bad: list[BadFile] = []
    seen: dict[str, tuple[str, int]] = {}
    columns: set[str] = set()
    total = 0
    for f in files:
        try:
            pf = _open(f, cfg.s3)
            names = pf.schema_arrow.names
        except Exception as e:  # noqa: BLE001 - any unreadable file is a reject, not a crash
            bad.append(BadFile(f, f"unreadable Parquet file: {type(e).__name__}: {e}", 0, unreadable=True))
            total += 1
            continue
        columns.update(names)
        n = pf.metadata.num_rows
        missing = [c for c in (cfg.id_column, cfg.text_column) if c not in names]
        if missing:
            ids: list[str | None] = []
            if cfg.id_column in names:
                ids = id_strings(pf.read(columns=[cfg.id_column]).column(0))
            bad.append(BadFile(f, f"missing column(s) {missing} (file has: {names})", n, ids))
            total += n
            continue
        total += n
        dup_rows: dict[int, tuple[str, int]] = {}  # row -> (file, row) of the copy kept
        if check_duplicates:
            try:
                col = pf.read(columns=[cfg.id_column]).column(0)
            except Exception as e:  # noqa: BLE001
                bad.append(BadFile(f, f"unreadable id column: {type(e).__name__}: {e}", n, unreadable=True))
                continue
            for i, v in enumerate(id_strings(col)):
                if v is not None:
                    if v in seen:
                        dup_rows[i] = seen[v]
                    else:
                        seen[v] = (f, i)
        offset = 0
        rows_sorted = sorted(dup_rows)
        for rg in range(pf.metadata.num_row_groups):
            rg_n = pf.metadata.row_group(rg).num_rows
            dups = [r for r in rows_sorted if offset <= r < offset + rg_n]
            fragments.append(Fragment(f, rg, offset, rg_n, dups, [dup_rows[r] for r in dups]))
            offset += rg_n
    plan = CorpusPlan(fragments=fragments, bad_files=bad, total_rows=total, files=files, ids=set(seen),
                      columns=columns)
    check_columns(cfg, plan)
    return plan


def check_columns(cfg: CorpusConfig, plan: CorpusPlan) -> None:
    """A column the config names that exists in none of the readable files is a config mistake (a
    typo would otherwise reject every row): raise :class:`~indexer.config.ConfigError` naming it and
    the columns that exist. Nothing is checked when no file could be read."""
    if not plan.columns:
        return
    named = [("corpus.id_column", cfg.id_column), ("corpus.text_column", cfg.text_column)]
    if cfg.title_column:
        named.append(("corpus.title_column", cfg.title_column))
    named += [("corpus.metadata_columns", c) for c in cfg.metadata_columns or []]
    for key, col in named:
        if col not in plan.columns:
            readable = len(plan.files) - len(plan.unreadable_files)
            raise ConfigError(f"{key}={col!r} is in none of the {readable} readable corpus file(s) under "
                              f"{cfg.path}; their columns: {', '.join(sorted(plan.columns))}")


def _json_default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


_BINARY_OF = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary(), pa.string_view(): pa.binary_view()}


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary_type(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _decode_utf8(values: list[bytes | None], what: str) -> tuple[list[str | None], list[str]]:
    """Bytes -> strings; a value that is not valid UTF-8 becomes None with a reason naming its byte offset."""
    out: list[str | None] = []
    reasons = [""] * len(values)
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError as e:
            out.append(None)
            reasons[i] = f"{what} is not valid UTF-8 (byte {e.start})"
    return out, reasons


def _text_values(col: pa.ChunkedArray, what: str) -> tuple[list[str | None], list[str]]:
    """A string-typed column as python strings. Parquet readers do not check that string columns hold
    UTF-8, so a file can carry bytes that fail to decode: those rows get a reason instead of failing the read."""
    try:
        col.validate(full=True)
        return col.to_pylist(), [""] * len(col)
    except pa.ArrowInvalid:
        raw = pa.chunked_array([c.view(_BINARY_OF[c.type]) for c in col.chunks], _BINARY_OF[col.type])
        return _decode_utf8(raw.to_pylist(), what)


def _strings(col: pa.ChunkedArray, what: str, integers: bool = False) -> tuple[list[str | None], list[str]]:
    """Column -> python strings plus a reason per row ('' when fine). ``integers``: an integer column
    (any width, signed or not) gives its decimal strings (how ids written by Spark or pandas read)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], t.value_type)
        t = col.type
    if _is_text_type(t):
        return _text_values(col, what)
    if _is_binary_type(t):
        return _decode_utf8(col.to_pylist(), what)
    if integers and pa.types.is_integer(t):
        return col.cast(pa.string()).to_pylist(), [""] * len(col)
    vals = col.to_pylist()
    return [None] * len(vals), [f"{what} is null" if v is None else f"{what} is not a string ({t})" for v in vals]


def id_strings(col: pa.ChunkedArray) -> list[str | None]:
    """The ids of an id column as strings (None where a value is null or can't be an id): strings as
    they are, integers as decimal strings, so integer 7 in one file and string "7" in another are one id."""
    return _strings(col, "id", integers=True)[0]


def _meta_values(col: pa.ChunkedArray, name: str) -> tuple[list[Any], list[str]]:
    """A metadata column as python values; a value holding a string that is not valid UTF-8 (at any
    nesting depth) becomes None with a reason."""
    what = f"column {name!r}"
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if _is_text_type(t):
        return _strings(col, what)
    try:
        col.validate(full=True)
        return col.to_pylist(), [""] * len(col)
    except pa.ArrowInvalid:
        pass
    out: list[Any] = []
    reasons: list[str] = []
    for chunk in col.chunks:
        for i in range(len(chunk)):
            try:
                out.append(chunk[i].as_py())
                reasons.append("")
            except UnicodeDecodeError as e:
                out.append(None)
                reasons.append(f"{what} is not valid UTF-8 (byte {e.start})")
    return out, reasons


def read_fragment(frag: Fragment, cfg: CorpusConfig) -> dict[str, np.ndarray]:
    """Read one row group into the row contract. Values that can't be decoded get a reject reason
    here ('' = fine so far); the row rules themselves are :func:`row_reason`."""
    pf = _open(frag.file, cfg.s3)
    table = pf.read_row_group(frag.row_group)
    n = table.num_rows
    ids, id_reasons = _strings(table.column(cfg.id_column), "id", integers=True)
    texts, text_reasons = _strings(table.column(cfg.text_column), "text")
    if cfg.title_column and cfg.title_column in table.column_names:
        titles, title_reasons = _strings(table.column(cfg.title_column), "title")
        title_reasons = ["" if (r.endswith("is null")) else r for r in title_reasons]
    else:
        titles, title_reasons = [""] * n, [""] * n
    used = {cfg.id_column, cfg.text_column, cfg.title_column}
    meta_cols = cfg.metadata_columns if cfg.metadata_columns is not None else [
        c for c in table.column_names if c not in used
    ]
    meta_cols = [c for c in meta_cols if c in table.column_names]
    meta = {c: _meta_values(table.column(c), c) for c in meta_cols}
    rows = np.arange(frag.row_offset, frag.row_offset + n, dtype=np.int64)
    kept = dict(zip(frag.duplicate_rows, frag.duplicate_of))

    out_meta, reasons, duplicate_of = [], [], []
    for i in range(n):
        out_meta.append(json.dumps({c: meta[c][0][i] for c in meta_cols}, ensure_ascii=False,
                                   default=_json_default, sort_keys=True))
        meta_reason = next((meta[c][1][i] for c in meta_cols if meta[c][1][i]), "")
        reasons.append(id_reasons[i] or text_reasons[i] or title_reasons[i] or meta_reason)
        k = kept.get(int(rows[i]))
        duplicate_of.append(f"{k[0]} row {k[1]}" if k else "")
    return {
        schema.ID: np.array(ids, dtype=object),
        schema.TEXT: np.array(texts, dtype=object),
        schema.TITLE: np.array([t or "" for t in titles], dtype=object),
        schema.METADATA: np.array(out_meta, dtype=object),
        schema.FILE: np.array([frag.file] * n, dtype=object),
        schema.ROW: rows,
        schema.DUPLICATE: np.array(duplicate_of, dtype=object),
        schema.REJECT_REASON: np.array(reasons, dtype=object),
    }


def row_reason(id_value: str | None, text: str | None, duplicate: bool | str) -> str:
    """The reject reason for one row, or '' when the row is valid.

    Rules (first match wins): null id, empty id, null text, empty or whitespace-only text,
    duplicate id (a row earlier in file order has the same id; ``duplicate`` may name where the
    copy kept is, as :func:`read_fragment` does). Undecodable or non-string values get their reason
    while reading (:func:`read_fragment`). Too-long text is *not* a reject: it is encoded truncated
    and counted as ``truncated``.
    """
    if id_value is None:
        return "id is null"
    if not id_value.strip():
        return "id is empty"
    if text is None:
        return "text is null"
    if not text.strip():
        return "text is empty or whitespace-only"
    if isinstance(duplicate, str) and duplicate:
        return f"duplicate id (the copy kept is {duplicate})"
    if duplicate:
        return "duplicate id (an earlier row has the same id)"
    return ""


def _valid_mask(rows: dict[str, np.ndarray]) -> np.ndarray:
    """True for the rows of a read fragment that pass :func:`row_reason` (and were decodable)."""
    return np.array([not (r or row_reason(i, t, d)) for r, i, t, d in
                     zip(rows[schema.REJECT_REASON], rows[schema.ID], rows[schema.TEXT], rows[schema.DUPLICATE])],
                    dtype=bool)


class ValidRows(dict):
    """Columns of valid rows (the row contract), plus ``valid_share``: the share of the rows read
    that were valid (1.0 when nothing was read)."""

    valid_share: float = 1.0


def read_valid_rows(corpus_plan: CorpusPlan, corpus_cfg: CorpusConfig, n: int | None, *,
                    seed: int | None = None) -> ValidRows:
    """Valid rows of the corpus, read on the driver (Parquet only, no model).

    ``seed=None``: the first ``n`` valid rows in file order (every valid row when ``n`` is None),
    reading fragments only until there are enough. With a seed: a uniform random sample of ``n``
    valid rows, reproducible for the seed; a small corpus (up to ``10 * n`` rows) is read whole,
    a larger one from random row groups holding about ``4 * n`` rows. Returns an empty mapping
    when the corpus has no fragments.
    """
    if seed is None:
        return _first_valid_rows(corpus_plan, corpus_cfg, n)
    return _sampled_valid_rows(corpus_plan, corpus_cfg, n, seed)


def _valid_parts(fragments: list[Fragment], corpus_cfg: CorpusConfig, n: int | None
                 ) -> tuple[list[dict[str, np.ndarray]], int]:
    """The valid rows of each fragment read (stopping once ``n`` are in hand) and the rows read."""
    parts, have, read = [], 0, 0
    for frag in fragments:
        rows = read_fragment(frag, corpus_cfg)
        read += len(rows[schema.ID])
        ok = _valid_mask(rows)
        parts.append({k: v[ok] for k, v in rows.items()})
        have += int(ok.sum())
        if n is not None and have >= n:
            break
    return parts, read


def _as_valid_rows(columns: dict[str, np.ndarray], valid: int, read: int) -> ValidRows:
    out = ValidRows(columns)
    out.valid_share = valid / read if read else 1.0
    return out


def _first_valid_rows(corpus_plan: CorpusPlan, corpus_cfg: CorpusConfig, n: int | None) -> ValidRows:
    parts, read = _valid_parts(corpus_plan.fragments, corpus_cfg, n)
    if not parts:
        return ValidRows()
    valid = sum(len(p[schema.ID]) for p in parts)
    return _as_valid_rows({k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}, valid, read)


def _sampled_valid_rows(corpus_plan: CorpusPlan, corpus_cfg: CorpusConfig, n: int | None, seed: int) -> ValidRows:
    rng = random.Random(seed)
    frags = list(corpus_plan.fragments)
    if n is not None and sum(f.num_rows for f in frags) > 10 * n:
        rng.shuffle(frags)
        picked, have = [], 0
        for f in frags:
            picked.append(f)
            have += f.num_rows
            if have >= 4 * n:
                break
        frags = picked
    parts, read = _valid_parts(frags, corpus_cfg, None)
    if not parts:
        return ValidRows()
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    valid = len(rows[schema.ID])
    if n is not None and valid > n:
        idx = np.array(sorted(rng.sample(range(valid), n)))
        rows = {k: v[idx] for k, v in rows.items()}
    return _as_valid_rows(rows, valid, read)
