"""Dense encoder: the pre-tokenized path against sentence-transformers, batch planning and padding
share, on-device quantization against the numpy reference, GPU placement math."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.config import PACKAGED_MODEL, config_from_dict
from indexer.encoders.batching import ForwardPass, flatten_features, pad_rows, padding_share, plan_batches, plan_shapes
from indexer.encoders.dense import DenseModel, Postprocess, postprocess
from indexer.run.placement import MIN_FEED_CPUS_PER_GPU, plan_placement
from indexer.quantize import calibrate, pack_binary, quantize_scalar, truncate_normalize
from indexer.stages.encode import Encode, EncodeSpec

TEXTS = [
    "parse a JSON document into Python objects",
    "sqlite3 cursor",
    "The subprocess module allows you to spawn new processes, connect to their input/output/error pipes, "
    "and obtain their return codes. " * 3,
    "x",
    "Return a new array of given shape and type, filled with zeros. " * 40,  # longer than 256 tokens
]


@pytest.fixture(scope="module")
def minilm():
    return DenseModel(PACKAGED_MODEL, device="cpu")


# -- batch planning ---------------------------------------------------------------------------

def test_plan_batches_budget_and_cover():
    lengths = np.array([5, 50, 7, 50, 3, 20, 100])
    batches = plan_batches(lengths, batch_tokens=100)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * lengths[b].max() <= 100 or len(b) == 1
    assert [lengths[b].tolist() for b in batches] == [[100], [50, 50], [20, 7, 5, 3]]


def test_plan_shapes_rounds_widths_and_buckets_rows():
    lengths = np.array([50, 45, 10, 9, 8, 70])
    batches = plan_shapes(lengths, batch_tokens=128, width_multiple=32, max_width=60, bucket_rows=True)
    # 70 is beyond max_width but is the row's own length (never cut); 50 rounds to 64, capped at 60;
    # the last batch's 3 rows round up to 4 (a power of two within the budget of 128 // 32 rows).
    assert [(b.width, b.rows, len(b.idx)) for b in batches] == [(70, 1, 1), (60, 2, 2), (32, 4, 3)]
    plain = plan_shapes(lengths, batch_tokens=128)
    assert all(b.rows == len(b.idx) for b in plain)


def test_padding_share_hand_computed():
    lengths = np.array([4, 2, 3, 1])
    # one batch of width 4 with 4 rows: 16 computed, 10 real
    assert padding_share(lengths, [ForwardPass(np.arange(4), 4, 4)]) == pytest.approx(6 / 16)
    # two exact batches plus a dummy row in the second: (4+3) real of 8, (2+1) real of 2*2 + 2 dummy
    batches = [ForwardPass(np.array([0, 2]), 4, 2), ForwardPass(np.array([1, 3]), 2, 3)]
    assert padding_share(lengths, batches) == pytest.approx(1 - 10 / 14)
    assert padding_share(lengths, []) == 0.0


def test_pad_rows_and_flatten_features():
    ids = [np.array([101, 7, 8, 102]), np.array([101, 9, 102])]
    arr, mask = pad_rows(ids, width=5, rows=3, pad_id=0)
    np.testing.assert_array_equal(arr, [[101, 7, 8, 102, 0], [101, 9, 102, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    from transformers import DataCollatorWithFlattening

    ref = DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True,
                                     return_tensors="np")([{"input_ids": x.tolist()} for x in ids])
    ours = flatten_features(ids)
    for k, v in ours.items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(ref[k]), err_msg=k)
        if isinstance(v, np.ndarray):
            assert v.dtype == np.asarray(ref[k]).dtype, k


def test_padding_counters(minilm):
    from indexer.encoders.tokens import tokenize_texts

    ids, _, _, _ = tokenize_texts(TEXTS, PACKAGED_MODEL)
    lengths = np.array([len(x) for x in ids])
    pad0, real0 = minilm.padding_tokens, minilm.real_tokens
    minilm.embed_ids(ids, batch_tokens=512)
    assert minilm.real_tokens - real0 == lengths.sum()
    expected = padding_share(lengths, minilm.shapes(lengths, 512))
    got = (minilm.padding_tokens - pad0) / (minilm.padding_tokens - pad0 + lengths.sum())
    assert got == pytest.approx(expected)


# -- tokenize (CPU stage) ---------------------------------------------------------------------

def test_fast_tokenize_path_equals_the_tokenizer_call():
    from indexer.encoders.models import load_tokenizer
    from indexer.encoders.tokens import content_ids

    texts = TEXTS + ["", "Café naïve — résumé", "数据库 连接 与 查询", "  spaces\tand\nnewlines  ",
                     "a" * 3000, "don't [MASK] the [SEP] token", "e\u0301 composed vs é"]
    ref = load_tokenizer(PACKAGED_MODEL)(texts, add_special_tokens=False)["input_ids"]
    got = content_ids(texts, PACKAGED_MODEL)
    assert got == ref
    assert len(got[4]) > 256  # no truncation at this step


# -- the model --------------------------------------------------------------------------------

def test_pretokenized_path_matches_sentence_transformers(minilm):
    from indexer.encoders.tokens import tokenize_texts

    ref = minilm.model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    ids, _, truncated, _ = tokenize_texts(TEXTS, PACKAGED_MODEL)
    assert truncated[-1]
    for budget in (64, 16384):  # one row per batch, and everything in one padded batch
        ours = minilm.embed_ids(ids, budget).numpy()
        cos = (truncate_normalize(ours, None) * ref).sum(axis=1)
        assert cos.min() > 0.9999, cos


def test_encode_stage_outputs(minilm):
    from indexer import schema
    from indexer.encoders.tokens import ragged, tokenize_texts

    ids, _, _, _ = tokenize_texts(TEXTS, PACKAGED_MODEL)
    emb = minilm.embed_ids(ids, 1024).numpy()
    cal = calibrate(truncate_normalize(emb, 128), "int8", 1.0)
    params = {"model": PACKAGED_MODEL, "device": "cpu", "dtype": "auto", "max_seq_length": None,
              "torch_threads": None, "batch_tokens": 300, "dim": 128, "quantization": "binary",
              "calibration": cal.to_json(), "rescore": True}
    enc = Encode(EncodeSpec(**params))
    batch = {schema.ID: np.array([str(i) for i in range(len(ids))], dtype=object), schema.INPUT_IDS: ragged(ids)}
    out = enc(batch)
    x = truncate_normalize(emb, 128)
    # same model, different batching: float noise may flip a sign that sits right at zero
    assert (np.unpackbits(out[schema.DENSE], axis=1) == np.unpackbits(pack_binary(x), axis=1)).mean() > 0.99
    assert np.abs(out[schema.DENSE_RESCORE].astype(int) - quantize_scalar(x, cal).astype(int)).max() <= 1
    assert schema.INPUT_IDS not in out
    empty = enc({schema.ID: np.array([], dtype=object), schema.INPUT_IDS: ragged([])})
    assert empty[schema.DENSE].shape == (0, 16) and empty[schema.DENSE].dtype == np.uint8


# -- quantization on the device vs numpy ------------------------------------------------------

@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_device_quantization_equals_numpy(kind):
    import torch

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(300, 96)).astype(np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(emb)[:, :64], dim=1).numpy()
    cal = calibrate(x, kind, 0.99)  # clipping exercised: some values fall outside the range
    codes, rescore = postprocess(torch.from_numpy(emb), 64, kind, cal)
    assert rescore is None and codes.dtype == np.uint8 and codes.shape == (300, 64)
    np.testing.assert_array_equal(codes, quantize_scalar(x, cal))
    # the whole path (normalisation included) against the numpy reference
    ref = quantize_scalar(truncate_normalize(emb, 64), cal)
    assert np.abs(codes.astype(int) - ref.astype(int)).max() <= 1
    assert (codes == ref).mean() > 0.999


@pytest.mark.parametrize("dim", [64, 61, 5])
def test_device_binary_equals_numpy(dim):
    import torch

    emb = np.random.default_rng(4).normal(size=(50, 64)).astype(np.float32)
    packed, rescore = postprocess(torch.from_numpy(emb), dim, "binary", None, rescore=True)
    assert rescore is None  # no calibration, no rescoring codes
    np.testing.assert_array_equal(packed, pack_binary(truncate_normalize(emb, dim)))


def test_device_float_and_errors():
    import torch

    emb = np.random.default_rng(5).normal(size=(20, 32)).astype(np.float32)
    x, _ = postprocess(torch.from_numpy(emb), 16, "none", None)
    np.testing.assert_allclose(x, truncate_normalize(emb, 16), atol=1e-6)
    with pytest.raises(ValueError, match="needs a calibration"):
        Postprocess(16, "int8", None)
    with pytest.raises(ValueError, match="unknown quantization"):
        Postprocess(16, "int4", None)


# -- placement ------------------------------------------------------------------------------

def _placement(cluster, nodes, **encode):
    cfg = config_from_dict({"encode": encode})
    return plan_placement(cfg, cluster, nodes)


def test_placement_one_actor_per_gpu():
    nodes = [{"CPU": 32.0, "GPU": 4.0}, {"CPU": 32.0, "GPU": 4.0}]
    p = _placement({"CPU": 64.0, "GPU": 8.0}, nodes)
    assert (p.workers, p.num_gpus, p.num_cpus, p.device) == (8, 1.0, 1.0, "cuda")
    assert p.feed_cpus_per_gpu == pytest.approx((64 - 8) / 8)


def test_placement_fractional_gpus():
    nodes = [{"CPU": 16.0, "GPU": 2.0}]
    p = _placement({"CPU": 16.0, "GPU": 2.0}, nodes, gpus_per_worker=0.25)
    assert (p.workers, p.num_gpus, p.num_cpus) == (8, 0.25, 1.0)
    assert p.feed_cpus_per_gpu == pytest.approx(4.0)
    # 3 / 0.1 is 29.999... in floating point: still 30 actors
    p = _placement({"CPU": 96.0, "GPU": 3.0}, [{"CPU": 96.0, "GPU": 3.0}], gpus_per_worker=0.1)
    assert p.workers == 30 and p.num_gpus == pytest.approx(0.1)
    # explicit counts win
    p = _placement({"CPU": 16.0, "GPU": 2.0}, nodes, gpus_per_worker=0.5, workers=3, max_workers=4, cpus_per_worker=2)
    assert (p.workers, p.max_workers, p.num_gpus, p.num_cpus) == (3, 4, 0.5, 2.0)


def test_placement_keeps_half_the_cpus_for_tokenize(caplog):
    # 4 CPUs, 1 GPU, 4 actors: one CPU each would leave nothing for tokenization
    p = _placement({"CPU": 4.0, "GPU": 1.0}, [{"CPU": 4.0, "GPU": 1.0}], gpus_per_worker=0.25)
    assert p.workers == 4 and p.num_cpus == pytest.approx(0.5)
    assert p.feed_cpus_per_gpu == pytest.approx(2.0) and p.feed_cpus_per_gpu < MIN_FEED_CPUS_PER_GPU
    assert "tokeniz" in caplog.text
    # a CPU-only node next to the GPU node adds tokenize capacity but not actor CPUs
    p = _placement({"CPU": 36.0, "GPU": 1.0}, [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 32.0}])
    assert (p.workers, p.num_cpus, p.feed_cpus_per_gpu) == (1, 1.0, 35.0)


def test_placement_cpu_cluster_and_device_override():
    p = _placement({"CPU": 8.0}, [{"CPU": 8.0}])
    assert p.device == "cpu" and p.num_gpus == 0.0 and p.feed_cpus_per_gpu is None
    p = _placement({"CPU": 8.0, "GPU": 1.0}, [{"CPU": 8.0, "GPU": 1.0}], device="cpu")
    assert p.device == "cpu"


# -- GPU only ---------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_matches_cpu_and_numpy():
    import torch

    from indexer.encoders.tokens import tokenize_texts

    ids, _, _, _ = tokenize_texts(TEXTS * 20, PACKAGED_MODEL)
    cpu = DenseModel(PACKAGED_MODEL, device="cpu").embed_ids(ids, 4096).numpy()
    gpu_model = DenseModel(PACKAGED_MODEL, device="cuda")
    assert gpu_model.torch_dtype in (torch.bfloat16, torch.float16)
    gpu = gpu_model.embed_ids(ids, 4096).cpu().numpy()
    cos = (truncate_normalize(cpu, None) * truncate_normalize(gpu, None)).sum(axis=1)
    assert cos.min() > 0.995
    x = truncate_normalize(gpu, 256)
    cal = calibrate(x, "int8", 1.0)
    (codes,) = gpu_model.encode_ids(ids, 4096, Postprocess(256, "int8", cal))
    np.testing.assert_array_equal(codes, quantize_scalar(x, cal))
    (bits,) = gpu_model.encode_ids(ids, 300, Postprocess(256, "binary", None))
    np.testing.assert_array_equal(bits, pack_binary(x))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["compile", "cudagraphs"])
def test_gpu_compiled_backends_match_eager(backend):
    from indexer.encoders.tokens import tokenize_texts

    ids, _, _, _ = tokenize_texts(TEXTS * 4, PACKAGED_MODEL)
    eager = DenseModel(PACKAGED_MODEL, device="cuda").embed_ids(ids, 2048).cpu().numpy()
    fast = DenseModel(PACKAGED_MODEL, device="cuda", backend=backend).embed_ids(ids, 2048).cpu().numpy()
    cos = (truncate_normalize(eager, None) * truncate_normalize(fast, None)).sum(axis=1)
    assert cos.min() > 0.999
