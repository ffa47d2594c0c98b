import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "minutes(n): about how long a module's tests take together on an idle "
        "2-core machine; the longest start first")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (those marked `minutes`), the rest in file order.

    `make test` hands each of its two workers a module at a time, in this order; a module of
    several minutes that starts last keeps one worker busy while the other idles.
    """
    def minutes(item: pytest.Item) -> float:
        mark = item.get_closest_marker("minutes")
        return float(mark.args[0]) if mark else 0.0

    items.sort(key=minutes, reverse=True)
