"""A stage's resolved settings (written by the params stage) with attribute access.

Stages read these instead of params.yaml: the values are already validated and every
default is filled in, so a stage needs neither the schema code nor its defaults.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cnnpipe.core.io import read_json


class Settings(Mapping):
    """Read-only view of a JSON object: ``s.train.epochs`` or ``s["train"]["epochs"]``;
    lists read as tuples."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return _view(self._values[key])

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def _view(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Settings(value)
    if isinstance(value, list):
        return tuple(_view(v) for v in value)
    return value


def read_settings(path: str | Path) -> Settings:
    return Settings(read_json(path))
