"""The tf.data pipeline behind :meth:`cnnpipe.core.shards.ShardSet.dataset`.

``tf.data`` orders record *indices*, and each batch's records are then read in one step. An
earlier reader streamed the records themselves through ``tf.data`` (one element each, read,
interleaved and shuffled), and the first batch waited for its shuffle buffer to fill with
records: on 2 cores that cost more than the rest of the epoch's input work. The index stream
is built exactly as that record stream was (the same shard shuffle, interleave, subset filter,
and a shuffle of the same element count and seed, whose order depends only on those and not
on the elements' values), so every batch holds the same records in the same order, and a
model trains to the same bytes; tests/test_shards.py compares the two readers byte for byte.

When shuffling a split no larger than the shuffle buffer's budget (``shuffle_buffer_mb``, the
memory the record buffer was allowed), the split is held in memory, a tensor per shard, and a
batch is a gather; otherwise a batch's records are read from the files (one read for a run of
consecutive records, as in record order, else one per record), so a large split stays on disk.

TensorFlow is passed in by the caller: importing this module does not import it.
"""

from __future__ import annotations

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import LABEL_BYTES, PREFETCH_BATCHES

SUBSET_FILTER_BLOCK = 1024  # indices per vectorized subset check
INTERLEAVED_SHARDS = 8  # shards read side by side when shuffling


