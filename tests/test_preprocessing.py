import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import write_arrays
from cnnpipe.preprocess import preprocessing
from cnnpipe.preprocess.preprocessing import fit_preprocessing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digit_pixels():
    """scikit-learn's 1,797 handwritten digits (offline), 8x8 gray on the 0-255 scale."""
    return np.rint(load_digits().images * (255 / 16)).astype(np.uint8)[..., None]


@pytest.fixture
def gray(digit_pixels, tmp_path):
    return write_arrays(tmp_path / "gray", digit_pixels, np.zeros(len(digit_pixels)))


@pytest.fixture
def colour(digit_pixels, tmp_path):
    # Three channels with different statistics: the digit, half of it, its negative.
    d = digit_pixels[..., 0]
    rgb = np.stack([d, d // 2, 255 - d], axis=-1)
    return write_arrays(tmp_path / "rgb", rgb, np.zeros(len(rgb))), rgb


@pytest.mark.parametrize("normalization", ["unit", "symmetric"])
def test_fixed_ranges_need_no_statistics(gray, normalization):
    prep = fit_preprocessing(gray, None, None, normalization)
    assert prep.to_dict() == {
        "image_size": [8, 8], "channels": 1, "normalization": normalization,
        "mean": None, "std": None, "scale": 255, "prepared_channels": 1,
        "channel_conversion": None,
    }  # fmt: skip


def test_standardize_statistics_are_per_channel_on_the_pixel_scale(colour):
    shards, rgb = colour
    prep = fit_preprocessing(shards, None, None, "standardize")
    assert prep.channels == 3 and prep.channel_conversion is None
    x = rgb.astype(np.float64)
    np.testing.assert_allclose(prep.mean, x.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(prep.std, x.std(axis=(0, 1, 2)), rtol=1e-8)
    assert 40 < prep.mean[0] < 120 and prep.mean[2] == pytest.approx(255 - prep.mean[0])


@pytest.mark.parametrize("channels", [None, 1])  # histogram path, luma (float) path
def test_statistics_do_not_depend_on_the_batch_size(colour, monkeypatch, channels):
    shards, _ = colour
    whole = fit_preprocessing(shards, None, channels, "standardize")
    monkeypatch.setattr(preprocessing, "_BATCH_BYTES", 8 * 8 * 8 * 3 * 7)  # 7 or 56 a batch
    small = fit_preprocessing(shards, None, channels, "standardize")
    np.testing.assert_allclose(small.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(small.std, whole.std, rtol=1e-10)


def test_rgb_to_gray_uses_luma_and_is_recorded(colour):
    shards, rgb = colour
    prep = fit_preprocessing(shards, 32, 1, "standardize")
    assert prep.input_shape == (32, 32, 1)
    assert prep.channel_conversion == "rgb_to_gray_luma" and prep.prepared_channels == 3
    # Pillow's own RGB -> L conversion, rounded to integers, agrees to well under a level.
    pillow = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])
    assert prep.mean[0] == pytest.approx(pillow.mean(), abs=0.5)
    assert prep.std[0] == pytest.approx(pillow.std(), abs=0.5)


def test_gray_to_rgb_replicates(gray, digit_pixels):
    prep = fit_preprocessing(gray, None, 3, "standardize")
    assert prep.channel_conversion == "gray_to_rgb_replicate"
    assert prep.mean[0] == prep.mean[1] == prep.mean[2]
    assert prep.mean[0] == pytest.approx(digit_pixels.mean())


def test_constant_images_get_a_finite_std(tmp_path):
    flat = write_arrays(tmp_path / "flat", np.full((4, 3, 3, 1), 7, np.uint8), np.zeros(4))
    prep = fit_preprocessing(flat, None, None, "standardize")
    assert prep.mean == (7.0,) and prep.std == (1e-7,)


def test_empty_train_split_is_one_line(tmp_path):
    empty = write_arrays(tmp_path / "none", np.zeros((0, 3, 3, 1), np.uint8), np.zeros(0))
    with pytest.raises(DataError, match="holds no images"):
        fit_preprocessing(empty, None, None, "standardize")


def test_the_model_reads_the_written_settings_as_fitted(colour):
    """preprocessing.json is the contract with the model's input layers."""
    from cnnpipe.models.inputs import check_preprocessing

    prep = fit_preprocessing(colour[0], 12, 1, "standardize")
    written = json.loads(json.dumps(prep.to_dict()))
    read = check_preprocessing(written, colour[0].image_shape)
    assert read["image_size"] == (12, 12) and read["channels"] == 1
    assert read["normalization"] == "standardize"
    np.testing.assert_allclose(read["mean"], prep.mean)
    np.testing.assert_allclose(read["std"], prep.std)


def test_stage_writes_only_the_settings_and_runs_without_tensorflow(tmp_path, digit_pixels):
    for i, image in enumerate(digit_pixels[:150]):
        folder = tmp_path / "images" / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i}.png")
    params = {
        "seed": 0,
        "data": {"source": "image_folder", "image_folder": {"path": "images"},
                 "images": {"image_size": [16, 16]}},
        "preprocess": {"channels": 3, "normalization": "standardize"},
        # Two convs fit 16x16 images (the default three need more than 16 pixels a side).
        "models": {"simple_cnn": {"architecture": "simple_cnn", "filters": [8, 16]}},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    # A tensorflow that cannot be imported: the stages must not need it.
    blocker = tmp_path / "no_tf" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tensorflow is blocked here')\n")
    (tmp_path / "data" / "processed").mkdir(parents=True)
    (tmp_path / "data" / "processed" / "train.npz").write_bytes(b"from an older version")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'no_tf'}{os.pathsep}{ROOT / 'src'}"}
    outputs = {}
    for stage in ("params", "prepare", "preprocess"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "stages" / f"{stage}.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env,
        )
        assert result.returncode == 0, result.stderr
        outputs[stage] = result.stdout
    assert sorted(p.name for p in (tmp_path / "data" / "processed").iterdir()) == [
        "preprocessing.json"
    ]
    saved = json.loads((tmp_path / "data" / "processed" / "preprocessing.json").read_text())
    card = json.loads((tmp_path / "data" / "prepared" / "data_card.json").read_text())
    assert card["image_shape"] == [16, 16, 1]  # gray files: the data decided one channel
    assert saved["channels"] == 3 and saved["prepared_channels"] == 1
    assert saved["channel_conversion"] == "gray_to_rgb_replicate"
    assert saved["image_size"] == [16, 16] and saved["scale"] == 255
    assert len(saved["mean"]) == 3 and 0 < saved["mean"][0] < 255
    assert outputs["preprocess"].count("converting 1-channel images to 3 channels") == 1
