"""User mistakes end with exit code 2 and one line on stderr that says what is wrong, never a
traceback. Each case runs the CLI in-process and fails before Ray starts or any index is opened."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from indexer.cli import app
from tests.conftest import ROOT, sample_docs, write_parquet

CONFIG = str(ROOT / "configs" / "local.yaml")


def _common(tmp: Path, corpus: Path) -> list[str]:
    return ["--set", f"corpus.path={corpus}", "--set", "corpus.sample=false", "--set", f"index.dir={tmp / 'index'}"]


def _missing_corpus(tmp: Path) -> tuple[list[str], str]:
    return ["run", CONFIG, *_common(tmp, tmp / "nowhere")], "corpus.path not found"


def _no_parquet(tmp: Path) -> tuple[list[str], str]:
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "notes.txt").write_text("not a corpus")
    return ["run", CONFIG, *_common(tmp, tmp / "corpus")], "no Parquet files"


def _dim_too_big(tmp: Path) -> tuple[list[str], str]:
    write_parquet(tmp / "corpus" / "a.parquet", sample_docs(5, 80))
    return ["run", CONFIG, *_common(tmp, tmp / "corpus"), "--set", "dense.dim=1024"], "larger than the model's dimension"


def _eval_files(tmp: Path, queries: str, qrels: str) -> list[str]:
    (tmp / "queries.jsonl").write_text(queries)
    (tmp / "qrels.tsv").write_text(qrels)
    return ["eval", CONFIG, "--queries", str(tmp / "queries.jsonl"), "--qrels", str(tmp / "qrels.tsv"),
            *_common(tmp, tmp / "corpus")]


GOOD_QUERIES = '{"_id": "q1", "text": "open a file"}\n'
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _bad_queries_line(tmp: Path) -> tuple[list[str], str]:
    return _eval_files(tmp, GOOD_QUERIES + '["q2", "a list"]\n', GOOD_QRELS), "queries.jsonl:2:"


def _bad_queries_json(tmp: Path) -> tuple[list[str], str]:
    return _eval_files(tmp, GOOD_QUERIES + "{not json\n", GOOD_QRELS), "queries.jsonl:2:"


def _bad_qrels_score(tmp: Path) -> tuple[list[str], str]:
    return _eval_files(tmp, GOOD_QUERIES, GOOD_QRELS + "q1\td2\trelevant\n"), "qrels.tsv:3:"


def _bad_qrels_columns(tmp: Path) -> tuple[list[str], str]:
    return _eval_files(tmp, GOOD_QUERIES, GOOD_QRELS + "q1 d2 1\n"), "qrels.tsv:3:"


def _blank_query(tmp: Path) -> tuple[list[str], str]:
    return ["search", CONFIG, "   ", *_common(tmp, tmp / "corpus")], "query is blank"


@pytest.mark.parametrize("case", [_missing_corpus, _no_parquet, _dim_too_big, _bad_queries_line, _bad_queries_json,
                                  _bad_qrels_score, _bad_qrels_columns, _blank_query],
                         ids=lambda f: f.__name__.strip("_"))
def test_user_mistake_is_one_line_and_exit_2(tmp_path, case):
    args, expected = case(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, res.stderr
    assert expected in lines[0], lines[0]
    assert res.stdout == ""
