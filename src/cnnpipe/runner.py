"""Entry-point wrapper: user-fixable failures end as one line on stderr, not a traceback."""

from __future__ import annotations

import os
import sys

# Before TensorFlow is imported anywhere: hide its INFO banner lines in stage logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnnpipe.errors import CnnpipeError  # noqa: E402


def run(main, *args) -> None:
    try:
        main(*args)
    except CnnpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
