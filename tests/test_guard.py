"""A scheduled run never shrinks the live index by accident: the deletion guard, files that can't be read,
and config that names no column. Pure guard rules by hand, then one shared index on real Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from indexer.config import ConfigError, CorpusConfig, load_config
from indexer.sources.parquet import plan_corpus
from tests.conftest import ROOT, sample_docs, write_parquet

# ------------------------------------------------------------------------------------------
# The rules (pure)
# ------------------------------------------------------------------------------------------


def test_guard_rules_by_hand():
    from indexer.run.guard import assess, check_deletes

    live = [f"d{i}" for i in range(200)]
    _, c = assess("incremental", live, None, set(live[:40]), set())
    v = check_deletes(c, 0.2)
    assert v.refused and (c.live, c.would_delete) == (200, 160)
    assert "160 of 200 live chunks" in v.message and "--allow-deletes" in v.message
    assert "index.max_delete_fraction" in v.message and "\n" not in v.message
    assert not check_deletes(c, 0.2, allow_deletes=True).refused
    assert not check_deletes(c, 0.8).refused  # 160 is exactly 0.8 of 200: allowed
    _, c = assess("incremental", live, None, set(live[:160]), set())
    assert not check_deletes(c, 0.2).refused  # 40 = 0.2 of 200
    _, c = assess("incremental", live, None, set(live[:159]), set())
    assert check_deletes(c, 0.2).refused  # 41 > 40
    # No valid rows while a version is live, even with a limit of 1.0.
    _, c = assess("incremental", live, None, set(), set())
    v = check_deletes(c, 1.0)
    assert v.refused and "no valid rows" in v.message and "200 of 200" in v.message
    # A full build publishing fewer than (1 - fraction) of the live chunks.
    _, c = assess("full", live, None, set(live[:159]) | {"x"}, set())
    assert (c.publish, c.would_delete) == (160, 41) and check_deletes(c, 0.2).refused
    _, c = assess("full", live, None, set(live[:160]), set())
    assert not check_deletes(c, 0.2).refused
    # A full build over a version with no hash manifest: judged by its size.
    _, c = assess("full", [], None, {"a"}, set(), live_count=10)
    assert (c.live, c.would_delete) == (10, 9) and check_deletes(c, 0.2).refused
    # No live version: nothing to protect.
    _, c = assess("full", [], None, set(), set())
    assert not check_deletes(c, 0.2).refused


def test_unreadable_files_keep_their_chunks():
    from indexer.run.guard import assess

    live = [f"d{i}" for i in range(10)]
    files = {i: ("a" if n < 5 else "b") for n, i in enumerate(live)}
    d, c = assess("incremental", live, files, set(live[:3]), {"b"})
    assert d.delete == {"d3", "d4"} and d.kept_unreadable == set(live[5:])
    assert (c.would_delete, c.kept_unreadable) == (2, 5)
    # Without recorded files nothing missing is deleted while a file is unreadable.
    d, _ = assess("incremental", live, None, set(live[:3]), {"b"})
    assert d.delete == set() and len(d.kept_unreadable) == 7
    # A full build writes a new version: it keeps nothing.
    d, c = assess("full", live, files, set(live[:3]), {"b"})
    assert c.would_delete == 7 and c.kept_unreadable == 0


def test_a_column_in_no_file_is_a_config_error(tmp_path):
    write_parquet(tmp_path / "a.parquet", [{"id": "a", "text": "x", "lang": "en"}])
    write_parquet(tmp_path / "b.parquet", [{"id": "b", "body": "no text column"}])
    (tmp_path / "c.parquet").write_bytes(b"PAR1 truncated")
    plan_corpus(CorpusConfig(path=str(tmp_path), metadata_columns=["lang"]))  # every column is somewhere
    for key, value, col in [("id_column", "doc_id", "doc_id"), ("text_column", "txt", "txt"),
                            ("title_column", "titel", "titel"), ("metadata_columns", ["lang", "lnag"], "lnag")]:
        with pytest.raises(ConfigError) as e:
            plan_corpus(CorpusConfig(path=str(tmp_path), **{key: value}))
        msg = str(e.value)
        assert f"corpus.{key}={col!r}" in msg and "body, id, lang, text" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------
# On real Ray: 200 live chunks in 5 files
# ------------------------------------------------------------------------------------------



def _job(tmp: Path, *extra: str) -> tuple[int, dict]:
    """jobs/index.py in this process (the session's Ray): exit code and the JSON it printed."""
    import contextlib
    import io

    from jobs.index import main

    args = ["--config", str(ROOT / "configs" / "local.yaml"), "--set", f"corpus.path={tmp / 'corpus'}",
            "--set", "corpus.sample=false", "--set", f"index.dir={tmp / 'index'}", "--set", "encode.block_rows=50",
            "--set", "dense.dim=128", *extra]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("{")]
    return code, (json.loads(lines[-1]) if lines else {})


def _cfg(tmp: Path):
    return load_config(ROOT / "configs" / "local.yaml",
                       [f"corpus.path={tmp / 'corpus'}", "corpus.sample=false", f"index.dir={tmp / 'index'}",
                        "dense.dim=128"])


def _records(index: Path) -> dict[str, tuple[int, int]]:
    """Everything a run writes outside the stores' own files: run records, state, versions."""
    return {str(p.relative_to(index)): (p.stat().st_size, p.stat().st_mtime_ns)
            for d in ("runs", "state", "versions") for p in (index / d).rglob("*")}


