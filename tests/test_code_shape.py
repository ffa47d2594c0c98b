"""The code's shape, as the house rules state it: one build path, short functions, short
modules. Checked on the source itself (Python's ast), without running it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_MODULE = Path("src/cnnpipe/train/build.py")
# Calls that string the build chain together; only the build module may make them.
CHAIN_CALLS = {"build_model", "labelled_subset", "resolve_for_data"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
# Modules allowed over MAX_MODULE_LINES, each with its reason (also in the closing note).
LONG_MODULES: dict[str, str] = {}


def python_files(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            yield name, node


def is_training_stream(name, node) -> bool:
    """A ``.dataset(...)`` call that shuffles or picks a subset: a training input stream."""
    if name != "dataset" or not isinstance(node.func, ast.Attribute):
        return False
    for keyword in node.keywords:
        if keyword.arg == "subset":
            return True
        if keyword.arg == "shuffle" and not (
            isinstance(keyword.value, ast.Constant) and keyword.value.value is False
        ):
            return True
    return False


def test_the_build_chain_is_called_only_in_the_build_module():
    found = []
    for path in python_files("src", "stages", "bench"):
        relative = path.relative_to(ROOT)
        if relative == BUILD_MODULE:
            continue
        for name, node in calls(ast.parse(path.read_text())):
            if name in CHAIN_CALLS or is_training_stream(name, node):
                found.append(f"{relative}:{node.lineno} {name}(")
    assert not found, "the build chain outside cnnpipe.train.build: " + ", ".join(found)


def test_the_scan_sees_the_build_module_itself():
    """A scan that found nothing anywhere would pass too: the build module must make the
    calls it guards."""
    names = {name for name, node in calls(ast.parse((ROOT / BUILD_MODULE).read_text()))
             if name in CHAIN_CALLS or is_training_stream(name, node)}
    assert names == CHAIN_CALLS | {"dataset"}


def test_no_function_is_over_60_lines():
    long = []
    for path in python_files("src", "stages"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)} {node.name} ({lines})")
    assert not long, "functions over 60 lines: " + ", ".join(long)


@pytest.mark.parametrize("folder", ["src", "stages"])
def test_no_module_is_over_450_lines_unless_listed(folder):
    long = [
        f"{path.relative_to(ROOT)} ({count})"
        for path in python_files(folder)
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
        and str(path.relative_to(ROOT)) not in LONG_MODULES
    ]
    assert not long, "modules over 450 lines: " + ", ".join(long)
