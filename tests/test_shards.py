import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from cnnpipe.core import shards
from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import ShardSet, ShardWriter, write_arrays


@pytest.fixture(scope="module")
def digits():
    """1,797 real handwritten digits, 8x8 gray, as uint8 (N, 8, 8, 1) and int labels."""
    data = load_digits()
    images = np.rint(data.images * (255 / 16)).astype(np.uint8)[..., None]
    return images, data.target.astype(np.int32)


def test_round_trip_keeps_order_labels_and_pixels(digits, tmp_path):
    images, labels = digits
    with ShardWriter(tmp_path / "train", (8, 8, 1), records_per_shard=500) as writer:
        writer.add(images[0], labels[0])
        writer.add_batch(images[1:700], labels[1:700])  # crosses a shard boundary
        writer.add_batch(images[700:], labels[700:])
    split = ShardSet.open(tmp_path / "train")
    assert len(split) == 1797 and split.image_shape == (8, 8, 1)
    assert split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.labels, labels)
    index = json.loads((tmp_path / "train" / "index.json").read_text())
    assert index == {
        "format": "cnnpipe-uint8-records", "version": 1, "image_shape": [8, 8, 1],
        "count": 1797, "records_per_shard": 500, "label_bytes": 2, "record_bytes": 66,
        "shards": ["shard-00000.bin", "shard-00001.bin", "shard-00002.bin", "shard-00003.bin"],
    }  # fmt: skip
    # The record layout itself: uint16 little-endian label, then row-major pixels.
    raw = (tmp_path / "train" / "shard-00001.bin").read_bytes()
    assert len(raw) == 500 * 66
    record = raw[3 * 66 : 4 * 66]
    assert int.from_bytes(record[:2], "little") == labels[503]
    assert record[2:] == images[503].tobytes()
    assert len((tmp_path / "train" / "shard-00003.bin").read_bytes()) == 297 * 66
    picked = [1796, 0, 503, 499, 500, 3]
    np.testing.assert_array_equal(split.read(picked), images[picked])
    batches = list(split.iter_batches(256))
    assert [len(b[0]) for b in batches] == [256] * 7 + [5]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    with pytest.raises(IndexError):
        split.read([1797])


def test_labels_above_255_survive(tmp_path):
    images = np.zeros((3, 2, 2, 3), np.uint8)
    write_arrays(tmp_path / "s", images, np.array([0, 256, 65535]))
    np.testing.assert_array_equal(ShardSet(tmp_path / "s").labels, [0, 256, 65535])


def test_shard_size_comes_from_a_byte_target():
    per_shard = shards.default_records_per_shard((224, 224, 3))
    assert 20 * 2**20 <= per_shard * (2 + 224 * 224 * 3) <= shards.TARGET_SHARD_BYTES
    assert shards.default_records_per_shard((4000, 4000, 3)) == 1


def test_a_failed_block_leaves_nothing_and_keeps_the_old_split(digits, tmp_path):
    images, labels = digits
    write_arrays(tmp_path / "train", images[:10], labels[:10])
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "train", (8, 8, 1)) as writer:
            writer.add_batch(images, labels)
            raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert len(ShardSet(tmp_path / "train")) == 10  # the previous, complete split