def _stored(tmp: Path) -> dict[str, int]:
    from indexer.search import Searcher

    s = Searcher(_cfg(tmp))
    try:
        return {"vectors": s.vectors.count(s.collection), "text": s.text.count(s.collection),
                "collection": s.collection}
    finally:
        s.close()


def _write_files(corpus: Path, parts: list[list[dict]]) -> None:
    for p in corpus.glob("*.parquet"):
        p.unlink()
    for n, rows in enumerate(parts):
        write_parquet(corpus / f"part-{n}.parquet", rows if rows else pa.table(
            {"id": pa.array([], pa.string()), "title": pa.array([], pa.string()), "text": pa.array([], pa.string()),
             "module": pa.array([], pa.string())}))


@pytest.mark.usefixtures("ray_local")
def test_shrunk_emptied_or_broken_corpus_never_shrinks_the_live_index(tmp_path):
    from typer.testing import CliRunner

    from indexer.cli import app

    docs = [dict(d, text=d["text"][:160]) for d in sample_docs(200)]
    files = [docs[i * 40:(i + 1) * 40] for i in range(5)]
    corpus = tmp_path / "corpus"
    _write_files(corpus, files)
    code, m = _job(tmp_path)
    assert code == 0 and m["counts"]["indexed"] == 200 and m["guard"]["live"] == 0

    # A truncated file: its 40 live chunks stay, nothing is deleted, exit 4.
    whole = (corpus / "part-2.parquet").read_bytes()
    (corpus / "part-2.parquet").write_bytes(whole[: len(whole) // 2])
    code, m = _job(tmp_path)
    c = m["counts"]
    assert code == 4 and m["status"] == "succeeded"
    assert (c["deleted"], c["kept_unreadable"], c["indexed"], c["vector_store"], c["text_store"]) == (0, 40, 200, 200, 200)
    assert c["input"] + c["kept_unreadable"] == c["indexed"] + c["rejected"]
    [u] = m["unreadable_files"]
    assert u["file"].endswith("part-2.parquet") and u["kept_rows"] == 40 and "unreadable" in u["reason"]
    # The file is back: every chunk is unchanged (the hash manifest kept its rows).
    (corpus / "part-2.parquet").write_bytes(whole)
    code, m = _job(tmp_path)
    assert code == 0 and (m["counts"]["unchanged"], m["counts"]["encoded"], m["counts"]["deleted"]) == (200, 0, 0)

    # Shrunk to 1 of 5 files: refused before anything is written, exit 3, one line on stderr.
    before_records, before_stored = _records(tmp_path / "index"), _stored(tmp_path)
    _write_files(corpus, files[:1])
    args = ["run", str(ROOT / "configs" / "local.yaml"), "--set", f"corpus.path={corpus}", "--set",
            "corpus.sample=false", "--set", f"index.dir={tmp_path / 'index'}", "--set", "dense.dim=128"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 3, res.output
    refusal = [ln for ln in res.output.splitlines() if ln.startswith("refused:")]
    assert len(refusal) == 1 and "160 of 200 live chunks" in refusal[0] and "--allow-deletes" in refusal[0]
    assert _records(tmp_path / "index") == before_records and _stored(tmp_path) == before_stored

    # Five 0-row files: refused too.
    _write_files(corpus, [[] for _ in range(5)])
    code, out = _job(tmp_path)
    assert code == 3 and out["status"] == "refused" and "no valid rows" in out["reason"]
    assert _records(tmp_path / "index") == before_records and _stored(tmp_path) == before_stored

    # The estimate shows the same numbers and warning.
    from indexer.estimate import estimate

    _write_files(corpus, files[:1])
    g = estimate(_cfg(tmp_path))["guard"]
    assert (g["refused"], g["live"], g["would_delete"]) == (True, 200, 160) and "160 of 200" in g["message"]

    # --allow-deletes deletes exactly the removed chunks.
    code, m = _job(tmp_path, "--allow-deletes")
    c = m["counts"]
    assert code == 0 and (c["deleted"], c["unchanged"], c["indexed"]) == (160, 40, 40)
    assert m["guard"]["allow_deletes"] and "160 of 200" in m["guard"]["message"]
    from indexer.search import Searcher

    s = Searcher(_cfg(tmp_path))
    try:
        assert set(s.text.retrieve(s.collection, [d["id"] for d in docs])) == {d["id"] for d in files[0]}
        assert s.vectors.count(s.collection) == 40
    finally:
        s.close()


@pytest.mark.usefixtures("ray_local")
def test_column_typo_stops_before_any_work_and_empty_builds_never_publish(tmp_path):
    docs = [dict(d, text=d["text"][:160]) for d in sample_docs(20)]
    write_parquet(tmp_path / "corpus" / "a.parquet", docs)
    code, _ = _job(tmp_path, "--set", "corpus.id_column=doc_id")
    assert code == 2 and not (tmp_path / "index").exists()

    # Every row rejected (no text) on a first build: the gate fails and nothing is published.
    write_parquet(tmp_path / "corpus" / "a.parquet", [dict(d, text=" ") for d in docs])
    code, m = _job(tmp_path)
    assert code == 1 and m["status"] == "failed" and not m["alias_moved"]
    assert m["counts"]["indexed"] == 0 and any(f.startswith("nonempty:") for f in m["failures"])
