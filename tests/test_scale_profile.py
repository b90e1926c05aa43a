"""The profile summary of ``benchmarks/scale.py --profile``: py-spy raw stacks -> CPU seconds per process."""

from __future__ import annotations

import json

from benchmarks.scale import PROFILE_HZ, summarise_profile, summarise_stacks

TOKENIZE = ("<module> (ray/_private/workers/default_worker.py:323);Tokenize.__call__ (indexer/stages/tokenize.py:40);"
            "tokenize_texts (indexer/encoders/tokens.py:{line});encode_batch (tokenizers/__init__.py:88)")
READ = "<module> (ray/_private/workers/default_worker.py:323);read_fragment (indexer/sources/parquet.py:12);read (pyarrow/parquet.py:9)"
IDLE = "<module> (ray/_private/workers/default_worker.py:323);Worker.main_loop (ray/_private/worker.py:1069)"


def test_stacks_add_up_per_function_and_name_the_innermost_indexer_frame():
    lines = [f"{TOKENIZE.format(line=50)} 30", f"{TOKENIZE.format(line=61)} 10", f"{READ} 20", f"{IDLE} 40",
             "garbage line", ""]
    s = summarise_stacks(lines)
    assert s["samples"] == 100 and s["seconds"] == 100 / PROFILE_HZ
    own = dict(map(tuple, s["own"]))  # the two lines of tokenize_texts are one function
    assert own == {"tokenize_texts (indexer/encoders/tokens.py)": 0.4, "(not in indexer)": 0.4,
                   "read_fragment (indexer/sources/parquet.py)": 0.2}
    leaf = dict(map(tuple, s["leaf"]))
    assert leaf["encode_batch (tokenizers/__init__.py)"] == 0.4 and leaf["Worker.main_loop (ray/_private/worker.py)"] == 0.4
    assert summarise_stacks([f"{READ} 1"] * 9, top=1)["own"] == [["read_fragment (indexer/sources/parquet.py)", 1.0]]


def test_profile_folder_rows_carry_roles_busiest_first(tmp_path):
    (tmp_path / "11.txt").write_text(f"{READ} 3\n")
    (tmp_path / "12.txt").write_text(f"{TOKENIZE.format(line=1)} 7\n")
    (tmp_path / "13.txt").write_text("")  # a process that never ran Python code while sampled
    (tmp_path / "roles.json").write_text(json.dumps({"11": "ray::IDLE", "12": "ray::MapWorker(MapBatches(Encode))"}))
    rows = summarise_profile(tmp_path)
    assert [(r["pid"], r["role"], r["samples"]) for r in rows] == [(12, "ray::MapWorker(MapBatches(Encode))", 7),
                                                                   (11, "ray::IDLE", 3)]
    assert json.loads((tmp_path / "summary.json").read_text()) == rows


def test_pss_parts_split_a_process_and_add_up_per_name():
    import os

    from benchmarks.scale import PSS_PARTS, parts_table, pss_parts

    parts = pss_parts(os.getpid())
    assert parts["Pss"] > 0 and set(PSS_PARTS) <= parts.keys()
    # the kernel's Pss is its three parts, each rounded down to a kB on its own
    assert 0 <= parts["Pss"] - sum(parts[k] for k in PSS_PARTS) <= len(PSS_PARTS) * 1024
    assert pss_parts(-1) == {}
    mib = 2 ** 20
    table = parts_table({"ray::Write": {"Pss_Anon": 3 * mib, "Pss_File": mib, "Pss_Shmem": 8 * mib},
                         "raylet": {"Pss_Anon": mib, "Pss_File": 0, "Pss_Shmem": 0}})
    assert list(table) == ["total", "ray::Write", "raylet"]
    assert table["total"] == {"anon": 4.0, "file": 1.0, "shmem": 8.0}
    assert table["ray::Write"] == {"anon": 3.0, "file": 1.0, "shmem": 8.0}
