"""From validated params to the settings each stage reads: every default filled in.

One JSON file per stage (and per variant for train), so that a change reaches the stages it
affects and no others: DVC compares these files, not the params sections.
"""

from __future__ import annotations

import copy
from typing import Any

from cnnpipe.core import layout
from cnnpipe.core.errors import ConfigError
from cnnpipe.models.schema import RECIPE_KEYS
from cnnpipe.params.schema import Params, variant_recipe


def train_config(params: Params, name: str) -> dict[str, Any]:
    """What train@<name> trains: the shared settings with the variant's overrides applied."""
    variant = params.variant(name)
    # max_memory_gb is checked at load; leaving it out keeps the resolved file (and so the
    # trained models) independent of the machine that validated it.
    shared = params.train.model_dump(mode="json", exclude={"max_memory_gb"})
    # The recipe keys come merged (with the warm-up rule) from variant_recipe.
    for key in set(variant.SHARED_OVERRIDES) - set(RECIPE_KEYS):
        if getattr(variant, key) is not None:
            shared[key] = getattr(variant, key)
    shared.update(variant_recipe(variant, params.train))
    training = {
        key: getattr(variant, key)
        for key in sorted(variant.training_keys())
        if key != "architecture" and key not in variant.SHARED_OVERRIDES
    }
    return {
        "seed": params.seed,
        "variant": name,
        "architecture": variant.architecture,
        "train": {**shared, **training},
        "hyperparameters": variant.hyperparameters(),
    }


# What each `weights` value other than none starts the backbone from, for the comparison.
WEIGHT_SOURCES = {"pretrain": "rotation", "imagenet": "imagenet"}


def transfer_pairs(params: Params) -> list[dict[str, str]]:
    """Each variant starting from pretrained weights, paired with every variant of the same
    architecture that trains from random ones: what the compare stage's transfer table shows."""
    def weights(variant) -> str:
        return getattr(variant, "weights", "none")

    pairs = []
    for name, variant in sorted(params.models.items()):
        if weights(variant) == "none":
            continue
        for other, twin in sorted(params.models.items()):
            if twin.architecture == variant.architecture and weights(twin) == "none":
                source = WEIGHT_SOURCES.get(weights(variant), "weights file")
                pairs.append({"pretrained": name, "scratch": other, "source": source})
    return pairs


def resolved_configs(params: Params) -> dict[str, dict[str, Any]]:
    """Relative output path -> resolved settings, for every file the params stage writes."""
    configs = {
        str(layout.resolved("prepare")): {
            "seed": params.seed, "data": params.data.model_dump(mode="json"),
        },
        str(layout.resolved("preprocess")): {
            "preprocess": params.preprocess.model_dump(mode="json"),
        },
        str(layout.resolved("evaluate")): {
            "evaluate": params.evaluate.model_dump(mode="json"),
        },
        str(layout.resolved("compare")): {
            "compare": params.compare.model_dump(mode="json"),
            "variants": {name: {"architecture": v.architecture} for name, v in params.models.items()},
            "transfer_pairs": transfer_pairs(params),
        },
        # Not the variant list: dvc.yaml's foreach reads that, and adding a variant must not
        # re-run the exports of the others.
        str(layout.resolved("export")): {
            "export": params.export.model_dump(mode="json", exclude={"variants"}),
        },
    }
    for name in params.models:
        configs[str(layout.resolved_train(name))] = train_config(params, name)
    return configs


def with_overrides(raw: dict, overrides: list[tuple[str, Any]]) -> dict:
    """A copy of raw params with each dotted ``key`` set to its value, as `dvc exp run -S`
    does; a key whose parent sections do not exist raises ConfigError naming it."""
    result = copy.deepcopy(raw)
    for key, value in overrides:
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"cannot set `{key}`: params.yaml has no `{part}` there")
            node = node[part]
        node[leaf] = value
    return result
