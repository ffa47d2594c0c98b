"""One home for defaults: every value params.yaml states equals its schema default, or is
listed, with its reason, in docs/variants.md's table of values that differ."""

import re
from pathlib import Path

from cnnpipe.models import get_architecture
from cnnpipe.params.schema import SECTION_MODELS, read_yaml

ROOT = Path(__file__).resolve().parents[1]
TABLE_HEADING = "## Values that differ from their schema default"
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \| `([^`]*)` \| (.+?) \|$")


def shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def differing(raw: dict, schema, prefix: str):
    """(key, value, default) for each value of ``raw`` that is not ``schema``'s default."""
    for key, value in raw.items():
        if key == "architecture":
            continue
        default = schema.model_fields[key].default
        if isinstance(value, dict) and hasattr(type(default), "model_fields"):
            yield from differing(value, type(default), f"{prefix}{key}.")
            continue
        plain = list(default) if isinstance(default, tuple) else default
        if value != plain:
            yield f"{prefix}{key}", shown(value), shown(default)


def params_differences() -> set[tuple[str, str, str]]:
    raw = read_yaml(ROOT / "params.yaml")
    found = set()
    for section, schema in SECTION_MODELS.items():
        found |= set(differing(raw.get(section) or {}, schema, f"{section}."))
    for name, spec in raw["models"].items():
        schema = get_architecture(spec["architecture"]).schema
        found |= set(differing(spec, schema, f"models.{name}."))
    return found


def documented_differences() -> set[tuple[str, str, str]]:
    text = (ROOT / "docs/variants.md").read_text()
    assert TABLE_HEADING in text
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            key, value, default, why = match.groups()
            assert why.strip(), f"docs/variants.md: the row for `{key}` gives no reason"
            rows.add((key, value, default))
    return rows


def test_every_value_is_its_default_or_documented():
    undocumented = params_differences() - documented_differences()
    assert not undocumented, (
        "params.yaml values that differ from their schema default and are not in "
        f"docs/variants.md's table: {sorted(undocumented)}"
    )


def test_every_documented_row_matches_params_yaml():
    stale = documented_differences() - params_differences()
    assert not stale, f"rows in docs/variants.md that params.yaml no longer has: {sorted(stale)}"


def test_the_check_sees_a_changed_value():
    """A changed value must show up as a difference, or the two tests above check nothing."""
    raw = {"epochs": 99}
    assert set(differing(raw, SECTION_MODELS["train"], "train.")) == {("train.epochs", "99", "6")}
