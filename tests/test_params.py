import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnpipe.params import load_params, parse_params, with_overrides
from cnnpipe.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value):
    raw = copy.deepcopy(DEFAULTS)
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


def test_committed_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.seed == 42
    assert "simple_cnn" in params.models
    assert params.models["simple_cnn"].filters == (32, 64, 64)


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.epochs", -1, "train.epochs: input should be greater than 0; got -1"),
        ("train.epochs", 0, "train.epochs: input should be greater than 0; got 0"),
        ("train.epochs", "ten", "train.epochs: input should be a valid integer; got 'ten'"),
        ("train.epochs", 2.5, "train.epochs: input should be a valid integer; got 2.5"),
        ("train.learning_rate", 0, "train.learning_rate: input should be greater than 0"),
        ("train.learning_rate", "1e-4", "train.learning_rate: input should be a valid number"),
        ("train.batch_size", True, "train.batch_size: input should be a valid integer; got True"),
        ("train.epoch", 3, "unknown key `train.epoch` in params.yaml (did you mean `epochs`?)"),
        ("data.val_fraction", 0.0, "data.val_fraction: input should be greater than 0"),
        ("data.val_fraction", 1.5, "data.val_fraction: input should be less than 1"),
        ("data.source", "imagenet", "data.source: input should be 'fashion_mnist'"),
        ("preprocess.normalization", "zscore", "'unit', 'symmetric' or 'standardize'"),
        ("preprocess.channels", 2, "preprocess.channels: input should be 1 or 3; got 2"),
        ("preprocess.image_size", 4, "preprocess.image_size: input should be greater than or "
         "equal to 8; got 4"),
        ("seed", -3, "seed: input should be greater than or equal to 0; got -3"),
        ("colour", "red", "unknown key `colour`"),
        ("models.simple_cnn.architecture", "resnet9000", "must be one of: bn_gap_cnn, "
         "inception_attention"),
        ("models.augmented_cnn.architecture", "augmented_cnn", "models.augmented_cnn.architecture: "
         "augmented_cnn is now bn_gap_cnn with an `augmentation:` entry (the same layers); set "
         "architecture: bn_gap_cnn and keep the variant's augmentation"),
        ("models.augmented_cnn.augmentation", {"seed": 1}, "unknown key "
         "`models.augmented_cnn.augmentation.seed` in params.yaml"),
        ("models.simple_cnn.filterz", [8, 8, 8], "`models.simple_cnn.filterz` in params.yaml "
         "(did you mean `filters`?)"),
        ("models.simple_cnn.epochs", 0, "models.simple_cnn.epochs: input should be greater than 0"),
        ("models.simple_cnn.train_images", -5, "models.simple_cnn.train_images: input should be "
         "greater than or equal to 0; got -5"),
        ("models.Bad-Name", {"architecture": "simple_cnn"}, "lower-case identifiers"),
        ("models.compare", {"architecture": "simple_cnn"}, "taken by the compare stage"),
        # The values that used to pass every stage until train@<variant> ran:
        ("models.simple_cnn.dense_units", -1, "models.simple_cnn.dense_units: input should be "
         "greater than 0; got -1"),
        ("models.regularized_cnn.conv_dropout", 1.5, "models.regularized_cnn.conv_dropout: "
         "input should be less than 1; got 1.5"),
        ("models.mobilenet_transfer.weights", "imagnet", "models.mobilenet_transfer.weights: "
         "must be none, imagenet, pretrain or the path of a .weights.h5 file; got 'imagnet'"),
        ("models.augmented_cnn.augmentation", {"rotation": 5}, "models.augmented_cnn."
         "augmentation.rotation: input should be less than or equal to 1; got 5"),
        ("models.simple_cnn.fine_tune_epochs", 2, "unknown key "
         "`models.simple_cnn.fine_tune_epochs`"),
        ("models.simple_cnn.filters", [], "models.simple_cnn.filters: tuple should have at least "
         "1 item"),
        ("models.mobilenet_transfer.image_size", 16, "models.mobilenet_transfer.image_size: input "
         "should be greater than or equal to 32; got 16"),
        ("models.simple_cnn.weight_decay", 0.0, "models.simple_cnn: optimizer adamw needs "
         "weight_decay > 0"),
        ("models.simple_cnn.lr_schedule", "warp", "models.simple_cnn.lr_schedule: input should be "
         "'constant', 'cosine' or 'one_cycle'"),
        ("train.label_smoothing", 0.9, "train.label_smoothing: input should be less than or equal "
         "to 0.5"),
    ],
)
def test_bad_params_stop_with_a_message_naming_the_key(path, value, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_change(path, value))
    text = str(excinfo.value)
    assert message in text
    assert "\n" not in text


