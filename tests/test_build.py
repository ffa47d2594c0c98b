"""The one build path (cnnpipe.train.build): the labelled subset, the data-dependent
settings, the initial weights (the pretrain path included) and the model, without a
pipeline run."""

import numpy as np
import pytest

from cnnpipe.core.shards import write_arrays
from cnnpipe.params import parse_params
from cnnpipe.params.resolve import train_config
from cnnpipe.train.build import TrainingData, build_variant, init_weights, train_variant

pytestmark = pytest.mark.minutes(0.8)  # a pretraining and two fine-tunings

CLASSES = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Digits at 32x32 (MobileNetV2's smallest input), three classes, train and val."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < CLASSES)[:240]
    pixels = np.stack([
        np.asarray(Image.fromarray(np.uint8(digits.images[i] * 255 / 16)).resize((32, 32)))
        for i in keep
    ])[..., None]
    labels = digits.target[keep].astype(np.int32)
    root = tmp_path_factory.mktemp("shards")
    return TrainingData(
        train=write_arrays(root / "train", pixels[:192], labels[:192]),
        val=write_arrays(root / "val", pixels[192:], labels[192:]),
        card={"num_classes": CLASSES, "class_names": ["0", "1", "2"]},
        preprocessing={"image_size": [32, 32], "channels": 1, "normalization": "unit"},
    )


def mobilenet_config(**overrides):
    params = parse_params({
        "seed": 3,
        "data": {"source": "mnist", "input": "resolved/prepare.json"},
        "train": {"min_images_seen": 0, "batch_size": 32, "min_steps_per_epoch": 0},
        "models": {"transfer": {
            "architecture": "mobilenet_transfer", "weights": "pretrain", "alpha": 0.35,
            "image_size": 32, "dense_units": 8, "epochs": 1, "pretrain_epochs": 1,
            "fine_tune_epochs": 1, "fine_tune_layers": 5, **overrides,
        }},
    })
    return train_config(params, "transfer")


def backbone_weights(model):
    from cnnpipe.models.finetune import find_backbone

    return [w.numpy() for w in find_backbone(model, "mobilenetv2_base").weights]


def test_pretrain_hands_its_backbone_to_the_target_model(data, tmp_path):
    from cnnpipe.models.skeleton import build_model

    from cnnpipe.train.training import seed_everything

    config = mobilenet_config()
    settings = {**config["train"], "pretrain_batch_size": 32}
    seed_everything(config["seed"])  # as build_variant does first
    path, record = init_weights(config, data, settings, tmp_path)
    assert path.is_file() and record["pretrain_task"] == "rotation"
    assert record["pretrain_epochs_run"] == 1 and 0 <= record["pretrain_val_accuracy"] <= 1
    assert record["pretrain_chance_accuracy"] == 0.25  # four quarter turns
    assert record["pretrain_near_chance"] == (record["pretrain_val_accuracy"] < 0.4)

    plan = build_variant(config, data, variant="transfer")
    # The same seed gives the same source task, so the backbone the plan's model starts
    # from is the one pretraining saved; a random base of the same seed differs from it.
    pretrained = build_model("mobilenet_transfer", (32, 32, 1), CLASSES, preprocessing=data.preprocessing,
                             backbone_weights=path, alpha=0.35, image_size=32, dense_units=8)
    for ours, saved in zip(backbone_weights(plan.model), backbone_weights(pretrained), strict=True):
        np.testing.assert_array_equal(ours, saved)
    scratch = build_variant(mobilenet_config(weights="none"), data, variant="transfer")
    assert any(not np.array_equal(a, b) for a, b in
               zip(backbone_weights(plan.model), backbone_weights(scratch.model), strict=True))
    assert plan.pretraining["pretrain_task"] == "rotation"
    assert plan.trained_as.pretrain_epochs == 1 and plan.trained_as.pretrain_batch_size == 32
    assert not plan.model.get_layer("mobilenetv2_base").trainable  # frozen for the head

    result = train_variant(plan)
    assert result.phases == ["head", "fine_tune"]


def test_the_sweep_skips_the_source_task(data):
    plan = build_variant(mobilenet_config(), data, pretrain=False, variant="transfer")
    assert plan.pretraining == {} and plan.trained_as.pretrain_epochs == 0
    assert plan.model.get_layer("mobilenetv2_base").trainable  # random weights: all train


def test_what_trained_is_what_the_data_allowed(data):
    """A small set gets a smaller batch (min_steps_per_epoch), and the record says so."""
    config = mobilenet_config(weights="none")
    config["train"].update(min_steps_per_epoch=10, batch_size=64, train_images=100)
    plan = build_variant(config, data, variant="transfer")
    assert len(plan.labelled) == 100
    assert plan.trained_as.train_images == 100 and plan.trained_as.batch_size == 16
    assert plan.settings["batch_size"] == 16


def test_the_train_record_says_the_epoch_rule_was_capped(data):
    """100 labelled images would need 300 epochs to show 30,000; the run gets the cap and its
    record says what was asked for, with the validation split early stopping used."""
    from cnnpipe.train.saving import train_record
    from cnnpipe.train.training import MAX_EPOCHS_FOR_MIN_IMAGES, TrainingResult

    config = mobilenet_config(weights="none")
    config["train"].update(min_images_seen=30_000, train_images=100)
    plan = build_variant(config, data, variant="transfer")
    assert plan.settings["epochs"] + plan.settings["fine_tune_epochs"] == MAX_EPOCHS_FOR_MIN_IMAGES
    result = TrainingResult(history={"val_loss": [1.0]}, epochs_run=1, best_epoch=1,
                            train_seconds=1.0, images_seen=100)
    record = train_record(plan, result)
    assert record["epochs_for_min_images_seen"] == 300 and record["epochs_capped"] is True
    assert record["val_images"] == 48
    assert "pretrain_epochs_capped" not in record  # weights: none, no source task
