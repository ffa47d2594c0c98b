"""export@<variant> and `cnnpipe export`: a tiny variant trained on real digits, exported in
tmp_path; every format checked against model.keras and the SavedModel run without cnnpipe."""

from __future__ import annotations

import contextlib
import importlib.util
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
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from cnnpipe import cli  # noqa: E402
from cnnpipe.core.errors import ConfigError, DataError  # noqa: E402
from cnnpipe.core.model_card import ImageLoading, ModelCard, TrainedAs  # noqa: E402
from cnnpipe.core.shards import write_arrays  # noqa: E402
from cnnpipe.export import formats, parity  # noqa: E402
from cnnpipe.export.card import ExportCard  # noqa: E402
from cnnpipe.export.exporter import ExportRequest, export_variant  # noqa: E402
from cnnpipe.export.savedmodel import write_savedmodel  # noqa: E402
from cnnpipe.inference import TrainedVariant  # noqa: E402
from cnnpipe.predict import classify_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (8, 8, 1)
DIGITS = tuple(str(digit) for digit in range(10))
TRAIN, TEST = slice(0, 1000), slice(1000, 1250)  # 250 test images: the parity sample is 200
FORMAT_FILES = ("model.onnx", "model_float.tflite", "model_dynamic_range.tflite",
                "model_card.json", "savedmodel/digits/3/saved_model.pb")


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (shipped offline) as uint8 images and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.round(data.images * (255 / 16)).astype(np.uint8)[..., None], data.target


