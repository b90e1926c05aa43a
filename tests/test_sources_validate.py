import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer import schema
from indexer.config import CorpusConfig
from indexer.sources.parquet import SourceError, list_files, plan_corpus, read_fragment, row_reason
from indexer.stages.validate import Validate
from indexer.storage import Storage
from tests.conftest import write_parquet


def test_row_reason_rules():
    assert row_reason(None, "t", False) == "id is null"
    assert row_reason("  ", "t", False) == "id is empty"
    assert row_reason("a", None, False) == "text is null"
    assert row_reason("a", " \n\t", False) == "text is empty or whitespace-only"
    assert row_reason("a", "ok", True).startswith("duplicate id")
    assert row_reason("a", "ok", False) == ""


def test_list_files_dir_glob_and_missing(tmp_path):
    write_parquet(tmp_path / "a.parquet", [{"id": "1", "text": "x"}])
    write_parquet(tmp_path / "sub" / "b.parquet", [{"id": "2", "text": "y"}])
    (tmp_path / "_SUCCESS").write_text("")
    assert [p.rsplit("/", 1)[1] for p in list_files(CorpusConfig(path=str(tmp_path)))] == ["a.parquet", "b.parquet"]
    assert len(list_files(CorpusConfig(path=str(tmp_path / "*.parquet")))) == 1
    with pytest.raises(SourceError, match="not found"):
        list_files(CorpusConfig(path=str(tmp_path / "nope")))


def test_plan_rejects_bad_files_and_finds_duplicates(tmp_path):
    write_parquet(tmp_path / "1.parquet", [{"id": f"d{i}", "text": f"t{i}"} for i in range(5)], row_group_size=2)
    write_parquet(tmp_path / "2.parquet", [{"id": "d3", "text": "again"}, {"id": "new", "text": "x"}])
    write_parquet(tmp_path / "3.parquet", [{"id": "z", "body": "no text column"}])
    (tmp_path / "4.parquet").write_bytes(b"not parquet at all")
    p = plan_corpus(CorpusConfig(path=str(tmp_path)))
    assert p.total_rows == 5 + 2 + 1 + 1
    assert [f.num_rows for f in p.fragments] == [2, 2, 1, 2]
    assert [f.row_offset for f in p.fragments[:3]] == [0, 2, 4]
    dups = {f.file.rsplit("/", 1)[1]: f.duplicate_rows for f in p.fragments if f.duplicate_rows}
    assert dups == {"2.parquet": [0]}
    reasons = {b.file.rsplit("/", 1)[1]: b.reason for b in p.bad_files}
    assert "missing column" in reasons["3.parquet"] and "text" in reasons["3.parquet"]
    assert reasons["4.parquet"].startswith("unreadable Parquet file")


def test_read_fragment_types_metadata_and_utf8(tmp_path):
    table = pa.table({
        "id": pa.array(["a", "b", None, "d"]),
        "text": pa.array([b"hello", b"\xff\xfe bad", b"x", b"ok"], pa.binary()),
        "title": ["T", None, "T3", "T4"],
        "lang": ["en", "en", "it", "zh"],
        "n": [1, 2, 3, 4],
    })
    path = write_parquet(tmp_path / "c.parquet", table)
    cfg = CorpusConfig(path=str(path), title_column="title")
    b = read_fragment(plan_corpus(cfg).fragments[0], cfg)
    assert list(b[schema.TEXT][[0, 3]]) == ["hello", "ok"]
    assert b[schema.REJECT_REASON][1].startswith("text is not valid UTF-8")
    assert b[schema.TITLE][1] == ""
    assert b[schema.METADATA][0] == '{"lang": "en", "n": 1}'
    assert list(b[schema.ROW]) == [0, 1, 2, 3]


def test_non_string_ids_are_rejected(tmp_path):
    path = write_parquet(tmp_path / "i.parquet", [{"id": 1, "text": "x"}])
    cfg = CorpusConfig(path=str(path))
    b = read_fragment(plan_corpus(cfg).fragments[0], cfg)
    assert b[schema.REJECT_REASON][0] == "id is not a string (int64)"


def test_validate_splits_and_writes_rejects(tmp_path):
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": "   "}, {"id": None, "text": "x"},
            {"id": "a", "text": "dup"}, {"id": "c", "text": "also fine"}]
    path = write_parquet(tmp_path / "v.parquet", rows)
    cfg = CorpusConfig(path=str(path))
    p = plan_corpus(cfg)
    batch = read_fragment(p.fragments[0], cfg)
    out = Validate(str(tmp_path / "rej"), Storage())(batch)
    assert list(out[schema.ID]) == ["a", "c"]
    assert len(out[schema.HASH][0]) == 32 and out[schema.POINT_ID][0] != out[schema.POINT_ID][1]
    rej = pq.read_table(next((tmp_path / "rej").glob("*.parquet"))).to_pylist()
    assert [(r["id"], r["row"], r["reason"].split(" (")[0]) for r in rej] == [
        ("b", 1, "text is empty or whitespace-only"), (None, 2, "id is null"), ("a", 3, "duplicate id")]
    assert all(r["file"] == str(path) for r in rej)
