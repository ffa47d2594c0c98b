import numpy as np
import pytest

from cnnpipe.preprocess.preprocessing import Preprocessing, apply_preprocessing, fit_preprocessing


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)


@pytest.mark.parametrize(
    "normalization, low, high", [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0)]
)
def test_fixed_ranges(images, normalization, low, high):
    prep = fit_preprocessing(images, None, 1, normalization)
    x = apply_preprocessing(images, prep)
    assert x.dtype == np.float32
    assert x.min() >= low and x.max() <= high
    assert prep.value_range == (low, high)
    np.testing.assert_allclose(apply_preprocessing(np.full((1, 8, 8, 1), 255, np.uint8), prep).max(), high)


def test_standardize_uses_train_statistics_only(images):
    prep = fit_preprocessing(images, None, 1, "standardize")
    x = apply_preprocessing(images, prep)
    np.testing.assert_allclose(x.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(), 1.0, atol=1e-4)
    other = apply_preprocessing(np.zeros((3, 8, 8, 1), np.uint8), prep)
    np.testing.assert_allclose(other, -prep.mean[0] / prep.std[0], rtol=1e-5)
    low, high = prep.value_range
    assert low <= x.min() and x.max() <= high


def test_resize_and_channel_conversion(images):
    prep = fit_preprocessing(images, 16, 3, "unit")
    x = apply_preprocessing(images, prep)
    assert x.shape == (20, 16, 16, 3)
    np.testing.assert_allclose(x[..., 0], x[..., 2])
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    gray = apply_preprocessing(rgb, fit_preprocessing(rgb, None, 1, "unit"))
    np.testing.assert_allclose(gray, 0.587, atol=1e-6)


def test_round_trips_through_a_dict(images):
    prep = fit_preprocessing(images, 12, 1, "standardize")
    assert Preprocessing.from_dict(prep.to_dict()) == prep
