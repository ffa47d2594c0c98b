"""The largest image side the pipeline accepts, wherever a size enters it.

params.yaml (``data.images.image_size``, ``preprocess.image_size``, MobileNet's
``image_size``), the prepare stage's decode path and a model card read by ``predict`` all
check against this one number. Past it a size is a typo or a mistake, not a plan: a
10000x10000 RGB record is 300 MB, ten times a shard, and the first symptom would be an OOM
kill or a TensorFlow ResourceExhaustedError deep inside a stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnpipe.core.errors import ConfigError

# 2048x2048x3 is 12 MB a record: still streams through 32 MB shards; CNNs on this pipeline's
# kind of data train at 28-512 pixels.
MAX_IMAGE_SIDE = 2048


def check_image_sides(sides: Sequence[int], key: str) -> None:
    """Refuse, in one line naming ``key``, any side below 1 or above :data:`MAX_IMAGE_SIDE`."""
    if any(not isinstance(side, int) or side < 1 or side > MAX_IMAGE_SIDE for side in sides):
        raise ConfigError(
            f"{key}: each side must be 1 to {MAX_IMAGE_SIDE} pixels; got {list(sides)}"
        )
