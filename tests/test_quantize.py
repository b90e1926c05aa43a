import numpy as np
import pytest

from indexer.quantize import (
    Calibration, asymmetric_scores, bytes_per_vector, calibrate, dequantize_scalar, pack_binary,
    quantize_scalar, truncate_normalize, unpack_binary,
)


def test_truncate_normalize_hand_computed():
    v = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    out = truncate_normalize(v, 2)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.0])  # zero vector stays zero, no NaN


def test_truncate_larger_than_model_dim_fails():
    with pytest.raises(ValueError, match="larger than the model"):
        truncate_normalize(np.ones((1, 4)), 8)


def test_int8_calibration_hand_computed():
    sample = np.array([[-0.5, 0.1], [0.25, -0.2], [0.5, 0.05]], dtype=np.float32)
    cal = calibrate(sample, "int8", quantile=1.0)
    # symmetric range: a = max |x| per dimension
    np.testing.assert_allclose(cal.scale, [0.5 / 127, 0.2 / 127], rtol=1e-6)
    codes = quantize_scalar(np.array([[0.0, 0.0], [0.5, -0.2], [-0.5, 0.2]]), cal)
    np.testing.assert_array_equal(codes, [[128, 128], [255, 1], [1, 255]])


def test_uint8_round_trip_error_bounded():
    rng = np.random.default_rng(0)
    x = truncate_normalize(rng.normal(size=(500, 64)), None)
    cal = calibrate(x, "uint8", quantile=1.0)
    back = dequantize_scalar(quantize_scalar(x, cal), cal)
    assert np.abs(back - x).max() <= max(cal.scale) / 2 + 1e-6


def test_quantile_clips_outliers():
    x = np.zeros((1000, 1), np.float32)
    x[0, 0] = 100.0
    assert calibrate(x, "int8", quantile=0.99).scale[0] < 1e-3
    assert calibrate(x, "int8", quantile=1.0).scale[0] == pytest.approx(100 / 127)


def test_calibration_json_round_trip():
    cal = calibrate(np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32), "uint8")
    assert Calibration.from_json(cal.to_json()) == cal


def test_binary_pack_unpack():
    v = np.array([[0.3, -0.1, 0.0, 2.0, -5.0, 1.0, 1.0, -1.0, 0.5]], dtype=np.float32)
    packed = pack_binary(v)
    assert packed.shape == (1, 2)
    assert packed[0, 0] == 0b10010110 and packed[0, 1] == 0b10000000
    np.testing.assert_array_equal(unpack_binary(packed, 9)[0], [1, 0, 0, 1, 0, 1, 1, 0, 1])


def test_asymmetric_scores_rank_like_float():
    rng = np.random.default_rng(2)
    docs = truncate_normalize(rng.normal(size=(200, 32)), None)
    q = truncate_normalize(rng.normal(size=(1, 32)), None)[0]
    cal = calibrate(docs, "int8", 1.0)
    approx = asymmetric_scores(q, quantize_scalar(docs, cal), cal)
    exact = docs @ q
    assert np.corrcoef(approx, exact)[0, 1] > 0.999
    assert np.argmax(approx) == np.argmax(exact)


def test_bytes_per_vector():
    assert bytes_per_vector(384, "none") == 1536
    assert bytes_per_vector(256, "int8") == 256
    assert bytes_per_vector(384, "binary") == 48
    assert bytes_per_vector(384, "binary", rescore=True) == 48 + 384