def batches(tf, split, batch_size: int, *, shuffle: bool, seed: int, shuffle_buffer_mb: int,
            subset: np.ndarray | None, with_index: bool, one_hot: int | None):
    """(images, labels[, indices]) batches of ``split`` (a ShardSet); see ShardSet.dataset."""
    _check_shard_sizes(split)
    mask = None
    kept = split.count
    if subset is not None:
        mask = np.zeros(split.count, dtype=bool)
        mask[subset] = True
        kept = int(mask.sum())
    if shuffle:
        indices = _interleaved_indices(tf, split, seed)
        if mask is not None:
            indices = _keep_masked(tf, indices, tf.constant(mask))
        # Sized as that many bytes of records, as when the buffer held records: the size is
        # part of what fixes the order. It now holds 8-byte indices.
        buffer = max(1, min(kept, shuffle_buffer_mb * 2**20 // split.record_bytes))
        indices = indices.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        indices = indices.batch(batch_size)
    else:
        indices = _ordered_index_batches(tf, split.count, batch_size, mask)
    # Filtered streams have unknown length; stating it lets Keras size its epochs and
    # progress instead of warning that the input "ran out of data".
    indices = indices.apply(tf.data.experimental.assert_cardinality(-(-kept // batch_size)))

    # Nothing here is autotuned, and tf.data's autotuning thread costs time anyway: it wakes
    # after 10, 20, 40, ... ms, and tearing an iterator down waits for its next wake-up,
    # which stretched a 4-second epoch or evaluation pass to 5.12 s (bench/RESULTS.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    # Nor do its default graph rewrites help (no map before a batch to fuse; the maps are meant
    # to stay sequential), and rewriting serializes the pipeline with the split it holds in
    # memory: a second copy of the split, and about 70 ms more before each epoch's first
    # batch at 42 MB.
    options.experimental_optimization.apply_default_optimizations = False
    if shuffle and 0 < split.count * split.record_bytes <= shuffle_buffer_mb * 2**20:
        read_records = _records_from_memory(tf, split)
    else:
        read_records = _records_from_files(tf, split)
    decode = _batch_decoder(tf, split.image_shape, read_records, with_index, one_hot)
    return indices.map(decode).prefetch(PREFETCH_BATCHES).with_options(options)


def _check_shard_sizes(split) -> None:
    """Each shard holds the records index.json says, or a one-line error now rather than a
    short epoch or a failed read mid-training."""
    for number, path in enumerate(split.shard_paths):
        expected = min(split.records_per_shard, split.count - number * split.records_per_shard)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from None
        if size != expected * split.record_bytes:
            raise DataError(f"{path} is truncated or too long; rerun the prepare stage")


def _interleaved_indices(tf, split, seed: int):
    """Every record index in the order the shuffled reader visits the records: the shard
    order reshuffled each epoch, up to eight shards read side by side, one record in turn."""
    shard_count = len(split.shard_paths)
    per_shard, count = split.records_per_shard, split.count
    if shard_count <= 1:
        return tf.data.Dataset.range(count)  # an interleave over one shard is its order

    def shard_indices(shard):
        start = shard * per_shard
        return tf.data.Dataset.range(start, tf.minimum(start + per_shard, count))

    shards = tf.data.Dataset.range(shard_count)
    shards = shards.shuffle(shard_count, seed=seed, reshuffle_each_iteration=True)
    # No parallel reads: on 2 cores, tf.data's extra threads preempt the training step's own
    # and cost up to half its speed (bench/RESULTS.md). A sequential interleave is
    # deterministic already (``deterministic`` only matters with num_parallel_calls).
    return shards.interleave(shard_indices, cycle_length=min(shard_count, INTERLEAVED_SHARDS),
                             block_length=1)


def _keep_masked(tf, indices, mask_tensor):
    """The indices that ``mask_tensor`` marks, in the order they come."""

    def kept(block):
        return tf.boolean_mask(block, tf.gather(mask_tensor, block))

    # Filtered a block at a time: a per-element `filter` call costs a function call each.
    return indices.batch(SUBSET_FILTER_BLOCK).map(kept).unbatch()


def _ordered_index_batches(tf, count: int, batch_size: int, mask: np.ndarray | None):
    """Batches of record indices in record order (only the marked ones, with ``mask``), one
    tf.data element per batch."""
    order = None if mask is None else tf.constant(np.flatnonzero(mask).astype(np.int64))
    kept = count if order is None else int(order.shape[0])

    def batch_at(start):
        positions = tf.range(start, tf.minimum(start + batch_size, kept))
        return positions if order is None else tf.gather(order, positions)

    return tf.data.Dataset.range(0, kept, batch_size).map(batch_at)


def _records_from_memory(tf, split):
    """A batch's records gathered from every record of ``split`` held in memory, one uint8
    tensor (records, record_bytes) per shard; for a shuffled split within the shuffle buffer's
    budget, the most the record buffer held before. Gathers in TensorFlow, so no Python (nor
    GIL) per batch. Kept per shard, not concatenated: loading then peaks at the split plus one
    shard, not at twice the split."""
    shards = [tf.reshape(tf.io.decode_raw(tf.io.read_file(str(path)), tf.uint8),
                         (-1, split.record_bytes)) for path in split.shard_paths]
    per_shard = split.records_per_shard

    def read_records(indices):
        if len(shards) == 1:
            return tf.gather(shards[0], indices)
        shard_of = tf.cast(indices // per_shard, tf.int32)
        offsets = tf.dynamic_partition(indices % per_shard, shard_of, len(shards))
        rows = tf.dynamic_partition(tf.range(tf.size(indices)), shard_of, len(shards))
        parts = [tf.gather(shard, offset) for shard, offset in zip(shards, offsets)]
        return tf.dynamic_stitch(rows, parts)

    return read_records


def _records_from_files(tf, split):
    """A batch's records read from the shard files (``ShardSet.gather_records``: one read for a
    run of consecutive records, one per record otherwise), so a large split stays on disk."""

    def read_records(indices):
        # Stateful (the default), so tf.data never calls it from threads of its own.
        records = tf.numpy_function(split.gather_records, [indices], tf.uint8)
        records.set_shape((None, split.record_bytes))
        return records

    return read_records


def _batch_decoder(tf, shape, read_records, with_index: bool, one_hot: int | None):
    """The map function turning a batch of record indices into (images, labels[, indices])."""

    def decode(indices):
        raw = read_records(indices)  # (B, record_bytes) uint8
        labels = tf.cast(raw[:, 0], tf.int32) + 256 * tf.cast(raw[:, 1], tf.int32)
        images = tf.reshape(raw[:, LABEL_BYTES:], (-1, *shape))
        if one_hot is not None:
            labels = tf.one_hot(labels, one_hot)
        if with_index:
            return images, labels, indices
        return images, labels

    return decode