def test_imagenet_weights_need_a_published_width():
    raw = with_changes({"models.mobilenet_transfer.weights": "imagenet",
                        "models.mobilenet_transfer.alpha": 0.4})
    with pytest.raises(ConfigError, match="alpha 0.4 has no ImageNet weights"):
        parse_params(raw)


def test_a_removed_key_says_where_the_setting_went(monkeypatch):
    from cnnpipe.params import schema

    monkeypatch.setitem(schema.REMOVED_KEYS, "models.*.value_range",
                        "the preprocess stage records it")
    with pytest.raises(ConfigError, match=r"^`models.simple_cnn.value_range` was removed; the "
                       "preprocess stage records it$"):
        parse_params(with_change("models.simple_cnn.value_range", [0, 1]))


def test_numbers_are_read_as_dvc_reads_them(tmp_path):
    """YAML 1.2, as DVC: `1e-4` is a number (PyYAML's YAML 1.1 reads it as a string)."""
    path = tmp_path / "params.yaml"
    text = re.sub(r"(?m)^(  learning_rate:) [0-9.]+", r"\1 1e-4", (ROOT / "params.yaml").read_text())
    assert "\n  learning_rate: 1e-4" in text
    path.write_text(text)
    assert load_params(path).train.learning_rate == 0.0001


def test_every_default_is_filled_in_the_resolved_settings():
    from cnnpipe.params import resolved_configs
    from cnnpipe.models.zoo.simple_cnn import SimpleCnn

    raw = with_change("models.simple_cnn", {"architecture": "simple_cnn"})
    configs = resolved_configs(parse_params(raw))
    simple = configs["resolved/train/simple_cnn.json"]
    assert simple["hyperparameters"] == {
        name: field.default for name, field in SimpleCnn.model_fields.items()
        if name not in SimpleCnn.training_keys()
    } | {"filters": [32, 64, 64]}
    for key in ("shuffle_buffer_mb", "min_steps_per_epoch", "min_images_seen", "class_weight"):
        assert simple["train"][key] == DEFAULTS["train"][key], key
    assert configs["resolved/prepare.json"]["data"]["images"]["max_pixels"] == 50_000_000


def test_transfer_pairs_are_decided_from_the_weights_setting_at_the_params_stage():
    from cnnpipe.params import resolved_configs
    from cnnpipe.params.resolve import transfer_pairs

    params = parse_params(DEFAULTS)
    assert transfer_pairs(params) == [
        {"pretrained": "mobilenet_transfer", "scratch": "mobilenet_scratch", "source": "rotation"},
    ]
    compare = resolved_configs(params)["resolved/compare.json"]
    assert compare["transfer_pairs"] == transfer_pairs(params)
    # What compare needs of each variant, and nothing that would re-run it for nothing.
    assert compare["variants"] == {
        name: {"architecture": variant.architecture} for name, variant in params.models.items()
    }
    assert compare["variants"]["augmented_cnn"] == {"architecture": "bn_gap_cnn"}

    raw = with_changes({"models.mobilenet_transfer.weights": "imagenet"})
    raw["models"]["mobilenet_tiny"] = {**raw["models"]["mobilenet_scratch"], "alpha": 0.5}
    assert transfer_pairs(parse_params(raw)) == [
        {"pretrained": "mobilenet_transfer", "scratch": "mobilenet_scratch", "source": "imagenet"},
        {"pretrained": "mobilenet_transfer", "scratch": "mobilenet_tiny", "source": "imagenet"},
    ]
    # Without a from-scratch twin there is nothing to compare against.
    raw = copy.deepcopy(DEFAULTS)
    del raw["models"]["mobilenet_scratch"]
    assert transfer_pairs(parse_params(raw)) == []


def test_a_weights_file_pairs_as_a_weights_file(tmp_path):
    from cnnpipe.params.resolve import transfer_pairs

    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"")
    params = parse_params(with_change("models.mobilenet_transfer.weights", str(weights)))
    assert [pair["source"] for pair in transfer_pairs(params)] == ["weights file"]
    with pytest.raises(ConfigError, match="models.mobilenet_transfer.weights: names a weights "
                       "file that does not exist"):
        parse_params(with_change("models.mobilenet_transfer.weights",
                                 str(tmp_path / "no.weights.h5")))


