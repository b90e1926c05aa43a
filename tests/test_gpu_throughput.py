"""The GPU throughput benchmark in its CPU-tiny mode: it runs end to end (Ray path included when
ray is importable) and writes sane JSON. No timed assertions."""

from __future__ import annotations

import importlib.util
import json

import pytest

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture
def ray_if_available(request):
    if HAS_RAY:
        request.getfixturevalue("ray_local")


def test_cpu_tiny_mode_writes_sane_results(tmp_path, ray_if_available, capsys):
    from benchmarks.gpu_throughput import main

    out = tmp_path / "gpu_throughput_cpu_tiny.json"
    main(["--cpu-tiny", "--chunks", "200", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| model | stage |" in printed and "sentence_transformers" in printed

    data = json.loads(out.read_text())
    assert data["benchmark"] == "gpu_throughput_cpu_tiny" and data["mode"] == "cpu-tiny"
    assert data["device"] == "cpu" and data["ceiling_tflops"] is None and data["ray"] == HAS_RAY
    (m,) = data["models"]
    assert m["model"] == "tiny" and m["weights"] == "random" and "random" in data["note"]
    assert m["layers"] == 2 and m["hidden"] == 64 and 0 < m["non_embedding_params"] < m["params"]
    assert m["dtype"] == "float32" and m["backend"] == "torch" and m["attention"] in ("sdpa", "default")
    assert 2 * m["non_embedding_params"] < m["flops_per_token"] < 4 * m["non_embedding_params"]

    st = m["stages"]
    expected = {"tokenize", "encode", "postprocess", "encode_actor", "pipeline_inprocess", "sentence_transformers"}
    assert expected <= set(st)
    assert ("pipeline_ray" in st) == HAS_RAY
    tokens = st["tokenize"]["tokens"]
    assert 200 * 20 < tokens < 200 * 33  # 24-32 tokens per chunk
    for name, s in st.items():
        assert s["chunks_per_s"] > 0 and s["tokens_per_s"] > 0 and s["seconds"] > 0, name
        assert s["chunks"] % 200 == 0 and s["tokens"] % tokens == 0, name
    enc = st["encode"]
    assert 0 <= enc["padding_share"] < 0.5 and enc["tflops"] > 0
    assert enc["pct_ceiling"] is None and enc["gpu_util"] is None
    assert st["postprocess"]["dim"] == 32 and st["postprocess"]["bytes_per_chunk"] == 32
    for name in ("encode", "encode_actor", "pipeline_inprocess"):
        assert st[name]["vs_st"] > 0
    if HAS_RAY:
        ray_st = st["pipeline_ray"]
        assert ray_st["chunks"] == 200 and ray_st["device"] == "cpu" and ray_st["workers"] >= 1
        assert 0 <= ray_st["padding_share"] < 0.5
    assert m["cores_to_feed"] > 0
