"""Entry-point wrapper: user-fixable failures end as one line on stderr, not a traceback."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

# Before TensorFlow is imported anywhere: hide its INFO banner lines in stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnnpipe.core.errors import CnnpipeError  # noqa: E402


# What TensorFlow's native code prints at import and device set-up despite
# TF_CPP_MIN_LOG_LEVEL (absl logs before absl::InitializeLog(); TensorFlow issue #100442):
# INFO and WARNING lines, and the "no GPU here" errors of a CPU-only machine.
_NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"  # seconds are epoch-sized in 2.21
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU"  # LiteRT, per interpreter
    r"|E\d{4} .*(?:cuInit|Unable to register \w+ factory))"
)


@contextmanager
def quiet_native_logs():
    """Hold back the INFO/WARNING lines TensorFlow's C++ side writes straight to file
    descriptor 2 while the block runs; whatever else reaches descriptor 2 is written there
    after the block, in order.

    Does nothing when TF_CPP_MIN_LOG_LEVEL is below 2 (the person asked for those lines) or
    descriptor 2 is closed.
    """
    fd = 2
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
        os.fstat(fd)
    except (ValueError, OSError):
        level = 0
    if level < 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().splitlines(keepends=True)
            kept = b"".join(
                line for line in lines
                if not _NATIVE_NOISE.match(line.decode("utf-8", "replace"))
            )
            if kept:
                os.write(fd, kept)


def os_error_line(exc: OSError) -> str:
    """``cannot use PATH: CAUSE`` for an operating-system failure (a read-only folder, a full
    disk, a missing file): what a person needs, without the frames that led there."""
    cause = exc.strerror or str(exc)
    if exc.filename is None:
        return cause
    target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"cannot use {target}: {cause}"


def run(main, *args, tensorflow: bool = True) -> None:
    """Call ``main``; a :class:`CnnpipeError` becomes ``error: ...`` on stderr and exit 2,
    an ``OSError`` (read-only folder, full disk) ``error: cannot use PATH: CAUSE`` and exit 2.

    ``tensorflow=False`` is for stages that never touch it: they start in a fraction of a
    second instead of paying TensorFlow's import.
    """
    if tensorflow:
        with quiet_native_logs():
            import tensorflow as tf  # imported here so its start-up chatter is filtered

            # Device discovery is where a CPU-only machine logs its "failed call to cuInit".
            tf.config.list_physical_devices()
    try:
        main(*args)
    except CnnpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