def test_the_removed_shuffle_buffer_key_points_to_its_replacement():
    raw = with_change("train.shuffle_buffer", 60000)
    with pytest.raises(ConfigError, match=r"^`train.shuffle_buffer` was removed; use "
                                          r"`train.shuffle_buffer_mb`"):
        parse_params(raw)


def test_class_weight_takes_none_or_balanced():
    assert parse_params(with_change("train.class_weight", "balanced")).train.class_weight == "balanced"
    with pytest.raises(ConfigError, match="class_weight"):
        parse_params(with_change("train.class_weight", "inverse"))


def test_unknown_architecture_lists_known_names():
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_change("models.simple_cnn.architecture", "resnet9000"))
    assert "simple_cnn" in str(excinfo.value)


def test_variant_overrides_shared_training_settings():
    from cnnpipe.params.resolve import train_config

    params = parse_params(with_change("models.simple_cnn.epochs", 2))
    settings = train_config(params, "simple_cnn")["train"]
    assert settings["epochs"] == 2
    assert settings["batch_size"] == params.train.batch_size


def test_a_variant_with_a_schedule_of_its_own_drops_the_shared_warm_up():
    from cnnpipe.params.resolve import train_config

    raw = with_change("train.lr_schedule", "cosine")
    raw["train"]["warmup_epochs"] = 0.5
    raw["models"]["simple_cnn"]["lr_schedule"] = "one_cycle"
    params = parse_params(raw)
    assert train_config(params, "simple_cnn")["train"]["warmup_epochs"] == 0.0
    assert train_config(params, "bn_gap_cnn")["train"]["warmup_epochs"] == 0.5
    # Set on the variant itself, a warm-up its schedule ignores is a mistake.
    raw["models"]["simple_cnn"]["warmup_epochs"] = 1.0
    with pytest.raises(ConfigError, match="models.simple_cnn: warmup_epochs applies to "
                       "lr_schedule cosine only"):
        parse_params(raw)


def test_params_stage_prints_one_line_and_exits_2_on_bad_params(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change("train.epochs", -1)))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "params.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.epochs: input should be greater than 0; got -1"
    assert not (tmp_path / "resolved").exists()


def with_changes(changes: dict):
    raw = copy.deepcopy(DEFAULTS)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.source": "imagenet"}, "data.source: input should be 'fashion_mnist', 'image_folder', "
         "'archive', 'mnist', 'cifar10' or 'cifar100'; got 'imagenet'"),
        ({"data.images.image_size": [4, 64]},
         "data.images.image_size[0]: input should be greater than or equal to 8; got 4"),
        ({"data.images.image_size": 64}, "data.images.image_size: input should be a valid tuple; got 64"),
        ({"data.images.image_size": [64]}, "data.images.image_size: too few values, nothing at [1]"),
        ({"data.images.image_size": [64, "x"]}, "data.images.image_size[1]: input should be a valid integer; got 'x'"),
        ({"data.images.channels": 4}, "data.images.channels: input should be 1 or 3; got 4"),
        ({"data.classes": ["cat"]}, "data.classes: tuple should have at least 2 items"),
        ({"data.classes": ["cat", "cat"]}, "data: classes must not list a class twice"),
        ({"data.classes": "cat"}, "data.classes: input should be a valid tuple; got 'cat'"),
        ({"data.classes": ["cat", 3]}, "data.classes[1]: input should be a valid string; got 3"),
        ({"data.test_fraction": 0}, "data.test_fraction: input should be greater than 0; got 0"),
        ({"data.val_fraction": 0.5, "data.test_fraction": 0.5},
         "data: val_fraction + test_fraction must be < 1"),
        ({"data.max_unreadable_fraction": 1.5},
         "data.max_unreadable_fraction: input should be less than or equal to 1; got 1.5"),
        ({"data.max_label_conflict_fraction": -0.1},
         "data.max_label_conflict_fraction: input should be greater than or equal to 0; got -0.1"),
        ({"data.min_images_per_class": 0}, "data.min_images_per_class: input should be greater than 0; got 0"),
        ({"data.source": "archive"},
         "data: archive.path_or_url is required when source is archive"),
        ({"data.archive.path_or_url": "https://example.org/x.zip"},
         "data.archive: sha256 is required when path_or_url is a URL"),
        ({"data.archive.path_or_url": "ftp://example.org/x.zip", "data.archive.sha256": "a" * 64},
         "must be a local path or an http(s) URL"),
        ({"data.archive.sha256": "abc"}, "data.archive.sha256: string should match pattern"),
        ({"data.archive.max_extracted_mb": 0}, "data.archive.max_extracted_mb: input should be greater than 0; got 0"),
        ({"data.image_folder.pth": "x"}, "unknown key `data.image_folder.pth` in params.yaml (did you mean `path`?)"),
        ({"data.source": "image_folder"}, "data: input must be `data/images` (image_folder.path) "
         "when source is image_folder, so that dvc status sees it change; got `resolved/prepare.json`"),
        ({"data.source": "archive", "data.archive.path_or_url": "pets.zip", "data.input": "data/images"},
         "data: input must be `pets.zip` (archive.path_or_url) when source is archive"),
        ({"data.input": "data/images"}, "data: input must be `resolved/prepare.json`: source "
         "fashion_mnist has no local input, and prepare must not depend on `data/images`"),
        ({"data.download.max_mb": 0}, "data.download.max_mb: input should be greater than 0; got 0"),
        ({"data.download.stall_seconds": -1}, "data.download.stall_seconds: input should be greater than 0"),
        ({"data.download.deadline_seconds": "1h"}, "data.download.deadline_seconds: input should be a valid number"),
    ],
)
def test_bad_data_source_params_stop_with_one_line(changes, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_changes(changes))
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_data_source_params_are_typed():
    params = parse_params(with_changes({
        "data.source": "archive",
        "data.archive.path_or_url": "https://example.org/pets.tar.gz",
        "data.archive.sha256": "ab" * 32,
        "data.classes": ["dog", "cat"],
        "data.images.image_size": [32, 48],
    }))
    assert params.data.classes == ("dog", "cat")
    assert params.data.images.image_size == (32, 48)
    assert params.data.images.channels is None  # follows the data
    assert params.data.test_fraction == 0.2
    assert params.data.archive.max_members == 200_000
    assert parse_params(DEFAULTS).data.classes is None