def test_a_stale_temporary_from_a_killed_run_is_removed(digits, tmp_path):
    images, labels = digits
    stale = tmp_path / ".train.tmp-killed"
    stale.mkdir()
    (stale / "shard-00000.bin").write_bytes(b"half")
    write_arrays(tmp_path / "train", images[:5], labels[:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_a_full_disk_is_one_line_and_leaves_no_split(digits, tmp_path, monkeypatch):
    images, labels = digits
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self._handle = handle
            self.name = handle.name

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self._handle.close()

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and str(path).endswith(".bin") else handle

    monkeypatch.setattr("builtins.open", opener)
    with pytest.raises(DataError) as excinfo:
        write_arrays(tmp_path / "train", images, labels)
    message = str(excinfo.value)
    assert "\n" not in message and "No space left on device" in message
    assert str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(DataError, match="cannot write .*ro.*Permission denied"):
            write_arrays(folder / "train", np.zeros((2, 2, 2, 1), np.uint8), np.zeros(2))
    finally:
        folder.chmod(0o700)


def test_missing_or_foreign_split_is_one_line(tmp_path):
    with pytest.raises(DataError, match="not a prepared split.*run the prepare stage"):
        ShardSet(tmp_path / "nothing")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "index.json").write_text('{"format": "npz"}')
    with pytest.raises(DataError, match="expected 'cnnpipe-uint8-records'"):
        ShardSet(tmp_path / "old")


def test_importing_the_reader_does_not_import_tensorflow():
    code = "import sys, cnnpipe.core.shards; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- tf.data -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_shards(digits, tmp_path_factory):
    images, labels = digits
    folder = tmp_path_factory.mktemp("digits") / "train"
    with ShardWriter(folder, (8, 8, 1), records_per_shard=200) as writer:
        writer.add_batch(images, labels)
    return ShardSet(folder)


def epochs(dataset, count=2):
    return [[tuple(part.numpy() for part in batch) for batch in dataset] for _ in range(count)]


def test_dataset_in_order_matches_the_arrays(digits, digit_shards):
    pytest.importorskip("tensorflow")
    images, labels = digits
    batches = epochs(digit_shards.dataset(100), 1)[0]
    assert [len(b[0]) for b in batches] == [100] * 17 + [97]
    assert batches[0][0].dtype == np.uint8 and batches[0][1].dtype == np.int32
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)


def test_shuffled_dataset_is_seeded_complete_and_reshuffled(digits, digit_shards):
    pytest.importorskip("tensorflow")
    images, labels = digits
    first = epochs(digit_shards.dataset(64, shuffle=True, seed=7, with_index=True))
    again = epochs(digit_shards.dataset(64, shuffle=True, seed=7, with_index=True))
    other = epochs(digit_shards.dataset(64, shuffle=True, seed=8, with_index=True), 1)
    for epoch_a, epoch_b in zip(first, again, strict=True):
        for a, b in zip(epoch_a, epoch_b, strict=True):
            for part_a, part_b in zip(a, b, strict=True):
                np.testing.assert_array_equal(part_a, part_b)
    order = [np.concatenate([b[2] for b in epoch]) for epoch in first]
    assert sorted(order[0].tolist()) == list(range(1797))  # every record once
    assert not np.array_equal(order[0], order[1])  # a new order each epoch
    assert not np.array_equal(order[0], np.concatenate([b[2] for b in other[0]]))
    # Far from the file order: the record buffer mixes across shards, not only within.
    assert abs(np.corrcoef(order[0], np.arange(1797))[0, 1]) < 0.2
    for batch_images, batch_labels, indices in first[0]:
        np.testing.assert_array_equal(batch_images, images[indices])
        np.testing.assert_array_equal(batch_labels, labels[indices])


def test_subset_keeps_exactly_those_records(digits, digit_shards):
    pytest.importorskip("tensorflow")
    from cnnpipe.core.sampling import labelled_subset

    images, labels = digits
    subset = labelled_subset(labels, 300, seed=0)
    for shuffle in (False, True):
        epoch = epochs(digit_shards.dataset(50, shuffle=shuffle, subset=subset, with_index=True), 1)[0]
        indices = np.concatenate([b[2] for b in epoch])
        assert sorted(indices.tolist()) == sorted(subset.tolist())
        np.testing.assert_array_equal(np.concatenate([b[0] for b in epoch]), images[indices])
    assert np.bincount(labels[subset]).min() >= 25  # class-proportional: about 30 of each


def test_small_shuffle_buffer_is_sized_in_bytes(digit_shards):
    pytest.importorskip("tensorflow")
    # 1 MiB of 66-byte records is 15,887 images: more than the split, so all of it.
    dataset = digit_shards.dataset(32, shuffle=True, shuffle_buffer_mb=1)
    assert sum(len(b[0]) for b in dataset) == 1797


