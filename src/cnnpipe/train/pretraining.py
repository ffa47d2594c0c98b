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
# How far above chance (1 / ROTATIONS) the task must get for its features to be worth
# handing on. One epoch of Fashion-MNIST's 54,000 images reaches 0.90; folders of 150 images
# reached 0.27-0.31, and the variant fine-tuned from them scored 0.375 below its scratch twin.
USEFUL_MARGIN = 0.15


def pretraining_record(val_accuracy: float) -> dict:
    """The source task's verdict for metrics/train: its chance level and whether its best
    validation accuracy stayed near it (the compare stage says so in reports/transfer.md)."""
    chance = 1 / ROTATIONS
    return {
        "pretrain_val_accuracy": val_accuracy,
        "pretrain_chance_accuracy": chance,
        "pretrain_near_chance": val_accuracy < chance + USEFUL_MARGIN,
    }


def rotation_turns(count: int, seed: int) -> np.ndarray:
    """The number of quarter turns for each of ``count`` records: seeded, fixed per record."""
    return np.random.default_rng(seed).integers(0, ROTATIONS, count).astype(np.int32)


def rotation_dataset(batches, shards, seed: int):
    """Batches of ``(rotated uint8 images, quarter turns)`` from ``batches``, a stream of
    ``shards`` that carries each record's index (``with_index=True``).

    Each record keeps its turn across epochs (it is looked up by record index), as a
    precomputed rotated copy of the data set would, without holding one.
    """
    import tensorflow as tf

    height, width = shards.image_shape[:2]
    if height != width:
        raise DataError(
            f"rotation pretraining needs square images, got {height}x{width}; "
            "set data.images.image_size to a square size"
        )
    turns = tf.constant(rotation_turns(len(shards), seed))

    def rotate(images, labels, indices):
        del labels  # the pretext task never sees the class labels
        k = tf.gather(turns, indices)
        every_turn = tf.stack([tf.image.rot90(images, r) for r in range(ROTATIONS)], axis=1)
        return tf.gather(every_turn, k, batch_dims=1), k

    return batches.map(rotate, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