def test_data_input_names_the_local_input_of_the_active_source():
    folder = parse_params(with_changes(
        {"data.source": "image_folder", "data.image_folder.path": "photos", "data.input": "./photos/"}
    ))
    assert folder.data.input == "./photos/"  # the same path, written another way
    archive = with_changes({"data.source": "archive", "data.archive.path_or_url": "/srv/pets.tgz",
                            "data.input": "/srv/pets.tgz"})
    assert parse_params(archive).data.download.max_mb == 4096
    url = with_changes({"data.source": "archive", "data.archive.sha256": "ab" * 32,
                        "data.archive.path_or_url": "https://example.org/pets.tgz"})
    assert parse_params(url).data.input == "resolved/prepare.json"  # its sha256 is a setting


def test_overrides_set_nested_keys_and_refuse_missing_sections():
    changed = with_overrides(DEFAULTS, [("models.simple_cnn.dense_units", 12)])
    assert changed["models"]["simple_cnn"]["dense_units"] == 12
    assert DEFAULTS["models"]["simple_cnn"]["dense_units"] == 64  # the input is not mutated
    with pytest.raises(ConfigError, match="cannot set `modles.simple_cnn.epochs`"):
        with_overrides(DEFAULTS, [("modles.simple_cnn.epochs", 3)])


def full_profile_overrides() -> list[tuple[str, object]]:
    """The `-S key=value` pairs of the `dvc exp run -n full` command in docs/variants.md."""
    readme = (ROOT / "docs/variants.md").read_text()
    block = readme[readme.index("dvc exp run -n full"):]
    block = block[: block.index("```")]
    pairs = re.findall(r"-S '?([\w.]+)=([^'\s]+)'?", block)
    return [(key, yaml.safe_load(value)) for key, value in pairs]


def test_documented_full_profile_is_valid_and_lifts_every_variant_epoch_limit():
    params = parse_params(with_overrides(DEFAULTS, full_profile_overrides()))
    for name, variant in params.models.items():
        target_epochs = (variant.epochs or params.train.epochs) + getattr(
            variant, "fine_tune_epochs", 0)
        assert target_epochs >= 30, name
        assert variant.train_images == 0, name


