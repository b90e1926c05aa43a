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
    assert row_reason("a", "ok", "f.parquet row 3") == "duplicate id (the copy kept is f.parquet row 3)"
    assert row_reason("a", "ok", "") == ""
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


def test_non_string_non_integer_ids_are_rejected(tmp_path):
    path = write_parquet(tmp_path / "i.parquet", [{"id": 1.5, "text": "x"}])
    cfg = CorpusConfig(path=str(path))
    b = read_fragment(plan_corpus(cfg).fragments[0], cfg)
    assert b[schema.REJECT_REASON][0] == "id is not a string (double)"


@pytest.mark.parametrize("int_type", [pa.int64(), pa.int32(), pa.uint8(), pa.uint64()])
def test_integer_ids_are_their_decimal_strings(tmp_path, int_type):
    big = 2 ** 64 - 1 if int_type == pa.uint64() else 200
    path = write_parquet(tmp_path / "i.parquet", pa.table({"id": pa.array([7, None, big], int_type),
                                                           "text": ["x", "y", "z"]}))
    cfg = CorpusConfig(path=str(path))
    b = read_fragment(plan_corpus(cfg).fragments[0], cfg)
    assert list(b[schema.ID]) == ["7", None, str(big)]
    assert list(b[schema.REJECT_REASON]) == ["", "", ""]
    assert row_reason(b[schema.ID][1], "y", "") == "id is null"


def test_integer_and_string_ids_collide_across_files(tmp_path):
    write_parquet(tmp_path / "a.parquet", pa.table({"id": pa.array([5, 7], pa.int64()), "text": ["five", "seven"]}))
    write_parquet(tmp_path / "b.parquet", [{"id": "7", "text": "seven again"}, {"id": "8", "text": "eight"}])
    cfg = CorpusConfig(path=str(tmp_path))
    p = plan_corpus(cfg)
    b = read_fragment(p.fragments[1], cfg)
    assert list(b[schema.DUPLICATE]) == [f"{tmp_path / 'a.parquet'} row 1", ""]
    out = Validate(str(tmp_path / "rej"), Storage())(b)
    assert list(out[schema.ID]) == ["8"]
    rej = pq.read_table(next((tmp_path / "rej").glob("*.parquet"))).to_pylist()
    assert rej == [{"id": "7", "file": str(tmp_path / "b.parquet"), "row": 0,
                    "reason": f"duplicate id (the copy kept is {tmp_path / 'a.parquet'} row 1)"}]


def _invalid_utf8(values: list[bytes], large: bool = False) -> pa.Array:
    """A string-typed array holding bytes that are not UTF-8 (what a writer that skips validation leaves)."""
    return pa.array(values, pa.large_binary() if large else pa.binary()).view(
        pa.large_string() if large else pa.string())


@pytest.mark.parametrize("large", [False, True])
def test_invalid_utf8_in_string_columns_is_a_row_reject(tmp_path, large):
    table = pa.table({
        "id": _invalid_utf8([b"a", b"b", b"c\xff", b"d"], large),
        "text": _invalid_utf8([b"fine", b"lone surrogate \xed\xa0\x80 here", b"ok", b"ok"], large),
        "lang": _invalid_utf8([b"en", b"en", b"en", b"\xc3("], large),
        "tags": pa.array([["x"], ["y"], ["z"], ["w"]]),
    })
    path = write_parquet(tmp_path / "u.parquet", table)
    cfg = CorpusConfig(path=str(path))
    p = plan_corpus(cfg)  # reads the id column for duplicates: must not fail either
    b = read_fragment(p.fragments[0], cfg)
    assert list(b[schema.ID]) == ["a", "b", None, "d"]
    assert list(b[schema.REJECT_REASON]) == ["", "text is not valid UTF-8 (byte 15)", "id is not valid UTF-8 (byte 1)",
                                             "column 'lang' is not valid UTF-8 (byte 0)"]
    assert b[schema.TEXT][0] == "fine" and b[schema.METADATA][0] == '{"lang": "en", "tags": ["x"]}'
    out = Validate(None, Storage())(b)
    assert list(out[schema.ID]) == ["a"]


def test_invalid_utf8_nested_in_a_metadata_column(tmp_path):
    inner = _invalid_utf8([b"ok", b"\xff"])
    tags = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), inner)
    path = write_parquet(tmp_path / "n.parquet", pa.table({"id": ["a", "b"], "text": ["x", "y"], "tags": tags}))
    cfg = CorpusConfig(path=str(path))
    b = read_fragment(plan_corpus(cfg).fragments[0], cfg)
    assert list(b[schema.REJECT_REASON]) == ["", "column 'tags' is not valid UTF-8 (byte 0)"]


def test_dictionary_encoded_string_ids(tmp_path):
    ids = pa.array(["a", "b", "a"]).dictionary_encode()
    path = write_parquet(tmp_path / "d.parquet", pa.table({"id": ids, "text": ["x", "y", "z"]}))
    cfg = CorpusConfig(path=str(path))
    p = plan_corpus(cfg)
    b = read_fragment(p.fragments[0], cfg)
    assert list(b[schema.ID]) == ["a", "b", "a"] and b[schema.DUPLICATE][2] == f"{path} row 0"


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
