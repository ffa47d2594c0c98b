"""An architecture defined here alone, in this test module, runs through the pipeline: the
same in-process functions each stage's ``main`` calls, with no other file edited.

It checks that a registration is the one place an architecture lives: params validation
(its schema), the memory estimate (its walk), the build (its trunk on the shared skeleton),
training, the learning-rate sweep, evaluation and ``TrainedVariant.load(...).predict``.
"""

import importlib.util
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from pydantic import Field

from cnnpipe.core.errors import ConfigError
from cnnpipe.models import Architecture, registered
from cnnpipe.models.registry import plain_trunk
from cnnpipe.models.schema import PositiveInt, Rate, Variant
from fixtures import write_digits_folder

ROOT = Path(__file__).resolve().parents[1]


class ToyCnn(Variant):
    architecture: Literal["toy_cnn"]
    width: PositiveInt = Field(16, description="filters of the one conv")
    dropout: Rate = Field(0.1, description="before the head")


def _toy_layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import valid_conv

    x = valid_conv(x, hp.width, 3, "conv1", input_shape)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dropout(hp.dropout, name="dropout")(x)


def _toy_walk(walk, hp):
    walk.conv(hp.width, 3, padding="valid", activation=True)
    walk.global_pool()
    walk.elementwise()


TOY = Architecture(
    name="toy_cnn", schema=ToyCnn, trunk=plain_trunk(_toy_layers), walk=_toy_walk,
    tiny={"width": 4}, description="one conv and global average pooling",
)


def stage(name: str):
    """``stages/<name>.py`` imported in this process (its ``main`` is what DVC runs)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_params(**toy) -> dict:
    return {
        "seed": 0,
        "data": {"source": "image_folder", "input": "images",
                 "image_folder": {"path": "images"}, "images": {"image_size": [16, 16]},
                 "classes": ["0", "1", "2"]},
        "train": {"epochs": 20, "min_images_seen": 0, "learning_rate": 0.01},
        "evaluate": {"tta": "none"},
        "models": {"toy": {"architecture": "toy_cnn", **toy}},
    }  # fmt: skip


@pytest.fixture
def toy_repo(tmp_path):
    write_digits_folder(tmp_path / "images", size=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(toy_params()))
    previous = Path.cwd()
    os.chdir(tmp_path)
    with registered(TOY):
        try:
            yield tmp_path
        finally:
            os.chdir(previous)


def test_params_validation_refuses_a_bad_toy_value_in_one_line(toy_repo):
    from cnnpipe.params import parse_params

    with pytest.raises(ConfigError) as refused:
        parse_params(toy_params(width=0))
    assert str(refused.value).startswith("models.toy.width: input should be greater than 0")
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"^unknown key `models.toy.widht` .*did you mean `width`"):
        parse_params(toy_params(widht=4))


def test_the_memory_estimate_walks_the_toy_layers(toy_repo):
    from cnnpipe.models.skeleton import build_model
    from cnnpipe.params import parse_params
    from cnnpipe.params.memory import training_memory

    settings = parse_params(toy_params()).models["toy"]
    estimate = training_memory(settings, (16, 16, 1), (16, 16, 1), 32, 3)
    model = build_model("toy_cnn", (16, 16, 1), 3)
    # Weights, gradients and Adam's two moments, four bytes each.
    assert estimate.weights == model.count_params() * 4 * 4
    assert estimate.activations > 0


def test_the_toy_runs_through_every_stage(toy_repo, capsys):
    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet
    from cnnpipe.inference import TrainedVariant
    from cnnpipe.lr_find import run_lr_find

    for name in ("params", "prepare", "preprocess"):
        stage(name).main()
    stage("train").main("toy")
    card = json.loads(layout.model_card("toy").read_text())
    assert card["architecture"] == "toy_cnn" and card["trained_as"]["epochs"] == 20
    sweep = run_lr_find("toy", toy_repo / "lr", start=1e-5, end=10.0, steps=40)
    assert 1e-5 < sweep.suggested < 10.0
    stage("evaluate").main("toy")
    metrics = json.loads(layout.eval_metrics("toy").read_text())
    assert metrics["accuracy"] > 0.6  # chance is 1/3

    trained = TrainedVariant.load(layout.model_dir("toy"))
    test = ShardSet(layout.split_dir("test"))
    probabilities = trained.predict(test.read(range(8)))
    assert probabilities.shape == (8, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert trained.class_names == ("0", "1", "2")
    assert "toy: test accuracy" in capsys.readouterr().out
