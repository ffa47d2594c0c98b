import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnpipe.config import load_params, parse_params, with_overrides
from cnnpipe.errors import ConfigError

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
    assert params.models["simple_cnn"].hyperparameters["filters"] == (32, 64, 64)


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.epochs", -1, "train.epochs must be > 0"),
        ("train.epochs", 0, "train.epochs must be > 0"),
        ("train.epochs", "ten", "train.epochs must be an integer"),
        ("train.epochs", 2.5, "train.epochs must be an integer"),
        ("train.learning_rate", 0, "train.learning_rate must be > 0"),
        ("train.batch_size", True, "train.batch_size must be an integer"),
        ("train.epoch", 3, "unknown key `train.epoch`"),
        ("data.val_fraction", 0.0, "data.val_fraction must be strictly between 0 and 1"),
        ("data.val_fraction", 1.5, "data.val_fraction must be strictly between 0 and 1"),
        ("data.source", "imagenet", "data.source must be one of: fashion_mnist"),
        ("preprocess.normalization", "zscore", "must be one of: unit, symmetric, standardize"),
        ("preprocess.channels", 2, "preprocess.channels must be one of: 1, 3"),
        ("preprocess.image_size", 4, "preprocess.image_size must be null (keep) or >= 8"),
        ("seed", -3, "seed must be >= 0"),
        ("colour", "red", "unknown key `colour`"),
        ("models.simple_cnn.architecture", "resnet9000", "Known"),
        ("models.simple_cnn.filterz", [8, 8, 8], "filterz"),
        ("models.simple_cnn.epochs", 0, "models.simple_cnn.epochs must be > 0"),
        ("models.simple_cnn.train_images", -5, "models.simple_cnn.train_images must be >= 0"),
        ("models.Bad-Name", {"architecture": "simple_cnn"}, "lower-case identifiers"),
    ],
)
def test_bad_params_stop_with_a_message_naming_the_key(path, value, message):
    with pytest.raises(ConfigError, match=None) as excinfo:
        parse_params(with_change(path, value))
    text = str(excinfo.value)
    assert message in text
    assert "\n" not in text


def test_unknown_architecture_lists_known_names():
    with pytest.raises(ConfigError) as excinfo:
        parse_params(with_change("models.simple_cnn.architecture", "resnet9000"))
    assert "simple_cnn" in str(excinfo.value)


def test_variant_overrides_shared_training_settings():
    raw = with_change("models.simple_cnn.epochs", 2)
    params = parse_params(raw)
    settings = params.models["simple_cnn"].resolved(params.train)
    assert settings.epochs == 2
    assert settings.batch_size == params.train.batch_size


def test_stage_prints_one_line_and_exits_2_on_bad_params(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change("train.epochs", -1)))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.epochs must be > 0, got -1"


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
        ({"data.source": "imagenet"}, "data.source must be one of: fashion_mnist, image_folder, "
         "archive, mnist, cifar10, cifar100; got 'imagenet'"),
        ({"data.images.image_size": [4, 64]},
         "data.images.image_size must be [height, width], each >= 8"),
        ({"data.images.image_size": 64}, "data.images.image_size must be a list, got 64"),
        ({"data.images.image_size": [64]}, "data.images.image_size must be a list of 2 values"),
        ({"data.images.image_size": [64, "x"]}, "data.images.image_size[1] must be an integer"),
        ({"data.images.channels": 4}, "data.images.channels must be one of: 1, 3"),
        ({"data.classes": ["cat"]}, "data.classes must list at least 2 class names"),
        ({"data.classes": ["cat", "cat"]}, "data.classes must not list a class twice"),
        ({"data.classes": "cat"}, "data.classes must be a list"),
        ({"data.classes": ["cat", 3]}, "data.classes[1] must be a non-empty string"),
        ({"data.test_fraction": 0}, "data.test_fraction must be strictly between 0 and 1"),
        ({"data.val_fraction": 0.5, "data.test_fraction": 0.5},
         "data.val_fraction + data.test_fraction must be < 1"),
        ({"data.max_unreadable_fraction": 1.5},
         "data.max_unreadable_fraction must be between 0 and 1"),
        ({"data.min_images_per_class": 0}, "data.min_images_per_class must be > 0"),
        ({"data.source": "archive"},
         "data.archive.path_or_url is required when data.source is archive"),
        ({"data.archive.path_or_url": "https://example.org/x.zip"},
         "data.archive.sha256 is required when data.archive.path_or_url is a URL"),
        ({"data.archive.path_or_url": "ftp://example.org/x.zip", "data.archive.sha256": "a" * 64},
         "must be a local path or an http(s) URL"),
        ({"data.archive.sha256": "abc"}, "data.archive.sha256 must be 64 hexadecimal digits"),
        ({"data.archive.max_extracted_mb": 0}, "data.archive.max_extracted_mb must be > 0"),
        ({"data.image_folder.pth": "x"}, "unknown key `data.image_folder.pth`"),
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
    assert params.data.images.channels == 3
    assert params.data.test_fraction == 0.2
    assert params.data.archive.max_members == 200_000
    assert parse_params(DEFAULTS).data.classes is None


def test_overrides_set_nested_keys_and_refuse_missing_sections():
    changed = with_overrides(DEFAULTS, [("models.simple_cnn.dense_units", 12)])
    assert changed["models"]["simple_cnn"]["dense_units"] == 12
    assert DEFAULTS["models"]["simple_cnn"]["dense_units"] == 64  # the input is not mutated
    with pytest.raises(ConfigError, match="cannot set `modles.simple_cnn.epochs`"):
        with_overrides(DEFAULTS, [("modles.simple_cnn.epochs", 3)])


def full_profile_overrides() -> list[tuple[str, object]]:
    """The `-S key=value` pairs of the README's `dvc exp run -n full` command."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("dvc exp run -n full"):]
    block = block[: block.index("```")]
    pairs = re.findall(r"-S '?([\w.]+)=([^'\s]+)'?", block)
    return [(key, yaml.safe_load(value)) for key, value in pairs]


def test_readme_full_profile_is_valid_and_lifts_every_variant_epoch_limit():
    params = parse_params(with_overrides(DEFAULTS, full_profile_overrides()))
    for name, variant in params.models.items():
        target_epochs = variant.resolved(params.train).epochs + variant.fine_tune_epochs
        assert target_epochs >= 30, name
        assert variant.train_images == 0, name
