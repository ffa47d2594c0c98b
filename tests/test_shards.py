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
