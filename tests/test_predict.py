"""`cnnpipe predict`: tiny trained-looking variants in tmp_path, no pipeline run needed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fixtures import png_header_claiming  # noqa: E402
from PIL import Image  # noqa: E402

from cnnpipe import cli  # noqa: E402
from cnnpipe.core.model_card import ModelCard, TrainedAs  # noqa: E402
from cnnpipe.data.folders import fit_to_size  # noqa: E402
from cnnpipe.inference import TrainedVariant  # noqa: E402
from cnnpipe.predict import (  # noqa: E402
    BANDS,
    Prediction,
    classify_files,
    confidence_band,
    format_prediction,
    gradcam_paths,
)

CLASSES = ["circle", "square", "stripes"]
PREP = {"image_size": [28, 28], "channels": 1, "normalization": "unit", "mean": None, "std": None}


def tiny_model(num_classes: int) -> keras.Model:
    """Takes the stored uint8 pixels and normalizes them itself, as a trained variant does;
    two conv layers give Grad-CAM a feature map."""
    inputs = keras.Input((28, 28, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if num_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def save_variant(models_dir, name, model, class_names):
    """What stages/train.py leaves in models/<variant>/ (the weights file aside)."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    ModelCard(
        variant=name,
        architecture="tiny",
        config={},
        class_names=class_names,
        raw_image_shape=(28, 28, 1),
        image_loading=None,  # what a Fashion-MNIST run writes: no files were fitted
        preprocessing=PREP,
        trained_as=TrainedAs(train_images=100, batch_size=32, epochs=1),
    ).write(folder / "model_card.json")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A directory laid out like the repository: models/tiny (3 classes), models/binary."""
    root = tmp_path_factory.mktemp("repo")
    keras.utils.set_random_seed(0)
    tiny, binary = tiny_model(len(CLASSES)), tiny_model(2)
    save_variant(root / "models", "tiny", tiny, CLASSES)
    save_variant(root / "models", "binary", binary, ["cat", "dog"])
    return {"root": root, "tiny": tiny, "binary": binary}


@pytest.fixture
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo["root"])
    return repo


def gray_images(count=4, seed=0):
    """Distinct 28x28 uint8 images: blobs, bars and noise, so the outputs differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    images = [
        np.where((yy - 14) ** 2 + (xx - 14) ** 2 < 64, 230, 20),
        np.where((abs(yy - 14) < 7) & (abs(xx - 14) < 7), 200, 30),
        np.where(xx % 6 < 3, 255, 0),
        rng.integers(0, 256, (28, 28)),
    ][:count]
    return np.stack(images).astype(np.uint8)[..., None]


def write_png(path, pixels):
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path, "PNG")
    return str(path)


def jpeg_bytes(pixels, quality=95):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()



def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run_cli(capsys, *argv, "--json")
    return code, json.loads(out), err


# --- known images are classified as evaluation classifies them ------------------------------


def test_known_images_get_the_probabilities_evaluation_gets(in_repo, tmp_path, capsys):
    images = gray_images()
    files = [write_png(tmp_path / f"known{i}.png", image) for i, image in enumerate(images)]
    code, records, err = run_json(capsys, "predict", *files, "--model", "tiny")
    assert code == 0, err
    expected = in_repo["tiny"].predict(images, verbose=0)
    assert [r["file"] for r in records] == files
    for record, row in zip(records, expected, strict=True):
        got = np.array([record["probabilities"][name] for name in CLASSES])
        np.testing.assert_allclose(got, row, atol=1e-5)
        assert record["predicted_class"] == CLASSES[int(row.argmax())]
        assert record["confidence"] == pytest.approx(float(row.max()), abs=1e-5)