# --- bounds on sizes and memory: refused at load, never an OOM kill in a later stage -------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"preprocess.image_size": 10000},
         "preprocess.image_size: input should be less than or equal to 2048; got 10000"),
        ({"data.source": "image_folder", "data.images.image_size": [10000, 10000]},
         "data.images.image_size[0]: input should be less than or equal to 2048; got 10000"),
        ({"models.mobilenet_transfer.image_size": 4096},
         "models.mobilenet_transfer.image_size: input should be less than or equal to 2048"),
        # Each size passes on its own; the batch at that size does not fit.
        ({"preprocess.image_size": 1024, "train.max_memory_gb": 64},
         "models.simple_cnn: training needs about 102.6 GB (batch 128 at 1024x1024x1: "
         "activations 97.1 GB, weights and Adam state 4.2 GB), over the 64.0 GB of "
         "train.max_memory_gb; lower batch_size, the image size or the widths"),
        ({"models.overfit_cnn.filters": [512, 512], "models.overfit_cnn.batch_size": 4096,
          "train.max_memory_gb": 16}, "models.overfit_cnn: training needs about 35.6 GB"),
        ({"train.max_memory_gb": 1}, "over the 1.0 GB of train.max_memory_gb"),
        ({"train.max_memory_gb": 0}, "train.max_memory_gb: input should be greater than 0"),
    ],
)
def test_sizes_and_memory_beyond_bounds_are_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_changes(changes))
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"preprocess.image_size": 8}, "models.simple_cnn: the images are too small for this "
         "architecture: the feature map before a 2x2 pool is 1x1, smaller than its 2x2 window; "
         "use larger images (preprocess.image_size) or fewer blocks"),
        ({"preprocess.image_size": 16}, "models.simple_cnn: the images are too small for this "
         "architecture: the feature map before a 3x3 valid conv is 2x2"),
        ({"data.source": "image_folder", "data.input": "data/images",
          "data.images.image_size": [8, 64]}, "models.simple_cnn: the images are too small"),
        ({"preprocess.image_size": 32, "models.regularized_cnn.filters": [8] * 6},
         "models.regularized_cnn: the images are too small for this architecture: the feature "
         "map before a 2x2 pool is 1x1"),
    ],
)
def test_images_too_small_for_a_variant_are_refused_at_load_naming_it(changes, message):
    """It used to pass every stage and fail only in train@<variant>, after prepare and
    preprocess had run; the registration's walk refuses it when params load."""
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_changes(changes))
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_images_just_large_enough_for_every_default_variant_load():
    # simple_cnn's three valid 3x3 convs and two pools need 18 pixels; 32 (MobileNetV2's
    # resize) and the rest need fewer.
    assert parse_params(with_changes({"preprocess.image_size": 18})).preprocess.image_size == 18


def test_the_memory_limit_defaults_to_this_machine_and_stays_out_of_resolved_settings():
    from cnnpipe.params import resolved_configs

    big = with_changes({"preprocess.image_size": 2048})  # about 400 GB
    with pytest.raises(ConfigError, match=r"of this machine's memory \(train.max_memory_gb: null\)"):
        parse_params(big)
    # An explicit limit lets the same file through, and the resolved train settings (what
    # train@ stages depend on) do not change with it or with the machine.
    big["train"]["max_memory_gb"] = 1e6
    configs = resolved_configs(parse_params(big))
    assert "max_memory_gb" not in configs["resolved/train/simple_cnn.json"]["train"]


def test_the_memory_estimate_follows_batch_size_and_image_size():
    from cnnpipe.params.memory import training_memory

    settings = parse_params(DEFAULTS).models["simple_cnn"]

    def total(side, batch):
        return training_memory(settings, (side, side, 3), (side, side, 3), batch, 10).total

    assert total(224, 128) > total(224, 32) > total(112, 32) > total(28, 32)
    # Activations dominate at size: four times the pixels, about four times the memory.
    growth = (total(448, 32) - total(28, 32)) / (total(224, 32) - total(28, 32))
    assert 3.5 < growth < 4.5
    # A measured point (FACTS.md): simple_cnn at 224x224, batch 128, peaked at 4.9 GiB.
    assert 0.5 < total(224, 128) / (4.9 * 2**30) < 3


