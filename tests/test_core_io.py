"""Outputs are written whole or not at all, and operating-system failures read as one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnnpipe.core.io import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=900,
    )


def _stage_writing(target: Path, text_bytes: int) -> str:
    return f"""
        from cnnpipe.core.io import write_text
        from cnnpipe.core.runner import run
        run(lambda: write_text({str(target)!r}, "x" * {text_bytes}), tensorflow=False)
    """


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs (root can mount one here and in CI); skipped where it cannot."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_leaves_no_temporary(small_tmpfs):
    target = small_tmpfs / "reports" / "big.txt"
    result = _run(_stage_writing(target, 4 * 2**20))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot use {target}: No space left on device"]
    assert list((small_tmpfs / "reports").iterdir()) == []


def test_a_read_only_folder_is_one_line(small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    target = small_tmpfs / "metrics.json"
    result = _run(_stage_writing(target, 10))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot use {target}: Read-only file system"]


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_sweeps(tmp_path):
    target = tmp_path / "models" / "simple_cnn" / "model.keras"
    killed = _run(f"""
        import os, signal
        from cnnpipe.core.io import atomic_path
        with atomic_path({str(target)!r}, suffix=".keras") as tmp:
            tmp.write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert killed.returncode == -9
    leftovers = [p.name for p in target.parent.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.keras.")

    with atomic_path(target, suffix=".keras") as tmp:
        tmp.write_bytes(b"a whole model")
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.keras"]
    assert target.read_bytes() == b"a whole model"


def test_sweeping_leaves_other_outputs_and_their_temporaries_alone(tmp_path):
    other_temp = tmp_path / ".model.weights.h5.abc123.weights.h5"
    other_temp.write_bytes(b"another writer's")
    write_json(tmp_path / "model_card.json", {"ok": True})
    assert other_temp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other_temp.name, "model_card.json"]