def test_other_sizes_and_colours_become_what_the_training_data_looked_like(in_repo, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(jpeg_bytes(rgb))
    rgba = np.dstack([rgb[:40, :40], np.full((40, 40), 128, np.uint8)])
    png = write_png(tmp_path / "alpha.png", rgba)
    predictions, inputs = classify_files(TrainedVariant.load("models/tiny"), [jpeg, png])
    assert all(p.ok for p in predictions)
    # The prepare stage's path for a folder image: Pillow's grayscale, bilinear resize.
    gray = np.asarray(Image.open(jpeg).convert("L"))[..., None]
    np.testing.assert_array_equal(inputs[0], fit_to_size(gray, (28, 28)))
    assert inputs.dtype == np.uint8
    assert inputs.shape == (2, 28, 28, 1)


def copy_variant(repo, models_dir, name, **card_changes):
    """models/tiny of the fixture repo copied to ``models_dir/name``, its card changed
    (a value of ... deletes the key)."""
    import shutil

    folder = models_dir / name
    shutil.copytree(repo["root"] / "models" / "tiny", folder)
    card = json.loads((folder / "model_card.json").read_text())
    card.update(card_changes)
    card = {key: value for key, value in card.items() if value is not ...}
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def test_a_crop_trained_model_gets_cropped_input(repo, tmp_path):
    wide = np.zeros((28, 84, 1), np.uint8)
    wide[:, 28:56] = 255  # the centre square is white; stretching would average it away
    file = write_png(tmp_path / "wide.png", wide)
    copy_variant(repo, tmp_path / "models", "cropped", image_loading={
        "image_size": [28, 28], "channels": 1, "crop_to_aspect_ratio": True,
        "resample": "bilinear"})
    trained = TrainedVariant.load(tmp_path / "models" / "cropped")
    assert trained.input_spec.crop_to_aspect_ratio
    _, inputs = classify_files(trained, [file])
    np.testing.assert_array_equal(inputs[0], 255)


LOADING = {"image_size": [28, 28], "channels": 1, "crop_to_aspect_ratio": False}


@pytest.mark.parametrize("change, message", [
    ({"image_loading": ...}, "model_card.json: image_loading: Field required"),
    ({"raw_image_shape": ...}, "model_card.json: raw_image_shape: Field required"),
    ({"image_loading": {"image_size": [28, 28], "channels": 1}},
     "model_card.json: image_loading.crop_to_aspect_ratio: Field required"),
    ({"image_loading": {**LOADING, "resample": "lanczos"}},
     "image_loading.resample: Input should be 'bilinear'"),
    ({"raw_image_shape": [100000, 100000, 3]},
     "model_card.json: raw_image_shape.0: Input should be less than or equal to 2048"),
    ({"card_version": ..., "trained_as": ...}, "is a version 1 model card"),
])
def test_a_card_lacking_or_misstating_the_input_decisions_is_refused_in_one_line(
    repo, tmp_path, capsys, change, message
):
    copy_variant(repo, tmp_path / "models", "old", **change)
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, out, err = run_cli(capsys, "predict", file, "-m", "old",
                             "--models-dir", tmp_path / "models")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and "dvc repro" in err
    assert len(err.strip().splitlines()) == 1


# --- broken files -------------------------------------------------------------------------


@pytest.fixture
def mixed_files(tmp_path):
    good = write_png(tmp_path / "good.png", gray_images(1)[0])
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    empty = tmp_path / "empty.png"
    empty.touch()
    truncated = tmp_path / "cut.jpg"
    full = jpeg_bytes(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    truncated.write_bytes(full[: len(full) // 2])
    also_good = tmp_path / "also_good.jpg"
    also_good.write_bytes(full)
    missing = tmp_path / "missing.png"
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_claiming(9000, 9000))
    return [good, str(text), str(empty), str(truncated), str(missing), str(huge), str(also_good)]


def test_broken_files_get_their_own_errors_and_the_rest_are_classified(
    in_repo, mixed_files, capsys
):
    code, out, err = run_cli(capsys, "predict", *mixed_files, "--model", "tiny")
    assert code == 1
    good, text, empty, truncated, missing, huge, also_good = mixed_files
    assert out.count("\n    ") >= 2 * len(CLASSES)  # a probability line per class, per file
    assert f"{good}: " in out and f"{also_good}: " in out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[1] for line in errors] == [text, empty, truncated, missing, huge]
    reasons = ["not an image", "empty file", "truncated", "cannot read", "too large"]
    assert all(f": {reason}" in line for line, reason in zip(errors, reasons, strict=True))
    assert "5 of 7 files could not be classified" in err


def test_a_folder_among_the_files_is_skipped_with_one_line_and_the_file_still_classified(
    in_repo, tmp_path, capsys
):
    good = write_png(tmp_path / "ok.png", gray_images(1)[0])
    folder = tmp_path / "some_dir"
    folder.mkdir()
    write_png(folder / "inside.png", gray_images(1)[0])
    code, out, err = run_cli(capsys, "predict", good, f"{folder}/", "--model", "tiny")
    assert code == 1
    assert f"{good}: " in out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {folder}/: a folder, not an image file: skipped (name its files, "
                      "e.g. FOLDER/*.jpg)"]
    assert "Traceback" not in err and "1 of 2 files could not be classified" in err


def test_json_output_has_the_fields(in_repo, mixed_files, capsys):
    code, records, err = run_json(capsys, "predict", *mixed_files, "-m", "tiny")
    assert code == 1
    assert err == ""  # in JSON mode the errors are in the records
    assert [r["file"] for r in records] == mixed_files
    ok = [r for r in records if "error" not in r]
    assert [r["file"] for r in ok] == [mixed_files[0], mixed_files[-1]]
    for record in ok:
        assert set(record) == {"file", "predicted_class", "confidence", "band", "probabilities"}
        probabilities = list(record["probabilities"].values())
        assert list(record["probabilities"]) == sorted(
            record["probabilities"], key=record["probabilities"].get, reverse=True
        )
        assert set(record["probabilities"]) == set(CLASSES)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert record["confidence"] == probabilities[0]
        assert record["predicted_class"] == next(iter(record["probabilities"]))
        assert record["band"] == confidence_band(record["confidence"]).name
    for record in records[1:6]:
        assert set(record) == {"file", "error"} and record["error"]


def test_all_good_files_exit_zero_and_top_limits_the_classes(in_repo, tmp_path, capsys):
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, out, _ = run_cli(capsys, "predict", file, "--model", "tiny", "--top", "2")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{file}: ")
    code, records, _ = run_json(capsys, "predict", file, "--model", "tiny", "--top", "1")
    assert code == 0 and len(records[0]["probabilities"]) == 1


# --- models -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["nope", "../models", ""])
def test_unknown_variant_is_one_line_and_exit_2(in_repo, tmp_path, capsys, variant):
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, out, err = run_cli(capsys, "predict", file, "--model", variant)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "available: binary, tiny" in err


def test_missing_models_dir_says_how_to_get_models(in_repo, tmp_path, capsys):
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, _, err = run_cli(capsys, "predict", file, "-m", "tiny", "--models-dir", tmp_path / "x")
    assert code == 2 and "dvc repro" in err and len(err.strip().splitlines()) == 1


def test_a_damaged_model_file_is_a_one_line_error(in_repo, tmp_path, capsys):
    models = tmp_path / "models"
    save_variant(models, "tiny", in_repo["tiny"], CLASSES)
    saved = models / "tiny" / "model.keras"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, _, err = run_cli(capsys, "predict", file, "-m", "tiny", "--models-dir", models)
    assert code == 2 and len(err.strip().splitlines()) == 1
    # Named as corrupt: Keras itself says "File not found" about a file that exists.
    assert err.startswith(f"error: {saved} is corrupt (not a complete .keras archive") and \
        "not found" not in err.lower()


@pytest.mark.parametrize("key, value, says", [
    ("raw_image_shape", [32, 32, 3], "says the model takes 32x32x3 images, but"),
    ("class_names", ["a", "b", "c", "d", "e"], "names 5 classes, but"),
])
def test_a_card_that_disagrees_with_its_model_is_one_line(in_repo, tmp_path, capsys, key, value,
                                                          says):
    models = tmp_path / "models"
    save_variant(models, "tiny", in_repo["tiny"], CLASSES)
    card_path = models / "tiny" / "model_card.json"
    card = json.loads(card_path.read_text())
    card[key] = value
    if key == "class_names":
        card["num_classes"] = len(value)  # a consistent card, just not this model's
    card_path.write_text(json.dumps(card))
    file = write_png(tmp_path / "one.png", gray_images(1)[0])
    code, _, err = run_cli(capsys, "predict", file, "-m", "tiny", "--models-dir", models)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert says in err and "different runs; retrain (dvc repro)" in err and "Traceback" not in err


def test_binary_model_gives_two_class_probabilities(in_repo, tmp_path, capsys):
    images = gray_images(3)
    files = [write_png(tmp_path / f"b{i}.png", image) for i, image in enumerate(images)]
    code, records, _ = run_json(capsys, "predict", *files, "--model", "binary")
    assert code == 0
    p_dog = in_repo["binary"].predict(images, verbose=0)[:, 0]
    for record, p in zip(records, p_dog, strict=True):
        assert record["probabilities"]["dog"] == pytest.approx(p, abs=1e-5)
        assert record["probabilities"]["cat"] == pytest.approx(1 - p, abs=1e-5)
        assert record["predicted_class"] == ("dog" if p > 0.5 else "cat")
    code, out, _ = run_cli(capsys, "predict", files[0], "--model", "binary")
    assert code == 0 and "cat" in out and "dog" in out


# --- what a person reads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "confidence, band",
    [
        (0.95, "super confident"),
        (0.8, "pretty sure"),
        (0.6, "I think"),
        (0.4, "not very sure"),
        (0.9, "pretty sure"),  # the tutorial says "above"
        (0.7, "I think"),
        (0.5, "not very sure"),
        (1.0, "super confident"),
    ],
)
def test_confidence_bands(confidence, band):
    assert confidence_band(confidence).name == band


@pytest.mark.parametrize("confidence", [0.95, 0.8, 0.6, 0.4])
def test_text_shows_the_band_marker_and_every_class(confidence):
    rest = (1 - confidence) / 2
    prediction = Prediction("x.png", np.array([rest, confidence, rest]))
    band = confidence_band(confidence)
    text = format_prediction(prediction, tuple(CLASSES))
    first, *classes = text.splitlines()
    assert first == f"x.png: {band.marker} {band.name}: square ({confidence:.1%})"
    assert [line.split()[0] for line in classes][0] == "square"
    assert len(classes) == 3
    plain = format_prediction(prediction, tuple(CLASSES), top=1, fancy=False)
    assert plain.isascii() and band.ascii_marker in plain and len(plain.splitlines()) == 2


def test_every_band_has_its_own_marker():
    assert len({b.marker for b in BANDS}) == len({b.ascii_marker for b in BANDS}) == len(BANDS)


# --- Grad-CAM -----------------------------------------------------------------------------


def test_gradcam_paths():
    assert gradcam_paths("out/cam.png", 1) == [Path("out/cam.png")]
    assert [p.name for p in gradcam_paths("out/cam.png", 3)] == ["cam_1.png", "cam_2.png",
                                                                  "cam_3.png"]
    assert gradcam_paths("out/cam", 2)[1].name == "cam_2.png"


def test_gradcam_writes_png_overlays(in_repo, tmp_path, capsys):
    images = gray_images(2)
    files = [write_png(tmp_path / f"g{i}.png", image) for i, image in enumerate(images)]
    broken = tmp_path / "broken.png"
    broken.write_text("no")
    out = tmp_path / "cams" / "cam.png"
    code, _, err = run_cli(capsys, "predict", files[0], "-m", "tiny", "--gradcam", out)
    assert code == 0, err
    with Image.open(out) as overlay:
        assert overlay.format == "PNG" and overlay.mode == "RGB"
        assert min(overlay.size) >= 224
    code, records, _ = run_json(capsys, "predict", files[0], broken, files[1], "-m", "tiny",
                                "--gradcam", out)
    assert code == 1
    # Numbered by position on the command line: the broken second file leaves a gap.
    assert records[0]["gradcam"] == str(tmp_path / "cams" / "cam_1.png")
    assert records[2]["gradcam"] == str(tmp_path / "cams" / "cam_3.png")
    assert not (tmp_path / "cams" / "cam_2.png").exists()
    for record in (records[0], records[2]):
        with Image.open(record["gradcam"]) as overlay:
            assert overlay.format == "PNG"


# --- the command itself -------------------------------------------------------------------


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert cli.main(["predict"]) == 2
    assert cli.main(["predict", "x.png", "-m", "tiny", "--top", "0"]) == 2
    assert cli.main(["predict", "--help"]) == 0
    assert "--gradcam" in capsys.readouterr().out


def test_help_runs_without_tensorflow():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "cnnpipe.cli", "predict", "--help"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "super confident" in result.stdout and "--models-dir" in result.stdout
    probe = ("import sys, cnnpipe.cli as c; c.build_parser(); "
             "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.stdout.strip() == "False", result.stderr


def test_tensorflow_noise_is_held_back_and_other_stderr_kept(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with cli.quiet_native_logs():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1795602920.922367   23075 port.cc:153] oneDNN custom\n"
                    b"E0000 00:00:1795602876.231986   22644 cuda_platform.cc:52] failed "
                    b"call to cuInit: INTERNAL\n"
                    b"something that matters\n")
    assert capfd.readouterr().err == "something that matters\n"


@pytest.mark.parametrize("crop", [False, True])
def test_an_exif_rotated_photo_gets_the_model_input_prepare_gave_it(tmp_path, crop):
    """Predict and prepare share the decode and resize code: same file, same bytes."""
    from cnnpipe.data.folders import decode_file
    from cnnpipe.predict import read_image

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)
    pixels[:10] = 255  # a bright top band: the rotation is visible in the result
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers (and both paths) turn it upright
    photo = tmp_path / "sideways.jpg"
    Image.fromarray(pixels).save(photo, "JPEG", quality=95, exif=exif.tobytes())
    for channels in (1, 3):
        prepared = decode_file(photo, (32, 32), channels, crop_to_aspect_ratio=crop).pixels
        served = read_image(photo, (32, 32, channels), crop_to_aspect_ratio=crop)
        assert served.dtype == np.uint8 and served.shape == (32, 32, channels)
        np.testing.assert_array_equal(served, prepared)
    upright = read_image(photo, (40, 60, 3))  # upright size, so no resize: orientation alone
    assert upright.shape == (40, 60, 3)
    assert upright[:, -10:].mean() > upright[:, :-10].mean() + 50  # the top band turned right
