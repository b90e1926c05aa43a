"""The bundled sample corpus: real English text built on the fly from the Python standard
library's documentation strings (one chunk per documented function, class or method).

Written as two Parquet files: ``part-0-stdlib.parquet`` (the chunks) and ``part-1-edge-cases.parquet``, a few rows
that exercise validation (an empty text, a whitespace-only text, a null id, a repeated id), so a
first run shows the rejects output at work.
"""

from __future__ import annotations

import importlib
import json
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MODULES = (
    "json", "os", "os.path", "re", "collections", "itertools", "functools", "pathlib", "datetime",
    "statistics", "textwrap", "string", "heapq", "bisect", "csv", "argparse", "logging", "shutil",
    "subprocess", "random", "math", "hashlib", "base64", "zipfile", "tarfile", "gzip", "sqlite3",
    "urllib.parse", "http.client", "email.message", "uuid", "decimal", "fractions", "enum",
    "dataclasses", "typing", "contextlib", "tempfile", "glob", "fnmatch", "pickle", "copy", "pprint",
    "threading", "queue", "asyncio", "socket", "selectors", "time", "calendar", "locale", "gettext",
    "unicodedata", "difflib", "operator", "weakref", "abc", "inspect", "traceback", "warnings",
    "configparser", "io", "struct", "array", "secrets", "hmac", "zlib", "xml.etree.ElementTree",
    "html", "html.parser", "mimetypes", "ipaddress", "shlex", "platform", "sys", "timeit", "cProfile",
)


def stdlib_chunks(max_chars: int = 1500):
    """Chunk dicts (id, title, text, module, kind, part) of the standard library's docstrings, in a
    fixed order; docstrings longer than ``max_chars`` are split into numbered parts."""
    seen = set()
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        members = [(mod_name, mod)]
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", mod_name) not in (mod_name, None) and not mod_name.startswith("os"):
                continue
            members.append((f"{mod_name}.{name}", obj))
            if inspect.isclass(obj):
                for mname, m in sorted(vars(obj).items()):
                    if not mname.startswith("_") and (inspect.isfunction(m) or inspect.ismethoddescriptor(m)):
                        members.append((f"{mod_name}.{name}.{mname}", m))
        for qual, obj in members:
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 40 or qual in seen:
                continue
            seen.add(qual)
            kind = "module" if inspect.ismodule(obj) else "class" if inspect.isclass(obj) else "function"
            parts = textwrap.wrap(doc, max_chars, replace_whitespace=False, drop_whitespace=False) \
                if len(doc) > max_chars else [doc]
            for i, part in enumerate(parts):
                cid = qual if i == 0 else f"{qual}#{i}"
                yield {"id": cid, "title": qual, "text": part.strip(), "module": mod_name, "kind": kind, "part": i}


def fresh_stdlib_chunks() -> list[dict]:
    """:func:`stdlib_chunks` as a fresh interpreter sees them: libraries imported in this process
    (Ray replaces ``sys.excepthook``, others patch ``inspect``) must not change the sample."""
    code = "import json, sys; from indexer.sample_corpus import stdlib_chunks; json.dump(list(stdlib_chunks()), sys.stdout)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    return json.loads(out.stdout)


def build_sample(out_dir: str | Path, limit: int | None = None) -> dict[str, int]:
    """Write the sample corpus under ``out_dir``; returns row counts per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = fresh_stdlib_chunks()
    if limit:
        rows = rows[:limit]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "part-0-stdlib.parquet", row_group_size=512)
    edge = pa.table({
        "id": ["sample.empty", "sample.blank", None, rows[0]["id"], "sample.ok"],
        "title": ["empty text", "blank text", "null id", "repeated id", "A valid extra row"],
        "text": ["", "   \n\t ", "a row without an id", "same id as the first stdlib chunk",
                 "The bundled sample corpus is built from Python standard library docstrings."],
        "module": ["sample"] * 5, "kind": ["edge"] * 5, "part": [0] * 5,
    })
    pq.write_table(edge, out / "part-1-edge-cases.parquet")
    return {"part-0-stdlib.parquet": table.num_rows, "part-1-edge-cases.parquet": edge.num_rows}
