"""A self-supervised source task for transfer learning without downloadable weights.

ImageNet weights cannot be fetched on an offline machine, so the backbone first learns to
tell by how many quarter turns (0, 90, 180, 270 degrees) an image was rotated. The task needs
no labels, works for any square dataset, and forces the network to learn shapes and
orientation (Gidaris et al., 2018); the target task then reuses those features.
"""

from __future__ import annotations

import numpy as np

from cnnpipe.core.errors import DataError

ROTATIONS = 4


def rotation_task(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image rotated by a random multiple of 90 degrees, and that multiple as its label."""
    if images.shape[1] != images.shape[2]:
        raise DataError(
            f"rotation pretraining needs square images, got {images.shape[1]}x{images.shape[2]}; "
            "set preprocess.image_size"
        )
    turns = np.random.default_rng(seed).integers(0, ROTATIONS, len(images))
    rotated = np.empty_like(images)
    for k in range(ROTATIONS):
        chosen = turns == k
        rotated[chosen] = np.rot90(images[chosen], k, axes=(1, 2))
    return rotated, turns.astype(np.int32)
