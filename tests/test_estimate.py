"""The dry-run estimate: it writes nothing, its token counts match an exact count, incremental runs
are priced by their delta, and throughput comes from a measured profile or a stated derivation."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.config import load_config
from indexer.estimate import bench_throughput, estimate, save_profile
from indexer.estimate.cost import GPU_MFU, PEAK_TFLOPS, ModelShape, effective_seq, model_shape, throughput
from tests.conftest import ROOT, SHARED_DATA, write_parquet


def docs(n: int) -> list[dict]:
    from indexer.sample_corpus import stdlib_chunks

    return [{"id": c["id"], "title": c["title"], "text": c["text"][:300], "module": c["module"]}
            for c in itertools.islice(stdlib_chunks(), n)]


def cfg_for(tmp: Path, *extra: str):
    return load_config(ROOT / "configs" / "local.yaml",
                       [f"corpus.path={tmp / 'corpus'}", "corpus.sample=false", f"index.dir={tmp / 'index'}",
                        f"cost.profile_path={tmp / 'profiles.json'}", "encode.block_rows=50", "dense.dim=128",
                        *extra])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------
# Throughput model (pure)
# ------------------------------------------------------------------------------------------

def test_flops_per_token_by_hand():
    minilm = ModelShape(layers=6, hidden=384, intermediate=1536, source="test")
    # matrix products: 2 * 6 * (4 * 384^2 + 2 * 384 * 1536) = 21,233,664; attention: 4 * 6 * 384 * 256 = 2,359,296
    assert minilm.flops_per_token(256) == 21_233_664 + 2_359_296
    assert effective_seq(np.array([1, 3])) == pytest.approx(10 / 4)
    assert model_shape("packaged:all-MiniLM-L6-v2") == ModelShape(6, 384, 1536, model_shape("packaged:all-MiniLM-L6-v2").source)


def test_gpu_defaults_are_datasheet_peak_times_stated_mfu(tmp_path):
    cfg = cfg_for(tmp_path, "cost.gpu_type=H100")
    tp = throughput(cfg, 256.0)
    fpt = 21_233_664 + 2_359_296
    assert tp["basis"] == "derived"
    assert tp["tokens_per_s"] == pytest.approx(PEAK_TFLOPS["H100"][0] * 1e12 * GPU_MFU / fpt)
    assert "datasheet" in tp["source"] and "assumed MFU" in tp["source"]
    with pytest.raises(KeyError, match="indexer bench"):
        throughput(cfg_for(tmp_path, "cost.gpu_type=TPUv9"), 256.0)


def test_list_prices_fill_in_when_no_price_is_configured(tmp_path):
    from indexer.config import ConfigError
    from indexer.estimate.cost import gpu_hour_price
    from indexer.prices import CPU_VCPU_HOUR, GPU_HOUR_LIST_PRICES

    assert set(PEAK_TFLOPS) <= set(GPU_HOUR_LIST_PRICES)  # every GPU the estimate knows has a price
    for gpu, p in GPU_HOUR_LIST_PRICES.items():
        usd, src = gpu_hour_price(cfg_for(tmp_path, f"cost.gpu_type={gpu}"))
        assert usd == p.usd_per_hour > 0 and p.source in src and "20" in p.source  # dated
    usd, src = gpu_hour_price(cfg_for(tmp_path))
    assert usd == pytest.approx(CPU_VCPU_HOUR.usd_per_hour * (os.cpu_count() or 1)) and "vCPU" in src
    usd, src = gpu_hour_price(cfg_for(tmp_path, "cost.gpu_type=H100", "cost.gpu_hour_usd=1.5",
                                      "cost.gpu_hour_source=our contract, 2026"))
    assert (usd, src) == (1.5, "configured (cost.gpu_hour_usd): our contract, 2026")
    with pytest.raises(ConfigError, match="cost.gpu_hour_usd"):
        gpu_hour_price(cfg_for(tmp_path, "cost.gpu_type=RTX-9090"))


# ------------------------------------------------------------------------------------------
# Dry run
# ------------------------------------------------------------------------------------------

def test_estimate_writes_nothing_and_prints_a_table(tmp_path):
    from typer.testing import CliRunner

    from indexer.cli import app

    write_parquet(tmp_path / "corpus" / "part.parquet", docs(300), row_group_size=100)
    cfg = cfg_for(tmp_path)
    est = estimate(cfg)
    assert not (tmp_path / "index").exists() and not (tmp_path / "profiles.json").exists()
    assert (est["chunks"], est["chunks_to_encode"], est["mode"]) == (300, 300, "full")
    assert est["tokens"] >= est["tokens_encoded"] > 0
    assert est["tokens_method"] == "sample of 300 rows"  # small corpus: every row is the sample
    st = est["storage"]
    assert st["vector_bytes"] == sum(st["vector_breakdown"].values())
    assert st["vector_breakdown"]["dense"] == 300 * 128 * 4
    assert st["text_bytes"] > 0 and 0 < st["vector_ram_bytes"] <= st["vector_disk_bytes"]
    assert set(est["api_comparison_usd"]) == set(cfg.cost.api_usd_per_million_tokens) and est["api_price_source"]
    assert est["wall_hours"] > est["gpu_hours"] / est["workers"]

    args = ["estimate", str(ROOT / "configs" / "local.yaml"), "--set", f"corpus.path={tmp_path / 'corpus'}",
            "--set", "corpus.sample=false", "--set", f"index.dir={tmp_path / 'index'}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "tokens" in res.output and "GPU-hours" in res.output and "hosted API" in res.output
    res = CliRunner().invoke(app, [*args, "--json"])
    out = json.loads(res.stdout)
    assert out["chunks"] == 300
    # configs/local.yaml sets no price: the CPU node's dated list price, never $0
    assert out["cost_usd"] > 0 and out["gpu_hour_usd"] > 0
    assert out["gpu_hour_source"].startswith("list price:") and "c7i" in out["gpu_hour_source"]
    assert not (tmp_path / "index").exists()


@pytest.mark.usefixtures("ray_local")
def test_incremental_estimate_prices_only_the_delta(tmp_path):
    from indexer.run.pipeline import run

    rows = docs(200)
    write_parquet(tmp_path / "corpus" / "part.parquet", rows, row_group_size=50)
    cfg = cfg_for(tmp_path)
    assert run(cfg)["counts"]["indexed"] == 200

    for r in rows[:20]:
        r["text"] += " (revised)"
    write_parquet(tmp_path / "corpus" / "part.parquet", rows, row_group_size=50)
    before = snapshot(tmp_path / "index")

    est = estimate(cfg)
    assert (est["mode"], est["chunks"], est["chunks_to_encode"]) == ("incremental", 200, 20)
    assert {k: est["delta"][k] for k in ("new", "changed", "unchanged", "deleted")} == \
        {"new": 0, "changed": 20, "unchanged": 180, "deleted": 0}
    assert est["tokens_method"] == "all 20 rows to encode"
    exact = estimate(cfg, exact=True)
    assert (exact["chunks_to_encode"], exact["delta"]["changed"], exact["tokens_method"]) == (20, 20, "exact")
    # 20 rows are fewer than the sample: the sampled count is the exact count.
    assert (est["tokens"], est["tokens_encoded"]) == (exact["tokens"], exact["tokens_encoded"])
    assert est["storage"]["chunks"] == 200
    full = estimate(cfg, full=True)
    assert (full["mode"], full["chunks_to_encode"]) == ("full", 200)

    assert snapshot(tmp_path / "index") == before  # nothing under index.dir was written or touched


@pytest.mark.usefixtures("ray_local")
@pytest.mark.skipif(not (SHARED_DATA / "scifact" / "corpus.jsonl").exists(), reason="SciFact not available")
def test_sampled_tokens_within_3_percent_of_exact_on_scifact(tmp_path):
    from benchmarks.common import beir_to_parquet

    corpus = beir_to_parquet("scifact", tmp_path / "corpus")
    cfg = load_config(ROOT / "configs" / "local.yaml", [f"corpus.path={corpus}", "corpus.sample=false",
                                                         f"index.dir={tmp_path / 'index'}"])
    t0 = time.perf_counter()
    sampled = estimate(cfg)
    exact = estimate(cfg, exact=True)
    assert sampled["chunks"] == exact["chunks"] == 5183
    assert sampled["tokens_method"].startswith("sample of 2000")
    for key in ("tokens", "tokens_encoded"):
        assert abs(sampled[key] - exact[key]) / exact[key] < 0.03, (key, sampled[key], exact[key])
    assert time.perf_counter() - t0 < 300


def test_bench_profile_drives_the_estimate(tmp_path):
    write_parquet(tmp_path / "corpus" / "part.parquet", docs(64), row_group_size=64)
    cfg = cfg_for(tmp_path, "encode.batch_tokens=2048")
    prof = bench_throughput(cfg, rows=64, seconds=0.5)
    assert prof["gpu_type"] == "cpu" and prof["tokens_per_s"] > 0 and prof["seq_eff"] > 0
    assert prof["flops_per_s"] == pytest.approx(prof["tokens_per_s"] * prof["flops_per_token"])
    assert prof["passes"] >= 1 and prof["tokens_per_s_mean"] > 0
    from indexer.encoders.openvino import cpu_flags, native_bf16

    assert prof["dense_setting"] == ("openvino/bf16" if native_bf16(cpu_flags()) else "openvino/fp32")
    path = save_profile(cfg, prof)
    assert path == tmp_path / "profiles.json"
    est = estimate(cfg)
    assert est["throughput_basis"] == "measured" and "indexer bench" in est["throughput_source"]
    # Same chunk lengths as measured: the profile's tokens/s comes back unchanged.
    tp = throughput(cfg, prof["seq_eff"])
    assert tp["tokens_per_s"] == pytest.approx(prof["tokens_per_s"], rel=1e-3)  # seq_eff is stored rounded
    assert est["encode_seconds"] == pytest.approx(est["tokens_encoded"] / est["throughput_tokens_per_s"], rel=1e-3)
    # A fast machine: the whole encode takes milliseconds, and the estimate still says how many.
    save_profile(cfg, {**prof, "flops_per_s": prof["flops_per_s"] * 1e4, "tokens_per_s": prof["tokens_per_s"] * 1e4})
    fast = estimate(cfg)
    assert 0 < fast["encode_seconds"] < 0.01
    assert fast["encode_seconds"] == pytest.approx(fast["tokens_encoded"] / fast["throughput_tokens_per_s"], rel=1e-3)
    os.remove(path)