# --- the index reader against the record reader it replaced --------------------------------


def _record_reader(split, batch_size, *, shuffle=False, seed=0, shuffle_buffer_mb=256,
                   subset=None, with_index=False, one_hot=None):
    """``ShardSet.dataset`` as it was before it ordered indices (commit ea65983): every record
    its own tf.data element, read, interleaved, shuffled. Kept here only as the reference the
    index reader must equal byte for byte, so that the committed weights stay the same."""
    import tensorflow as tf

    files = tf.constant([str(p) for p in split.shard_paths] or [""], tf.string)
    subset = split._checked_subset(subset)
    indexed = with_index or subset is not None
    kept = split.count
    if subset is not None:
        mask = np.zeros(split.count, dtype=bool)
        mask[subset] = True
        kept = int(mask.sum())
    record_bytes, per_shard = split.record_bytes, split.records_per_shard
    shard_count = len(split.shard_paths)

    def shard_records(shard):
        records = tf.data.FixedLengthRecordDataset(tf.gather(files, shard), record_bytes)
        return records.enumerate(start=shard * per_shard) if indexed else records

    shards_ds = tf.data.Dataset.range(shard_count)
    if shuffle and shard_count > 1:
        shards_ds = shards_ds.shuffle(shard_count, seed=seed, reshuffle_each_iteration=True)
    if shuffle:
        records = shards_ds.interleave(shard_records, cycle_length=min(shard_count, 8) or 1,
                                       block_length=1)
    else:
        records = shards_ds.flat_map(shard_records)
    if subset is not None:
        mask_tensor = tf.constant(mask)

        def kept_records(indices, blocks):
            keep = tf.gather(mask_tensor, indices)
            return tf.boolean_mask(indices, keep), tf.boolean_mask(blocks, keep)

        records = records.batch(1024).map(kept_records).unbatch()
    if shuffle:
        buffer = max(1, min(kept, shuffle_buffer_mb * 2**20 // record_bytes))
        records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    records = records.batch(batch_size)
    records = records.apply(tf.data.experimental.assert_cardinality(-(-kept // batch_size)))

    def decode(*parts):
        index, record = parts if indexed else (None, parts[0])
        raw = tf.io.decode_raw(record, tf.uint8)
        labels = tf.cast(raw[:, 0], tf.int32) + 256 * tf.cast(raw[:, 1], tf.int32)
        images = tf.reshape(raw[:, shards.LABEL_BYTES:], (-1, *split.image_shape))
        if one_hot is not None:
            labels = tf.one_hot(labels, one_hot)
        return (images, labels, index) if with_index else (images, labels)

    options = tf.data.Options()
    options.autotune.enabled = False
    return records.map(decode).prefetch(2).with_options(options)


@pytest.fixture(scope="module")
def layouts(digits, tmp_path_factory):
    """The digits as one shard, as 3 and as 9 (more than the 8 read side by side, the last one
    short), and enlarged to 32x32 so that a 1 MiB shuffle buffer (1,022 records) is smaller
    than the split and streams, and the split (1.8 MB) is read record by record, not mapped."""
    images, labels = digits
    root = tmp_path_factory.mktemp("layouts")
    found = {}
    for name, per_shard, pixels in [("one", 1797, images), ("three", 700, images),
                                    ("nine", 200, images),
                                    ("large", 400, np.kron(images, np.ones((4, 4, 1), np.uint8)))]:
        with ShardWriter(root / name, pixels.shape[1:], records_per_shard=per_shard) as writer:
            writer.add_batch(pixels, labels)
        found[name] = ShardSet(root / name)
    return found


def as_bytes(dataset, epochs_of_one_iterator=1):
    """Every batch of two passes over ``dataset`` (two iterators, as two epochs of a fit), then
    ``epochs_of_one_iterator`` epochs of one iterator: each part's dtype, shape and bytes."""
    passes = [dataset, dataset, dataset.repeat(epochs_of_one_iterator)]
    return [[tuple((part.dtype.name, tuple(part.shape), part.numpy().tobytes()) for part in batch)
             for batch in one_pass] for one_pass in passes]


READER_CASES = [  # layout, batch, keyword arguments
    ("one", 64, dict(shuffle=True, seed=0)),
    ("one", 64, dict(shuffle=True, seed=7, with_index=True, one_hot=10)),
    ("three", 100, dict(shuffle=True, seed=0, with_index=True)),
    ("nine", 64, dict(shuffle=True, seed=0, one_hot=10)),
    ("nine", 128, dict(shuffle=True, seed=7, with_index=True)),
    ("nine", 50, dict(shuffle=True, seed=7, subset="300", with_index=True)),
    ("one", 50, dict(shuffle=True, seed=0, subset="300", one_hot=10)),
    ("large", 64, dict(shuffle=True, seed=3, shuffle_buffer_mb=1, with_index=True)),
    ("large", 64, dict(shuffle=True, seed=3, shuffle_buffer_mb=1, subset="300")),
    ("large", 64, dict(shuffle_buffer_mb=1, with_index=True)),  # read, not mapped: 1.8 MB
    ("large", 100, dict(shuffle_buffer_mb=1, subset="300", one_hot=10)),
    ("nine", 64, dict()),
    ("nine", 64, dict(with_index=True, one_hot=10)),
    ("three", 50, dict(subset="300", with_index=True)),
    ("one", 1797, dict()),
]


@pytest.mark.parametrize("layout, batch_size, options", READER_CASES)
def test_index_reader_gives_the_record_readers_batches(digits, layouts, layout, batch_size,
                                                       options):
    tf = pytest.importorskip("tensorflow")
    from cnnpipe.core.sampling import labelled_subset

    split = layouts[layout]
    options = dict(options)
    if options.get("subset"):
        options["subset"] = labelled_subset(digits[1], int(options["subset"]), seed=0)
    new, old = split.dataset(batch_size, **options), _record_reader(split, batch_size, **options)
    assert new.element_spec == old.element_spec
    assert len(new) == len(old)
    expected = as_bytes(old, 2)
    assert as_bytes(new, 2) == expected
    images, labels = digits
    first = expected[0]
    assert sum(len(b[0][2]) for b in first) // int(np.prod(split.image_shape)) == (
        len(np.unique(options["subset"])) if "subset" in options else 1797)
    if options.get("shuffle"):  # the comparison is of shuffled batches, not of file order
        assert first != as_bytes(split.dataset(batch_size, **{**options, "shuffle": False}))[0]
        assert expected[0] != expected[1]  # and each epoch reshuffles


def test_index_reader_follows_the_global_seed_as_before(layouts):
    tf = pytest.importorskip("tensorflow")
    split = layouts["nine"]
    try:
        tf.random.set_seed(1234)  # as the train stage's keras.utils.set_random_seed does
        new, old = (make(split, 64, shuffle=True, seed=5, with_index=True)
                    for make in (ShardSet.dataset, _record_reader))
        seeded = as_bytes(new)
        assert seeded == as_bytes(old)
    finally:
        tf.random.set_seed(None)
    assert seeded[0] != as_bytes(split.dataset(64, shuffle=True, seed=5, with_index=True))[0]


def test_a_truncated_shard_is_one_line(digits, tmp_path):
    pytest.importorskip("tensorflow")
    images, labels = digits
    split = write_arrays(tmp_path / "train", images[:300], labels[:300])
    shard = split.shard_paths[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    for shuffle in (True, False):  # the split held in memory, or read from the files
        with pytest.raises(DataError, match="shard-00000.bin is truncated or too long; rerun"):
            split.dataset(64, shuffle=shuffle)
    with pytest.raises(DataError, match="shard-00000.bin is truncated"):
        ShardSet(tmp_path / "train").read([0, 299])