def digits_model() -> keras.Model:
    """Takes uint8 pixels and normalizes them itself, as the pipeline's models do."""
    inputs = keras.Input(SHAPE, dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def save_variant(folder: Path, model: keras.Model, class_names, image_loading=None) -> Path:
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    ModelCard(
        variant=folder.name, architecture="tiny", class_names=tuple(class_names),
        raw_image_shape=SHAPE, image_loading=image_loading,
        preprocessing={"normalization": "unit"}, config={"filters": 8, "epochs": 4},
        trained_as=TrainedAs(train_images=1000, batch_size=32, epochs=4),
    ).write(folder / "model_card.json")
    return folder


def run_stage(variant: str) -> str:
    """stages/export.py's main, in the current folder; what it printed."""
    spec = importlib.util.spec_from_file_location("export_stage", ROOT / "stages/export.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        stage.main(variant)
    return printed.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository layout holding a trained `digits` variant, its test split and metrics,
    exported by the stage (export version 3, 200 parity images)."""
    root = tmp_path_factory.mktemp("export_repo")
    images, labels = digits()
    keras.utils.set_random_seed(0)
    model = digits_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[TRAIN], labels[TRAIN], epochs=4, batch_size=32, verbose=0)
    save_variant(root / "models/digits", model, DIGITS)
    write_arrays(root / "data/prepared/test", images[TEST], labels[TEST])
    accuracy = float(np.mean(model.predict(images[TEST], verbose=0).argmax(1) == labels[TEST]))
    (root / "metrics").mkdir()
    (root / "metrics/digits.json").write_text(json.dumps({"accuracy": accuracy}))
    (root / "resolved").mkdir()
    (root / "resolved/export.json").write_text(
        json.dumps({"export": {"version": 3, "parity_images": 200}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        printed = run_stage("digits")
    return {"root": root, "printed": printed, "accuracy": accuracy, "test": images[TEST],
            "savedmodel": root / "models/digits/export/savedmodel/digits/3"}


def test_the_stage_writes_every_format_and_the_export_card(repo):
    export = repo["root"] / "models/digits/export"
    for name in FORMAT_FILES:
        assert (export / name).is_file(), name
    raw = json.loads((export / "model_card.json").read_text())
    assert raw.pop("num_classes") == 10
    card = ExportCard.model_validate(raw)
    assert card.class_names == DIGITS and card.export_version == 3
    assert card.input.raw_image_shape == SHAPE and card.input.fit == "stretch"
    assert "EXIF orientation is not applied" in card.input.exif_orientation
    assert card.metrics == {"accuracy": repo["accuracy"]}
    assert len(card.params_hash) == 64 and card.git_revision  # a commit or "unknown"
    assert {file.name: file.format for file in card.files} == {
        "savedmodel/digits/3": "savedmodel", "model.onnx": "onnx",
        "model_float.tflite": "litert", "model_dynamic_range.tflite": "litert"}
    for file in card.files:
        assert file.bytes == formats_size(export / file.name) > 0
    onnx = next(file for file in card.files if file.format == "onnx").interface
    assert onnx["inputs"] == {"pixels": {"dtype": "uint8", "shape": [-1, 8, 8, 1]}}
    assert onnx["outputs"] == {"probabilities": {"dtype": "float32", "shape": [-1, 10]}}
    # One summary line per format and per other size, then the full-test line and the end.
    lines = repo["printed"].splitlines()
    assert len(lines) == 5 + 2 + 2 and all(line.startswith("digits: ") for line in lines)
    assert not list((repo["root"] / "models/digits").glob(".export.tmp-*"))


def formats_size(path: Path) -> int:
    from cnnpipe.export.card import size_in_bytes

    return size_in_bytes(path)


def test_the_report_holds_every_bound_and_the_full_test_accuracy(repo):
    report = json.loads((repo["root"] / "reports/export/digits.json").read_text())
    assert report["sample"]["images"] == 200 and report["sample"]["of"] == 250
    found = report["formats"]
    for name, bound in parity.MAX_DIFF.items():
        assert found[name]["max_abs_diff"] <= bound, name
        assert found[name]["bound"] == {"max_abs_diff": bound}
    # The SavedModel runs the very graph of model.keras: not merely close.
    assert found["savedmodel_uint8"]["top1_agreement"] == 1.0
    assert found["litert_dynamic_range"]["top1_agreement"] >= 0.99
    assert [size["size"] for size in report["other_sizes"]["sizes"]] == ["16x16", "12x20"]
    for size in report["other_sizes"]["sizes"]:
        assert size["images"] == 200 and size["top1_agreement"] >= 0.99
    full = report["quantized_full_test"]
    assert full["images"] == 250
    assert full["keras_accuracy"] == pytest.approx(repo["accuracy"])
    assert full["keras_accuracy"] > 0.8  # trained, not at chance: the agreement means something
    markdown = (repo["root"] / "reports/export/digits.md").read_text()
    assert "| LiteRT dynamic-range quantized |" in markdown and "| 12x20 | 200 |" in markdown


def test_saved_model_cli_shows_both_signatures(repo):
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir",
         str(repo["savedmodel"]), "--all"],
        capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    ).stdout
    default = shown.split("signature_def['serving_default']:", 1)[1].split("signature_def[", 1)[0]
    assert "inputs['images']" in default and "dtype: DT_STRING" in default
    assert "shape: (-1)" in default
    pixels = shown.split("signature_def['serving_uint8']:", 1)[1].split("signature_def[", 1)[0]
    assert "inputs['pixels']" in pixels and "dtype: DT_UINT8" in pixels
    assert "shape: (-1, 8, 8, 1)" in pixels
    for block in (default, pixels):
        for output in ("probabilities", "classes", "predicted_class"):
            assert f"outputs['{output}']" in block


FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
encoded = [open(path, "rb").read() for path in sys.argv[2:]]
outputs = loaded.signatures["serving_default"](images=tf.constant(encoded))
print(json.dumps({
    "probabilities": outputs["probabilities"].numpy().tolist(),
    "predicted": [name.decode() for name in outputs["predicted_class"].numpy()],
    "classes": [name.decode() for name in outputs["classes"].numpy()[0]],
    "cnnpipe_modules": sorted(name for name in sys.modules if name.startswith("cnnpipe")),
}))
"""


def stored_size_pngs(folder: Path, gray: np.ndarray) -> list[Path]:
    """PNGs at the stored size in the modes users send: gray, colour, gray and colour with
    transparency, and a palette with a transparent entry."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(image[..., 0]) for image in gray[:12]]
    images += [Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)) for _ in range(3)]
    images += [Image.fromarray(rng.integers(0, 256, (8, 8, 4), np.uint8)) for _ in range(3)]
    images += [Image.fromarray(rng.integers(0, 256, (8, 8, 2), np.uint8), mode="LA")]
    palette = Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).quantize(16)
    palette.info["transparency"] = 0
    images.append(palette)
    folder.mkdir()
    paths = []
    for number, image in enumerate(images):
        path = folder / f"{number:02d}_{image.mode}.png"
        image.save(path, **({"transparency": 0} if image.mode == "P" else {}))
        paths.append(path)
    return paths


def test_a_fresh_process_with_only_tensorflow_classifies_pngs_as_cnnpipe_predict(repo, tmp_path):
    paths = stored_size_pngs(tmp_path / "pngs", repo["test"])
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(repo["savedmodel"]), *map(str, paths)],
        capture_output=True, text=True, check=True, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
    )
    served = json.loads(result.stdout)
    assert served["cnnpipe_modules"] == []
    trained = TrainedVariant.load(repo["root"] / "models/digits")
    predictions, _ = classify_files(trained, [str(path) for path in paths])
    expected = np.stack([prediction.probabilities for prediction in predictions])
    np.testing.assert_allclose(np.array(served["probabilities"]), expected, atol=1e-5, rtol=0)
    assert served["predicted"] == [DIGITS[p.predicted] for p in predictions]
    assert served["classes"] == list(DIGITS)


def binary_variant(folder: Path, crop: bool) -> TrainedVariant:
    keras.utils.set_random_seed(1)
    inputs = keras.Input(SHAPE, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    loading = ImageLoading(image_size=(8, 8), channels=1, crop_to_aspect_ratio=crop)
    return TrainedVariant.load(save_variant(folder, model, ("cat", "dog"), loading))


def test_a_sigmoid_head_gives_two_columns_in_every_format(repo, tmp_path):
    import tensorflow as tf

    trained = binary_variant(tmp_path / "binary", crop=True)
    pixels = repo["test"][:16]
    expected = trained.predict(pixels)
    signatures = tf.saved_model.load(str(write_savedmodel(trained, tmp_path / "sm"))).signatures
    served = signatures["serving_uint8"](pixels=tf.constant(pixels))
    assert served["probabilities"].shape == (16, 2)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert served["classes"].numpy().tolist() == [[b"cat", b"dog"]] * 16
    wrapper = formats.probability_model(trained)
    onnx = formats.OnnxRunner(formats.write_onnx(wrapper, tmp_path / "m.onnx"))(pixels)
    np.testing.assert_allclose(onnx, expected, atol=1e-5)
    litert = formats.write_litert(wrapper, tmp_path / "m.tflite", quantized=False)
    np.testing.assert_allclose(formats.LiteRTRunner(litert)(pixels), expected, atol=1e-3)
    # A crop-trained card: a wide PNG loses its sides, in the graph as in cnnpipe predict.
    wide = tmp_path / "wide.png"
    Image.fromarray(np.tile(repo["test"][0][..., 0], (1, 2))).save(wide)
    predictions, _ = classify_files(trained, [str(wide)])
    cropped = signatures["serving_default"](images=tf.constant([wide.read_bytes()]))
    np.testing.assert_allclose(cropped["probabilities"].numpy()[0],
                               predictions[0].probabilities, atol=1e-5)


def test_a_missed_bound_fails_in_one_line_and_keeps_the_previous_export(repo, tmp_path,
                                                                       monkeypatch):
    root = repo["root"]
    export = tmp_path / "export"
    export.mkdir()
    (export / "previous.txt").write_text("the export a server is serving")
    request = ExportRequest(
        model_folder=root / "models/digits", export_folder=export,
        test_split=root / "data/prepared/test", report_json=tmp_path / "report.json",
        report_markdown=tmp_path / "report.md", metrics=root / "metrics/digits.json",
        parity_images=200)
    monkeypatch.setitem(parity.MIN_AGREEMENT, "litert_dynamic_range", 1.5)
    with pytest.raises(DataError) as failed:
        export_variant(request)
    message = str(failed.value)
    assert "\n" not in message
    assert "litert_dynamic_range top-1 agreement" in message and "< 1.5" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]  # no report, no temp
    assert [path.name for path in export.iterdir()] == ["previous.txt"]


def test_params_refuse_an_export_variant_not_under_models():
    from cnnpipe.params import parse_params
    from cnnpipe.params.schema import read_yaml

    raw = read_yaml(ROOT / "params.yaml")
    raw["export"] = {**raw["export"], "variants": ["regularized_cnn", "best_cnn"]}
    with pytest.raises(ConfigError) as refused:
        parse_params(raw)
    assert str(refused.value).startswith("export.variants: `best_cnn` is not a variant under")
    raw["export"] = {**raw["export"], "variants": ["regularized_cnn"], "parity_images": 50}
    with pytest.raises(ConfigError, match="export.parity_images"):
        parse_params(raw)


def test_every_exported_variant_is_a_registered_artifact():
    """`artifacts:` has no foreach: a variant added to export.variants needs its own entry."""
    exported = yaml.safe_load((ROOT / "params.yaml").read_text())["export"]["variants"]
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert exported
    for variant in exported:
        entry = artifacts.get(variant)
        assert entry, f"dvc.yaml artifacts: no entry for the exported variant {variant}"
        assert entry["path"] == f"models/{variant}/export" and entry["type"] == "model"
        assert entry["desc"].strip() and entry["labels"]


@pytest.mark.parametrize("arguments, says", [
    (["no_such_variant"], "no trained variant `no_such_variant`"),
    (["digits", "--version", "0"], "--version: input should be greater than 0"),
    (["digits", "--parity-images", "20"], "--parity-images: input should be greater than"),
])
def test_cnnpipe_export_refuses_bad_arguments_in_one_line(repo, capsys, arguments, says):
    status = cli.main(["export", *arguments, "--models-dir", str(repo["root"] / "models"),
                       "--params", str(ROOT / "params.yaml")])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and says in error, error
