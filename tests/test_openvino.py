"""OpenVINO CPU backend: vectors against torch fp32 on a tiny random model, the export cache, the
per-node ``auto`` choice, config checks, and the run manifest's record of the setting."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.config import ConfigError, load_config
from indexer.encoders.dense import DenseModel
from indexer.encoders.openvino import DenseSetting, OpenVINOError, choose_setting, cpu_flags, native_bf16
from indexer.encoders.tokens import tokenize_texts
from tests.conftest import sample_docs, write_parquet
from tests.test_compare import build_tiny_dense_model

TEXTS = ["parse a JSON document into Python objects", "sqlite3 cursor", "x",
         "The subprocess module allows you to spawn new processes, connect to their pipes. " * 4,
         "Return a new array of given shape and type, filled with zeros. " * 12]
CALIBRATION = [d["text"] for d in sample_docs(40, 300)]
BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
PLAIN = frozenset({"fpu", "avx2"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    return build_tiny_dense_model(tmp / "tiny64", 64, 3), tmp / "cache"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _embed(model: DenseModel, ref: str) -> np.ndarray:
    ids, _, _, _ = tokenize_texts(TEXTS, ref, model.info.max_seq_length)
    return model.embed_ids(ids, 256).numpy()  # several padded batches of different widths


@pytest.mark.parametrize("precision,mean_bound,min_bound", [("fp32", 0.99999, 0.99999), ("bf16", 0.999, 0.998),
                                                            ("int8", 0.99, 0.98)])
def test_openvino_vectors_close_to_torch_fp32(tiny, precision, mean_bound, min_bound):
    ref, cache = tiny
    torch_vecs = _embed(DenseModel(ref, device="cpu", backend="torch"), ref)
    ov = DenseModel(ref, device="cpu", backend="openvino", precision=precision, cache_dir=str(cache),
                    calibration_texts=CALIBRATION, torch_threads=1)
    assert ov.setting == DenseSetting("openvino", precision) and ov.model is None
    import openvino

    hint = ov.ov.compiled.get_property("INFERENCE_PRECISION_HINT")
    assert hint == (openvino.Type.bf16 if precision == "bf16" else openvino.Type.f32)
    assert int(ov.ov.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    vecs = _embed(ov, ref)
    assert vecs.shape == torch_vecs.shape
    cos = _cosines(vecs, torch_vecs)
    assert cos.mean() >= mean_bound and cos.min() >= min_bound, cos
    if precision != "fp32":  # really a different computation, not the fp32 graph again
        assert not np.allclose(vecs, torch_vecs, atol=1e-6)


def test_int8_export_is_quantized_and_needs_calibration(tiny, tmp_path):
    ref, cache = tiny
    DenseModel(ref, device="cpu", backend="openvino", precision="int8", cache_dir=str(cache),
               calibration_texts=CALIBRATION)
    xml = next(p for p in cache.glob("*/model.xml") if '"int8"' in (p.parent / "export.json").read_text())
    assert "FakeQuantize" in xml.read_text() or "FakeConvert" in xml.read_text()
    with pytest.raises(OpenVINOError, match="calibration texts"):
        DenseModel(ref, device="cpu", backend="openvino", precision="int8", cache_dir=str(tmp_path / "empty"))


def test_export_cached_and_reused(tiny, tmp_path):
    ref, _ = tiny
    cache = tmp_path / "c"
    first = DenseModel(ref, device="cpu", backend="openvino", precision="fp32", cache_dir=str(cache))
    assert first.exported
    xml = first.export_path
    stamp = xml.stat().st_mtime_ns
    second = DenseModel(ref, device="cpu", backend="openvino", precision="fp32", cache_dir=str(cache))
    assert not second.exported and second.export_path == xml and xml.stat().st_mtime_ns == stamp
    other = DenseModel(ref, device="cpu", backend="openvino", precision="bf16", cache_dir=str(cache))
    assert other.exported and other.export_path.parent != xml.parent
    # entries only (no temporary folder left behind)
    assert sorted(p.name for p in cache.iterdir()) == sorted([xml.parent.name, other.export_path.parent.name])


def test_changed_model_files_get_a_new_export(tmp_path):
    ref = build_tiny_dense_model(tmp_path / "m", 32, 0)
    a = DenseModel(ref, device="cpu", backend="openvino", precision="fp32", cache_dir=str(tmp_path / "c"))
    build_tiny_dense_model(tmp_path / "m", 32, 1)  # other weights, same folder
    b = DenseModel(ref, device="cpu", backend="openvino", precision="fp32", cache_dir=str(tmp_path / "c"))
    assert b.exported and a.export_path != b.export_path


def test_choose_setting_per_node():
    assert choose_setting("auto", "auto", "auto", "cpu", BF16) == DenseSetting("openvino", "bf16")
    assert choose_setting("auto", "auto", "auto", "cpu", PLAIN) == DenseSetting("openvino", "fp32")
    assert choose_setting("auto", "int8", "auto", "cpu", PLAIN) == DenseSetting("openvino", "int8")
    assert choose_setting("auto", "auto", "auto", "cuda", BF16) == DenseSetting("torch", "dtype")
    assert choose_setting("auto", "int8", "auto", "cuda:0", BF16) == DenseSetting("torch", "dtype")
    assert choose_setting("auto", "auto", "bfloat16", "cpu", BF16) == DenseSetting("torch", "dtype")
    assert choose_setting("openvino", "auto", "auto", "cpu", PLAIN) == DenseSetting("openvino", "fp32")
    assert choose_setting("compile", "auto", "auto", "cpu", BF16) == DenseSetting("compile", "dtype")
    with pytest.raises(OpenVINOError, match="CPU only"):
        choose_setting("openvino", "auto", "auto", "cuda", BF16)
    assert native_bf16(frozenset({"amx_bf16"})) and not native_bf16(PLAIN)


def test_cpu_flags_parsed(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx512_bf16 amx_tile\n\n"
                 "processor\t: 1\nflags\t\t: fpu sse avx512_bf16 amx_tile\n")
    assert cpu_flags(str(f)) == frozenset({"fpu", "sse", "avx512_bf16", "amx_tile"})
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("sets,match", [
    (["dense.backend=torch", "dense.precision=int8"], "OpenVINO setting"),
    (["dense.backend=compile", "dense.precision=bf16"], "OpenVINO setting"),
    (["dense.backend=openvino", "dense.dtype=bfloat16"], "torch setting"),
    (["dense.precision=int8", "dense.dtype=float16"], "both set"),
    (["dense.backend=openvino", "encode.device=cuda"], "CPU only"),
    (["dense.backend=onnx"], "dense.backend"),
    (["dense.precision=fp16"], "dense.precision"),
])
def test_bad_backend_combinations_rejected(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config("configs/local.yaml", sets)


def test_default_is_auto_and_good_combinations_load():
    cfg = load_config("configs/local.yaml", [])
    assert (cfg.dense.backend, cfg.dense.precision) == ("auto", "auto")
    for sets in (["dense.backend=openvino", "dense.precision=int8"], ["dense.precision=bf16"],
                 ["dense.dtype=bfloat16"], ["dense.backend=torch", "dense.dtype=float32"]):
        load_config("configs/local.yaml", sets)


def test_stage_stats_keep_string_extras_per_node():
    from indexer.stages.stats import StageStats

    s = StageStats()
    s.record("encode", 10, 1.0, 0.0, 1.0, "n1", {"tokens": 5, "dense_setting": "openvino/bf16"})
    s.record("encode", 10, 1.0, 1.0, 2.0, "n2", {"tokens": 7, "dense_setting": "openvino/fp32"})
    s.record("encode", 10, 1.0, 2.0, 3.0, "n1", {"tokens": 1, "dense_setting": "openvino/bf16"})
    snap = s.snapshot()["encode"]
    assert snap["tokens"] == 13 and snap["dense_setting"] == {"n1": "openvino/bf16", "n2": "openvino/fp32"}


@pytest.mark.usefixtures("ray_local")
def test_run_manifest_records_setting_and_exports_before_encoding(tiny, tmp_path):
    from indexer.run.pipeline import run

    ref, _ = tiny
    write_parquet(tmp_path / "corpus.parquet", sample_docs(60, 300))
    cache = tmp_path / "cache"
    sets = [f"corpus.path={tmp_path / 'corpus.parquet'}", "corpus.sample=false", f"index.dir={tmp_path / 'index'}",
            f"dense.model={ref}", "dense.dim=64", "encode.device=cpu", f"dense.cache_dir={cache}",
            "encode.block_rows=32"]
    expected = "openvino/bf16" if native_bf16(cpu_flags()) else "openvino/fp32"
    m = run(load_config("configs/local.yaml", sets))
    enc = m["stages"]["encode"]
    assert set(enc["dense_setting"].values()) == {expected} and enc["dense_setting"].keys() == set(enc["nodes"])
    assert m["stages"]["dense_export"]["setting"] == expected and m["stages"]["dense_export"]["exported"]
    assert len(list(cache.glob("*/model.xml"))) == 1
    rerun = run(load_config("configs/local.yaml", sets))  # nothing to encode: no export, not even a cache check
    assert rerun["mode"] == "incremental" and rerun["counts"]["encoded"] == 0 and "dense_export" not in rerun["stages"]
    # int8 calibrates on corpus texts; a second full run finds the export in the cache
    int8 = [*sets, "dense.precision=int8", f"index.dir={tmp_path / 'index8'}"]
    m8 = run(load_config("configs/local.yaml", int8))
    assert set(m8["stages"]["encode"]["dense_setting"].values()) == {"openvino/int8"}
    assert m8["stages"]["dense_export"]["exported"]
    export = next(p for p in cache.glob("*/export.json") if '"int8"' in p.read_text())
    assert '"calibration_texts": 60' in export.read_text()
    again = run(load_config("configs/local.yaml", int8), full=True)
    assert not again["stages"]["dense_export"]["exported"]
    assert len(list(cache.glob("*/model.xml"))) == 2
    torch_run = run(load_config("configs/local.yaml", [*sets, "dense.backend=torch",
                                                       f"index.dir={tmp_path / 'index_t'}"]))
    assert set(torch_run["stages"]["encode"]["dense_setting"].values()) == {"torch/float32"}
    assert "dense_export" not in torch_run["stages"]