def test_the_memory_estimate_follows_the_architecture_input_needs_and_augmentation():
    """MobileNetV2 works at its own image_size whatever the preprocessing; each random layer
    of the augmentation is one more stored tensor."""
    from cnnpipe.models import get_architecture
    from cnnpipe.params.memory import training_memory

    params = parse_params(DEFAULTS)
    mobilenet = params.models["mobilenet_transfer"]
    small = training_memory(mobilenet, (28, 28, 1), (28, 28, 1), 32, 10)
    large = training_memory(mobilenet, (28, 28, 1), (224, 224, 3), 32, 10)
    assert small.model_shape == large.model_shape == (32, 32, 3)
    assert small.weights == large.weights
    wide = training_memory(get_architecture("mobilenet_transfer").settings({"image_size": 96}),
                           (28, 28, 1), (28, 28, 1), 32, 10)
    assert wide.model_shape == (96, 96, 3) and wide.activations > 5 * small.activations

    gap = get_architecture("bn_gap_cnn")
    hp = params.models["augmented_cnn"].hyperparameters()
    augmented = gap.settings(hp)
    plain = gap.settings({**hp, "augmentation": None})
    with_aug = training_memory(augmented, (28, 28, 1), (28, 28, 1), 32, 10)
    without = training_memory(plain, (28, 28, 1), (28, 28, 1), 32, 10)
    assert with_aug.weights == without.weights
    # One flip layer: one more 28x28x1 float32 tensor per image.
    assert with_aug.activations - without.activations == 28 * 28 * 32 * 4


def test_bad_params_are_refused_by_the_stage_without_tensorflow_and_nothing_deleted(tmp_path):
    """The params stage is quick because it never imports TensorFlow: checked by putting a
    `tensorflow` that refuses to import first on the path (its time is in bench/RESULTS.md)."""
    blocker = tmp_path / "blocker" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('the params stage imported TensorFlow')\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_changes({
        "data.source": "image_folder", "data.images.image_size": [10000, 10000]})))
    resolved = tmp_path / "resolved" / "prepare.json"
    resolved.parent.mkdir()
    resolved.write_text("{}")  # a previous run's settings
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "params.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT / 'src'}"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: data.images.image_size[0]: input should be less "
                                     "than or equal to 2048; got 10000")
    assert resolved.read_text() == "{}"


# --- the memory limit a container sets ----------------------------------------------------

GIB = 2**30


def _fake_cgroups(tmp_path, files: dict[str, str], membership: str):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content + "\n")
    (tmp_path / "proc_cgroup").write_text(membership + "\n")
    return tmp_path / "root", tmp_path / "proc_cgroup"


def test_a_nested_cgroup_v2_limit_is_found_above_the_process_cgroup(tmp_path):
    from cnnpipe.params.memory import memory_limit

    root, proc = _fake_cgroups(tmp_path, {
        "root/memory.max": "max", "root/box/memory.max": str(6 * GIB),
        "root/box/job/memory.max": "max"}, "0::/box/job")
    limit = memory_limit(root, proc)
    assert limit.bytes == 6 * GIB
    assert limit.source == f"the container's limit (cgroup v2 {root}/box/memory.max)"


def test_a_cgroup_v1_limit_counts_also_when_the_container_mounts_its_own_as_the_root(tmp_path):
    from cnnpipe.params.memory import memory_limit

    membership = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/"
    root, proc = _fake_cgroups(tmp_path, {
        "root/memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
        "root/memory/docker/abc/memory.limit_in_bytes": str(6 * GIB)}, membership)
    assert memory_limit(root, proc).bytes == 6 * GIB
    # Inside the container the host's path is absent: the mounted root holds the limit.
    namespaced = tmp_path / "ns"
    root, proc = _fake_cgroups(namespaced, {
        "root/memory/memory.limit_in_bytes": str(5 * GIB)}, membership)
    limit = memory_limit(root, proc)
    assert limit.bytes == 5 * GIB and "cgroup v1" in limit.source


def test_the_process_own_address_space_limit_counts(tmp_path, monkeypatch):
    import resource

    from cnnpipe.params.memory import memory_limit

    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (
        (2 * GIB, resource.RLIM_INFINITY) if which == resource.RLIMIT_AS else real(which)))
    limit = memory_limit(tmp_path / "none", tmp_path / "none")
    assert limit.bytes == 2 * GIB and limit.source == "this process's RLIMIT_AS (ulimit)"


def test_a_container_limit_below_the_estimate_refuses_the_variant_and_names_the_limit(
    tmp_path, monkeypatch
):
    """What an OOM kill mid-run used to be: a 6 GiB cgroup-v1 container, and the default
    variants at a size that needs more."""
    from cnnpipe.params import memory

    root, proc = _fake_cgroups(tmp_path, {
        "root/memory/memory.limit_in_bytes": str(6 * GIB)}, "4:memory:/")
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    with pytest.raises(ConfigError, match=r"over the 6\.4 GB of the container's limit \(cgroup v1 "):
        parse_params(with_changes({"preprocess.image_size": 256}))
