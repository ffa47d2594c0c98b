import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from cnnpipe.data import fashion_mnist
from cnnpipe.data.download import DownloadLimits
from cnnpipe.data.prepare import Split, data_card, prepare_splits
from cnnpipe.core.errors import DataError


LIMITS = DownloadLimits(max_bytes=2**20, stall_seconds=10, deadline_seconds=30)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(fashion_mnist.parse_idx(idx_bytes(images)), images)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
        (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc", "not unsigned byte"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "promises 5 bytes"),
        (b"\x00\x00\x08\x03\x00", "truncated"),
    ],
)
def test_parse_idx_rejects_corrupt_files(content, message):
    with pytest.raises(DataError, match=message):
        fashion_mnist.parse_idx(content)


@pytest.fixture
def fake_dataset(tmp_path, monkeypatch):
    """Four tiny IDX files and a FILES table whose checksums match them."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (50, 28, 28)),
        "train_labels": np.repeat(np.arange(10), 5),
        "test_images": rng.integers(0, 256, (20, 28, 28)),
        "test_labels": np.repeat(np.arange(10), 2),
    }
    table = {}
    folder = tmp_path / "served"
    folder.mkdir()
    for key, (name, _) in fashion_mnist.FILES.items():
        content = idx_bytes(arrays[key])
        (folder / name).write_bytes(gzip.compress(content))
        table[key] = (name, hashlib.sha256(content).hexdigest())
    monkeypatch.setattr(fashion_mnist, "FILES", table)
    return folder, arrays


@pytest.fixture
def http_server(fake_dataset):
    folder, _ = fake_dataset
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_local_files_are_used_when_complete(fake_dataset, tmp_path):
    folder, arrays = fake_dataset
    raw = fashion_mnist.load_fashion_mnist(folder, "http://127.0.0.1:9/", tmp_path / "dl", LIMITS)
    assert raw.source == f"local:{folder}"
    np.testing.assert_array_equal(raw.train_images, arrays["train_images"])
    assert not (tmp_path / "dl").exists()


def test_download_from_local_http_server_verifies_checksums(fake_dataset, http_server, tmp_path):
    _, arrays = fake_dataset
    raw = fashion_mnist.load_fashion_mnist(
        tmp_path / "missing", http_server, tmp_path / "dl", LIMITS
    )
    assert raw.source == f"download:{http_server}"
    np.testing.assert_array_equal(raw.test_labels, arrays["test_labels"])
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(
        name for name, _ in fashion_mnist.FILES.values()
    )


def test_download_with_wrong_checksum_is_refused_and_removed(
    fake_dataset, http_server, tmp_path, monkeypatch
):
    table = dict(fashion_mnist.FILES)
    name, _ = table["train_labels"]
    table["train_labels"] = (name, "0" * 64)
    monkeypatch.setattr(fashion_mnist, "FILES", table)
    with pytest.raises(DataError, match="checksum mismatch"):
        fashion_mnist.load_fashion_mnist(
            tmp_path / "missing", http_server, tmp_path / "dl", LIMITS
        )
    assert not (tmp_path / "dl" / name).exists()


def test_unreachable_server_fails_fast_with_clear_message(fake_dataset, tmp_path):
    with pytest.raises(DataError, match="download of http://127.0.0.1:9/.* failed"):
        fashion_mnist.load_fashion_mnist(
            tmp_path / "missing", "http://127.0.0.1:9/", tmp_path / "dl", LIMITS
        )
    assert not (tmp_path / "dl").exists() or not list((tmp_path / "dl").iterdir())


def test_debian_copy_matches_the_recorded_checksums():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    raw = fashion_mnist.load_fashion_mnist(
        folder, "http://127.0.0.1:9/", Path("/nonexistent"), LIMITS
    )
    assert raw.train_images.shape == (60000, 28, 28)
    assert raw.test_images.shape == (10000, 28, 28)
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10


def make_splits(per_class=(30, 30, 30)):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)]).astype(np.int32)
    images = (np.arange(len(labels))[:, None, None] % 256).astype(np.uint8) * np.ones(
        (1, 4, 4), np.uint8
    )
    return Split(images, labels)


def test_split_is_stratified_seeded_and_disjoint():
    train = make_splits((40, 40, 20))
    test = make_splits((5, 5, 5))
    a = prepare_splits(train, test, ("a", "b", "c"), 0.25, seed=1)
    b = prepare_splits(train, test, ("a", "b", "c"), 0.25, seed=1)
    c = prepare_splits(train, test, ("a", "b", "c"), 0.25, seed=2)
    assert np.bincount(a.val.labels).tolist() == [10, 10, 5]
    assert np.bincount(a.train.labels).tolist() == [30, 30, 15]
    np.testing.assert_array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(a.train).isdisjoint(ids(a.val))
    assert a.train.images.shape[1:] == (4, 4, 1)


def test_limits_shrink_class_proportionally_and_card_counts():
    data = prepare_splits(make_splits((60, 60, 60)), make_splits((30, 30, 30)),
                          ("a", "b", "c"), 0.5, seed=0, train_limit=30, test_limit=9)
    assert len(data.train) + len(data.val) == 30
    assert np.bincount(data.test.labels).tolist() == [3, 3, 3]
    card = data_card(data, "test", {}, "none")
    assert card["sizes"] == {"train": 15, "val": 15, "test": 9}
    assert card["counts_per_class"]["test"] == {"a": 3, "b": 3, "c": 3}


def test_spooled_images_split_exactly_like_arrays(tmp_path):
    """The seeded split logic runs on lazy spool views unchanged: same images, same order."""
    from sklearn.datasets import load_digits

    from cnnpipe.data.spool import Spool

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    spool = Spool((8, 8), tmp_path)
    for image in images:
        spool.append(image)
    spool.finish()
    assert spool.all_gray
    lazy = Split(spool.view(1), labels)
    np.testing.assert_array_equal(np.asarray(spool.view(3)[:5]), np.repeat(images[:5], 3, axis=-1))
    names = tuple(str(d) for d in range(10))
    from_arrays = prepare_splits(Split(images[:1500], labels[:1500]), Split(images[1500:], labels[1500:]),
                                 names, 0.2, seed=4, train_limit=1000)  # fmt: skip
    from_spool = prepare_splits(lazy.take(np.arange(1500)), lazy.take(np.arange(1500, 1797)),
                                names, 0.2, seed=4, train_limit=1000)  # fmt: skip
    for name in ("train", "val", "test"):
        a, b = getattr(from_arrays, name), getattr(from_spool, name)
        assert b.images.shape == a.images.shape
        np.testing.assert_array_equal(np.asarray(b.images), a.images)
        np.testing.assert_array_equal(b.labels, a.labels)
    assert data_card(from_spool, "x", {}, "none")["image_shape"] == [8, 8, 1]
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_train_limit_too_small_for_validation_is_named_not_val_fraction():
    from cnnpipe.data.prepare import SplitError

    with pytest.raises(SplitError) as refused:
        prepare_splits(make_splits((60, 60, 60)), make_splits((5, 5, 5)), ("a", "b", "c"),
                       0.1, seed=0, train_limit=2)
    message = str(refused.value)
    assert message == (
        "data.train_limit=2 leaves 3 images for training and validation (1 or fewer per "
        "class), and data.val_fraction takes at least one of each class: none is left to "
        "train on; raise data.train_limit (about 6 keeps two of every class) or set it to 0 "
        "for all 180"
    )
    # The limit it suggests is enough, and the pools the report counts are the limited ones.
    assert len(prepare_splits(make_splits((60, 60, 60)), make_splits((5, 5, 5)),
                              ("a", "b", "c"), 0.1, seed=0, train_limit=6).train) == 3
    assert np.bincount(refused.value.pools["train"]).tolist() == [1, 1, 1]
    # Without a limit, too few images are val_fraction's to explain.
    with pytest.raises(SplitError, match="^data.val_fraction leaves no training images$"):
        prepare_splits(make_splits((1, 1)), make_splits((1, 1)), ("a", "b"), 0.1, seed=0)


def test_the_report_of_a_refused_train_limit_counts_the_limited_folder(tmp_path):
    from fixtures import write_digits_folder

    from cnnpipe.data.quality import DataQualityError
    from cnnpipe.data.sources import build_dataset
    from cnnpipe.params.schema import Data, ImageFolder, Images

    write_digits_folder(tmp_path / "digits", size=8, per_class=18)  # 180 images
    settings = Data(source="image_folder", image_folder=ImageFolder(path=str(tmp_path / "digits")),
                    images=Images(image_size=(8, 8)), train_limit=5)
    refusal = r"^data\.train_limit=5 leaves 10 images"
    with pytest.raises(DataQualityError, match=refusal) as refused:
        build_dataset(settings, seed=0)
    report = refused.value.report
    # 4 of each class's 18 went to test; the limit kept 1 of the other 14 for train and val.
    assert report["counts"]["train"] == {str(d): 1 for d in range(10)}
    assert report["counts"]["test"] == {str(d): 4 for d in range(10)}
    assert report["problems"][-1].startswith("data.train_limit=5 leaves 10 images")
