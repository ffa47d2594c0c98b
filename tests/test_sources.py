import csv
import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnpipe.params.schema import Archive as ArchiveConfig, Data as DataConfig, ImageFolder as ImageFolderConfig, Images as ImagesConfig
from cnnpipe.data import archive as archive_lib
from cnnpipe.data import keras_datasets
from cnnpipe.data.folders import fit_to_size, iter_decode_files, scan_image_folder
from cnnpipe.data.decode import IMAGE_EXTENSIONS
from cnnpipe.data.quality import DataQualityError, Item, find_duplicates, render_markdown
from cnnpipe.data.sources import build_dataset, load_source, relabel, select_classes
from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import ShardSet

ROOT = Path(__file__).resolve().parents[1]
SMALL = ImagesConfig(image_size=(16, 16), channels=3)


def png(seed: int, size=(20, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def colour(seed: int, size=(20, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8))


def make_messy_folder(root: Path) -> Path:
    """3 classes, every format, the usual junk and two duplicate pairs (see expected counts)."""
    cat = root / "cat"
    write(cat / "a.png", png(1))
    write(cat / "dup_a.png", png(1))  # within-class duplicate of cat/a.png
    write(cat / "b.jpg", encode(colour(2), "JPEG"))
    write(cat / "c.bmp", encode(colour(3), "BMP"))
    write(cat / "d.webp", encode(colour(4), "WEBP"))
    write(cat / "e.gif", encode(colour(5), "GIF"))
    write(cat / "f.tiff", encode(colour(6), "TIFF"))
    rgba = np.zeros((10, 10, 4), np.uint8)
    write(cat / "rgba.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    write(cat / "g16.png", encode(Image.fromarray(np.full((8, 16), 40000, np.uint16)), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6
    write(cat / "rot.jpg", encode(colour(7, (2, 4)), "JPEG", exif=exif.tobytes()))
    write(cat / "corrupt.jpg", encode(colour(8, (64, 64)), "JPEG")[:300])
    write(cat / "empty.jpg", b"")
    write(cat / "notes.png", b"not really a png\n")
    write(cat / "readme.txt", b"about the cats\n")
    write(cat / ".hidden.png", png(9))
    write(cat / ".thumbs" / "x.png", png(10))
    for i in range(6):
        write(root / "dog" / f"{i}.png", png(100 + i))
        write(root / "bird" / "nested" / f"{i}.png", png(200 + i))
    write(root / "dog" / "b_copy.jpg", (cat / "b.jpg").read_bytes())  # a label conflict
    write(root / "stray.jpg", encode(colour(11), "JPEG"))
    return root


def folder_config(root: Path, **changes) -> DataConfig:
    settings = {
        "source": "image_folder",
        "image_folder": ImageFolderConfig(path=str(root)),
        "images": SMALL,
        "max_unreadable_fraction": 0.2,
        "max_label_conflict_fraction": 0.2,  # the messy folder has one conflicting pair
        **changes,
    }
    return DataConfig(**settings)


def test_messy_folder_report_counts_exactly(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    loaded = load_source(folder_config(root))
    report = loaded.report
    assert loaded.class_names == ("bird", "cat", "dog")
    assert loaded.test is None
    assert report["files"] == {
        "image_files": 26,
        "decoded": 23,
        "skipped": 3,
        "unreadable_fraction": round(3 / 26, 6),
        "ignored": {"hidden": 2, "non_image_extension": 1, "outside_class_folders": 1},
        "ignored_extensions": {".txt": 1},
    }
    assert report["skipped"] == [
        {"path": "cat/corrupt.jpg", "reason": "truncated"},
        {"path": "cat/empty.jpg", "reason": "empty file"},
        {"path": "cat/notes.png", "reason": "not an image (or not a supported format)"},
    ]
    dup = report["duplicates"]
    assert {k: dup[k] for k in ("groups", "copies", "within_split", "across_splits")} == {
        "groups": 2, "copies": 2, "within_split": 2, "across_splits": 0,
    }  # fmt: skip
    # The copy under cat/ and the one under dog/ both go: neither label can be trusted.
    assert dup["label_conflicts"] == 1 and dup["removed"] == 3
    kept = {g["kept"]["path"]: [c["path"] for c in g["copies"]] for g in dup["details"]}
    assert kept == {"cat/a.png": ["cat/dup_a.png"]}
    conflicts = report["label_conflicts"]
    assert {k: conflicts[k] for k in ("groups", "images", "removed", "fraction")} == {
        "groups": 1, "images": 2, "removed": 2, "fraction": round(2 / 23, 6),
    }  # fmt: skip
    assert conflicts["details"][0]["classes"] == ["cat", "dog"]
    assert [f["path"] for f in conflicts["details"][0]["files"]] == ["cat/b.jpg", "dog/b_copy.jpg"]
    originals = report["original_images"]
    assert originals["count"] == 23
    assert originals["sizes"] == {"30x20": 20, "10x10": 1, "16x8": 1, "4x2": 1}
    assert originals["modes"] == {"RGB": 20, "P": 1, "RGBA": 1, "I;16": 1}
    assert originals["formats"] == {"PNG": 16, "JPEG": 3, "BMP": 1, "WEBP": 1, "GIF": 1, "TIFF": 1}
    assert np.bincount(loaded.train.labels).tolist() == [6, 8, 6]
    assert loaded.train.images.shape == (20, 16, 16, 3)
    assert loaded.train.images.dtype == np.uint8


def test_decoded_pixels_are_resized_and_flattened(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    loaded = load_source(folder_config(root, images=ImagesConfig(image_size=(8, 12), channels=1)))
    assert loaded.train.images.shape == (20, 8, 12, 1)
    outcomes = list(iter_decode_files([root / "cat" / "rgba.png", root / "cat" / "g16.png"],
                                      (4, 4), 1))
    assert outcomes[0].pixels.reshape(-1).tolist() == [255] * 16  # transparent -> white
    assert outcomes[1].pixels.reshape(-1).tolist() == [round(40000 / 257)] * 16
    rotated = next(iter_decode_files([root / "cat" / "rot.jpg"], (4, 2), 3))
    assert (rotated.width, rotated.height) == (4, 2)


def test_worker_processes_give_the_same_result_in_the_same_order(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    paths = [f.path for f in scan_image_folder(root, IMAGE_EXTENSIONS).files]
    serial = list(iter_decode_files(paths, (8, 8), 3, workers=1))
    parallel = list(iter_decode_files(paths, (8, 8), 3, workers=2, min_files_for_workers=0))
    assert [o.reason for o in parallel] == [o.reason for o in serial]
    assert [o.sha256 for o in parallel] == [o.sha256 for o in serial]
    for a, b in zip(serial, parallel, strict=True):
        if a.pixels is not None:
            np.testing.assert_array_equal(a.pixels, b.pixels)


def test_fit_to_size_can_crop_to_the_aspect_ratio():
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 255  # white centre third
    assert fit_to_size(pixels, (10, 10), crop_to_aspect_ratio=True).min() == 255
    assert fit_to_size(pixels, (10, 10)).min() < 255  # stretched keeps the black sides


def test_build_draws_a_stratified_test_split_and_completes_the_report(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    built = build_dataset(folder_config(root, test_fraction=0.2, val_fraction=0.1), seed=3)
    report = built.report
    assert report["counts"] == {
        "train": {"bird": 4, "cat": 5, "dog": 4},
        "val": {"bird": 1, "cat": 1, "dog": 1},
        "test": {"bird": 1, "cat": 2, "dog": 1},
    }
    assert report["totals_per_class"] == {"bird": 6, "cat": 8, "dog": 6}
    assert report["problems"] == []
    assert {"class": "cat", "split": "test", "count": 2} in report["class_balance"]
    assert len(report["class_balance"]) == 9
    card = built.card
    assert card["sizes"] == {"train": 13, "val": 3, "test": 4}
    assert card["task"] == "multiclass"
    assert card["image_loading"]["image_size"] == [16, 16]
    assert set(card["checksums_sha256"]) == {"images"}
    markdown = render_markdown(report)
    for heading in ("# Data quality report", "## Images per class and split", "## Skipped files",
                    "## Files not used", "## Original images", "## Exact duplicates"):
        assert heading in markdown
    assert "| cat/corrupt.jpg | truncated |" in markdown
    again = build_dataset(folder_config(root, test_fraction=0.2, val_fraction=0.1), seed=3)
    np.testing.assert_array_equal(again.prepared.test.images, built.prepared.test.images)


def make_presplit_folder(root: Path) -> Path:
    for i in range(5):
        write(root / "train" / "a" / f"{i}.png", png(300 + i))
        write(root / "train" / "b" / f"{i}.png", png(400 + i))
        write(root / "test" / "a" / f"t{i}.png", png(500 + i))
        write(root / "test" / "b" / f"t{i}.png", png(600 + i))
    write(root / "val" / "a" / "v.png", png(700))
    write(root / "test" / "a" / "leak.png", png(300))  # = train/a/0.png
    write(root / "test" / "b" / "leak.png", png(301))  # = train/a/1.png, other label: both go
    write(root / "test" / "b" / "twin.png", png(600))  # = test/b/t0.png, same split
    return root


def test_presplit_folder_keeps_its_test_split_and_drops_leaks(tmp_path):
    root = make_presplit_folder(tmp_path / "images")
    loaded = load_source(folder_config(root))
    assert loaded.class_names == ("a", "b")
    # val/ merged into train; train/a/1.png removed with its conflicting copy in test/b/
    assert np.bincount(loaded.train.labels).tolist() == [5, 5]
    assert np.bincount(loaded.test.labels).tolist() == [5, 5]  # leaks and the twin removed
    dup = loaded.report["duplicates"]
    assert (dup["across_splits"], dup["within_split"], dup["removed"]) == (2, 1, 4)
    assert dup["label_conflicts"] == 1
    assert any("merged into the training pool" in note for note in loaded.report["notes"])
    built = build_dataset(folder_config(root), seed=0)
    assert built.report["counts"]["test"] == {"a": 5, "b": 5}
    assert built.card["presplit"] is True


def test_class_selection_order_and_binary_task(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    built = build_dataset(folder_config(root, classes=("dog", "bird")), seed=0)
    assert built.prepared.class_names == ("dog", "bird")
    assert built.card["task"] == "binary"
    assert built.report["files"]["ignored"]["unselected_class"] == 13
    # dog/b_copy.jpg duplicates a cat image; with cat left out it is the only copy and stays.
    assert built.report["totals_per_class"] == {"dog": 7, "bird": 6}
    assert built.report["duplicates"]["groups"] == 0


def test_unknown_class_lists_the_available_ones(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    with pytest.raises(DataError) as excinfo:
        load_source(folder_config(root, classes=("cat", "horse")))
    expected = "data.classes: unknown class(es) 'horse'; available: bird, cat, dog"
    assert str(excinfo.value) == expected


def test_select_and_relabel_are_pure():
    assert select_classes(("a", "b", "c"), None) == ("a", "b", "c")
    keep, labels = relabel(np.array([0, 1, 2, 2, 0]), ("a", "b", "c"), ("c", "a"))
    assert keep.tolist() == [True, False, True, True, True]
    assert labels.tolist() == [1, 0, 0, 1]


def test_too_many_unreadable_files_stop_with_the_report_attached(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    with pytest.raises(DataQualityError) as excinfo:
        build_dataset(folder_config(root, max_unreadable_fraction=0.05), seed=0)
    message = str(excinfo.value)
    assert message.startswith("3 of 26 image files (11.5%) could not be decoded")
    assert "data.max_unreadable_fraction=0.05" in message and "\n" not in message
    assert excinfo.value.report["counts"]["train"]["cat"] > 0  # complete, so it can be written


def test_too_few_images_per_class_is_refused(tmp_path):
    root = make_messy_folder(tmp_path / "images")
    expected = r"min_images_per_class=7 usable images: bird \(6\), dog \(6\)"
    with pytest.raises(DataQualityError, match=expected):
        build_dataset(folder_config(root, min_images_per_class=7), seed=0)


def test_missing_or_empty_folders_give_one_line(tmp_path):
    with pytest.raises(DataError, match="image folder .* not found"):
        load_source(folder_config(tmp_path / "nope"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no image files in the class folders"):
        load_source(folder_config(tmp_path / "empty"))
    write(tmp_path / "bad" / "cat" / "a.jpg", b"junk")
    write(tmp_path / "bad" / "dog" / "b.jpg", b"")
    with pytest.raises(DataQualityError, match="none of the 2 image files could be decoded"):
        load_source(folder_config(tmp_path / "bad"))


def test_an_absurd_image_size_is_refused_before_decoding(tmp_path):
    """params refuses it; the decode path still does for a size that skipped validation
    (a hand-edited resolved/prepare.json), before the spool or a worker allocates it."""
    from cnnpipe.core.errors import ConfigError

    root = make_messy_folder(tmp_path / "images")
    huge = ImagesConfig.model_construct(**{**SMALL.model_dump(), "image_size": (10000, 10000)})
    with pytest.raises(ConfigError, match=r"^data.images.image_size: each side must be 1 to "
                                          r"2048 pixels; got \[10000, 10000\]$"):
        load_source(folder_config(root).model_copy(update={"images": huge}), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no spool was made


def test_scan_order_is_sorted_and_deterministic(tmp_path):
    root = make_presplit_folder(tmp_path / "images")
    scan = scan_image_folder(root, IMAGE_EXTENSIONS)
    train = [f.relative for f in scan.files if f.pool == "train"]
    assert train == sorted(train)
    pools = [f.pool for f in scan.files]
    assert pools == sorted(pools, key=["train", "test"].index)


def test_duplicate_search_keeps_the_earliest_split():
    items = [
        Item("x", "a", "test", "h1"),
        Item("y", "a", "val", "h1"),
        Item("z", "a", "train", "h1"),
        Item("w", "a", "train", "h2"),
    ]
    result = find_duplicates(items, remove=True)
    assert result.keep.tolist() == [False, False, True, True]
    assert result.groups[0]["kept"] == {"path": "z", "class": "a", "split": "train"}
    assert result.summary["across_splits"] == 2 and result.summary["label_conflicts"] == 0
    assert find_duplicates(items, remove=False).keep.all()


def test_copies_under_different_classes_are_all_removed_whatever_sorts_first():
    items = [
        Item("x", "a", "test", "h1"),
        Item("y", "a", "val", "h1"),
        Item("z", "b", "train", "h1"),
        Item("w", "a", "train", "h2"),
    ]
    result = find_duplicates(items, remove=True)
    assert result.keep.tolist() == [False, False, False, True]
    assert result.groups == []
    assert result.conflicts == [{"sha256": "h1", "classes": ["a", "b"], "files": [
        {"path": "z", "class": "b", "split": "train"},
        {"path": "y", "class": "a", "split": "val"},
        {"path": "x", "class": "a", "split": "test"},
    ]}]  # fmt: skip
    assert result.summary["label_conflicts"] == 1 and result.summary["removed"] == 3
    assert find_duplicates(items, remove=False).keep.all()  # array sources: labels as published


# --- archives -------------------------------------------------------------------------


def zip_folder(folder: Path, destination: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(destination, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return destination


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive_config(location: str, digest: str | None, download_dir: Path, **changes) -> DataConfig:
    archive = ArchiveConfig(path_or_url=location, sha256=digest, download_dir=str(download_dir),
                            **changes)
    return DataConfig(source="archive", archive=archive, images=SMALL,
                      max_unreadable_fraction=0.2)


@pytest.fixture(scope="module")
def clean_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    for name, base in (("cat", 0), ("dog", 50)):
        for i in range(6):
            write(root / name / f"{i}.png", png(base + i))
    return root


def test_zip_archive_with_a_wrapping_folder_loads(clean_images, tmp_path):
    archive = zip_folder(clean_images, tmp_path / "pets.zip", prefix="pets/")
    loaded = load_source(archive_config(str(archive), sha256(archive), tmp_path / "dl"))
    assert loaded.class_names == ("cat", "dog")
    assert len(loaded.train) == 12
    assert loaded.checksums["archive"] == sha256(archive)
    assert loaded.card_extra["archive"]["dataset_folder"] == "pets"
    # A second run reuses the extraction instead of writing it again.
    marker = next((tmp_path / "dl" / "extracted").iterdir()) / archive_lib.COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    load_source(archive_config(str(archive), None, tmp_path / "dl"))
    assert marker.stat().st_mtime_ns == before


def test_tar_gz_archive_loads(clean_images, tmp_path):
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(clean_images, arcname="data")
    loaded = load_source(archive_config(str(archive), sha256(archive), tmp_path / "dl"))
    assert len(loaded.train) == 12


def evil_zip(path: Path, member: str, link: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat/ok.png", png(1))
        info = zipfile.ZipInfo(member)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "../../../outside.txt")
        else:
            archive.writestr(info, b"escaped")
    return path


def evil_tar(path: Path, name: str, kind: bytes, target: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = png(1)
        info = tarfile.TarInfo("cat/ok.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo(name)
        evil.type = kind
        evil.linkname = target
        payload = b"escaped" if kind == tarfile.REGTYPE else b""
        evil.size = len(payload)
        tar.addfile(evil, io.BytesIO(payload))
    return path


UNSAFE_ARCHIVES = {
    # name: (zip or tar, member, tar member type or zip symlink flag, link target), message
    "zip dotdot": (("zip", "../evil.txt", False, ""), "`../evil.txt` contains `..`"),
    "zip nested dotdot": (("zip", "cat/../../evil.txt", False, ""), "contains `..`"),
    "zip absolute": (("zip", "/tmp/evil.txt", False, ""), "`/tmp/evil.txt` has an absolute path"),
    "zip drive letter": (("zip", "C:/evil.txt", False, ""), "has an absolute path"),
    "zip symlink out": (
        ("zip", "cat/link.png", True, ""), "is a link to `../../../outside.txt` outside"
    ),
    "tar dotdot": (("tar", "../evil.txt", tarfile.REGTYPE, ""), "contains `..`"),
    "tar absolute": (("tar", "/evil.txt", tarfile.REGTYPE, ""), "absolute path"),
    "tar symlink out": (
        ("tar", "cat/l.png", tarfile.SYMTYPE, "../../evil.txt"),
        "is a link to `../../evil.txt` outside",
    ),
    "tar symlink absolute": (
        ("tar", "cat/l.png", tarfile.SYMTYPE, "/etc/passwd"), "outside the extraction folder"
    ),
    "tar hardlink out": (
        ("tar", "cat/h.png", tarfile.LNKTYPE, "../evil.txt"), "is a link to `../evil.txt` outside"
    ),
    "tar device": (("tar", "cat/dev", tarfile.CHRTYPE, ""), "device, fifo or other special file"),
}


@pytest.mark.parametrize("name", sorted(UNSAFE_ARCHIVES))
def test_unsafe_archives_are_refused_and_nothing_escapes(tmp_path, name):
    (kind, member, flag, target), message = UNSAFE_ARCHIVES[name]
    source = tmp_path / "source"
    source.mkdir()
    if kind == "zip":
        archive = evil_zip(source / "a.zip", member, link=flag)
    else:
        archive = evil_tar(source / "a.tgz", member, flag, target)
    download_dir = tmp_path / "work" / "downloads"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as excinfo:
        load_source(archive_config(str(archive), sha256(archive), download_dir))
    assert message in str(excinfo.value) and "refusing to extract" in str(excinfo.value)
    after = sorted(p for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    # Only the (now empty) extraction root may have appeared: no member, no staging folder.
    assert set(new) <= {tmp_path / "work", download_dir, download_dir / "extracted"}, new
    assert not list(Path("/tmp").glob("evil.txt"))


def test_safe_links_inside_are_not_materialised(tmp_path):
    archive = evil_tar(tmp_path / "a.tgz", "cat/alias.png", tarfile.SYMTYPE, "ok.png")
    extraction = archive_lib.extract_archive(archive, tmp_path / "out", 2**20, 10)
    assert extraction.links_not_extracted == 1
    assert sorted(p.name for p in (tmp_path / "out" / "cat").iterdir()) == ["ok.png"]


def test_archive_caps_on_size_and_member_count(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/zeros.png", b"\0" * (3 * 2**20))  # 3 MiB of zeros: a few kB zipped
        zf.writestr("cat/a.png", png(1))
    assert archive.stat().st_size < 50_000
    with pytest.raises(DataError, match=r"more than 1 MiB \(data.archive.max_extracted_mb\)"):
        archive_lib.extract_archive(archive, tmp_path / "out", max_bytes=2**20, max_members=10)
    with pytest.raises(DataError, match=r"2 members, more than the limit of 1"):
        archive_lib.extract_archive(archive, tmp_path / "out", max_bytes=2**30, max_members=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


def test_wrong_checksum_is_refused_before_extraction(clean_images, tmp_path):
    archive = zip_folder(clean_images, tmp_path / "pets.zip")
    expected = r"pets.zip: checksum mismatch \(sha256 [0-9a-f]{64}, expected 0{64}\)"
    with pytest.raises(DataError, match=expected):
        load_source(archive_config(str(archive), "0" * 64, tmp_path / "dl"))
    assert not (tmp_path / "dl").exists()


def test_not_an_archive(tmp_path):
    path = tmp_path / "photos.zip"
    path.write_bytes(b"plain text")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        load_source(archive_config(str(path), None, tmp_path / "dl"))


@pytest.fixture
def served(clean_images, tmp_path):
    """A loopback-only HTTP server for a folder holding pets.zip."""
    folder = tmp_path / "served"
    folder.mkdir()
    archive = zip_folder(clean_images, folder / "pets.zip")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pets.zip", sha256(archive)
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_with_progress_and_verified(served, tmp_path, capsys):
    url, digest = served
    loaded = load_source(archive_config(url, digest, tmp_path / "dl"))
    assert len(loaded.train) == 12
    assert loaded.description == f"archive:{url}"
    assert f"downloading {url}:" in capsys.readouterr().err
    cached = tmp_path / "dl" / f"archive-{digest[:16]}.zip"
    assert sha256(cached) == digest
    load_source(archive_config(url, digest, tmp_path / "dl"))  # from the cache
    assert "downloading" not in capsys.readouterr().err


def test_url_with_wrong_checksum_is_deleted(served, tmp_path):
    url, _ = served
    with pytest.raises(DataError, match="checksum mismatch"):
        load_source(archive_config(url, "f" * 64, tmp_path / "dl"))
    assert list((tmp_path / "dl").iterdir()) == []


def test_unreachable_url_fails_with_one_line(tmp_path):
    with pytest.raises(DataError, match=r"download of http://127.0.0.1:9/x.zip failed"):
        load_source(archive_config("http://127.0.0.1:9/x.zip", "a" * 64, tmp_path / "dl"))
    assert list((tmp_path / "dl").iterdir()) == []


# --- keras loaders --------------------------------------------------------------------


def test_keras_source_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras_datasets, "network_reachable", lambda url: "Network is unreachable")

    def must_not_run(name):
        raise AssertionError("keras must not be asked to download without a network")

    monkeypatch.setattr(keras_datasets, "_keras_load_data", must_not_run)
    with pytest.raises(DataError) as excinfo:
        load_source(DataConfig(source="cifar10"))
    message = str(excinfo.value)
    assert message.startswith("cifar10 is not in ")
    assert "unreachable (Network is unreachable)" in message and "\n" not in message


def test_keras_fetch_failure_becomes_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras_datasets, "network_reachable", lambda url: None)

    def fail(name):
        raise Exception("URL fetch failure on https://x: None -- timed out\nmore detail")

    monkeypatch.setattr(keras_datasets, "_keras_load_data", fail)
    expected = r"^keras could not load mnist: URL fetch failure on https://x: None -- timed out$"
    with pytest.raises(DataError, match=expected):
        load_source(DataConfig(source="mnist"))


def test_keras_source_with_class_selection(tmp_path, monkeypatch):
    (tmp_path / "keras" / "datasets" / "cifar-10-batches-py-target").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    rng = np.random.default_rng(0)

    def fake_cifar(name):
        assert name == "cifar10"
        def split(n):
            return rng.integers(0, 256, (n, 32, 32, 3), np.uint8), np.arange(n).reshape(-1, 1) % 10

        return split(100), split(20)

    monkeypatch.setattr(keras_datasets, "_keras_load_data", fake_cifar)
    built = build_dataset(DataConfig(source="cifar10", classes=("dog", "cat"), val_fraction=0.2), 0)
    assert built.prepared.class_names == ("dog", "cat")
    assert built.report["counts"]["test"] == {"dog": 2, "cat": 2}
    assert built.report["totals_per_class"] == {"dog": 12, "cat": 12}
    assert built.card["task"] == "binary"
    assert built.report["files"]["ignored"] == {"unselected_class": 96}
    assert built.report["duplicates"]["policy"].startswith("reported only")
    assert built.prepared.train.images.shape[1:] == (32, 32, 3)


# --- the stage ------------------------------------------------------------------------


def run_prepare(workdir: Path, data: dict):
    params = {
        "seed": 0,
        "data": data,
        # Two convs fit the 16x16 images these tests use (the default three need more).
        "models": {"simple_cnn": {"architecture": "simple_cnn", "filters": [8, 16]}},
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("params", "prepare"):  # as `dvc repro` runs them
        result = subprocess.run(
            [sys.executable, str(ROOT / "stages" / f"{stage}.py")],
            cwd=workdir, capture_output=True, text=True, timeout=900,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},  # this checkout's code
        )
        if result.returncode:
            break
    return result


def test_prepare_stage_writes_reports_and_fails_with_one_line(tmp_path):
    make_messy_folder(tmp_path / "images")
    data = {
        "source": "image_folder",
        "image_folder": {"path": "images"},
        "images": {"image_size": [16, 16]},
        "max_unreadable_fraction": 0.01,
        "max_label_conflict_fraction": 0.2,
    }
    failed = run_prepare(tmp_path, data)
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith("error: 3 of 26 image files (11.5%) could not be decoded")
    assert (tmp_path / "reports" / "data_quality.md").is_file()  # written to explain the failure
    assert not (tmp_path / "data" / "prepared").exists()

    done = run_prepare(tmp_path, {**data, "max_unreadable_fraction": 0.2})
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "reports" / "data_quality.json").read_text())
    assert report["problems"] == [] and report["files"]["skipped"] == 3
    with open(tmp_path / "plots" / "class_balance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0].keys() == {"class", "split", "count"} and len(rows) == 9
    card = json.loads((tmp_path / "data" / "prepared" / "data_card.json").read_text())
    assert card["class_names"] == ["bird", "cat", "dog"]
    assert sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir()) == [
        "data_card.json", "test", "train", "val",
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared"]  # no spool left
    assert card["image_shape"] == [16, 16, 3] and card["channels"] == 3  # colour files: RGB
    assert card["image_loading"]["channels_setting"] is None
    splits = {name: ShardSet(tmp_path / "data" / "prepared" / name) for name in ("train", "val", "test")}
    assert {name: len(s) for name, s in splits.items()} == card["sizes"]
    assert card["storage"]["format"] == "cnnpipe-uint8-records"
    assert card["storage"]["record_bytes"] == 2 + 16 * 16 * 3
    on_disk = sum(p.stat().st_size for p in (tmp_path / "data" / "prepared").rglob("*") if p.is_file())
    assert card["storage"]["bytes"] == on_disk - (tmp_path / "data" / "prepared" / "data_card.json").stat().st_size
    for name, split in splits.items():
        assert np.bincount(split.labels, minlength=3).tolist() == list(card["counts_per_class"][name].values())
    shutil.rmtree(tmp_path / "images")


# --- streaming into shards --------------------------------------------------------------


def make_digit_folder(root: Path, count: int = 300, colour_every: int = 0) -> Path:
    """Real handwritten digits (scikit-learn's, offline) as gray PNGs in class folders;
    every ``colour_every``-th one as a tinted RGB JPEG."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        pixels = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
        folder = root / str(digits.target[i])
        if colour_every and i % colour_every == 0:
            tinted = np.stack([pixels, pixels // 2, 255 - pixels], axis=-1)
            write(folder / f"{i}.jpg", encode(Image.fromarray(tinted), "JPEG"))
        else:
            write(folder / f"{i}.png", encode(Image.fromarray(pixels), "PNG"))
    return root


def test_channels_follow_the_data_when_not_set(tmp_path):
    gray = make_digit_folder(tmp_path / "gray")
    follow = build_dataset(folder_config(gray, images=ImagesConfig(image_size=(16, 16))), seed=1)
    explicit = build_dataset(
        folder_config(gray, images=ImagesConfig(image_size=(16, 16), channels=1)), seed=1
    )
    assert follow.card["image_shape"] == [16, 16, 1] and follow.card["channels"] == 1
    assert follow.card["image_loading"]["channels"] == 1
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(
            np.asarray(getattr(follow.prepared, name).images),
            np.asarray(getattr(explicit.prepared, name).images),
        )
    mixed = make_digit_folder(tmp_path / "mixed", colour_every=10)
    follow = build_dataset(folder_config(mixed, images=ImagesConfig(image_size=(16, 16))), seed=1)
    explicit = build_dataset(
        folder_config(mixed, images=ImagesConfig(image_size=(16, 16), channels=3)), seed=1
    )
    assert follow.card["channels"] == 3
    np.testing.assert_array_equal(
        np.asarray(follow.prepared.train.images), np.asarray(explicit.prepared.train.images)
    )


def test_folder_images_never_sit_in_memory_all_at_once(tmp_path):
    """Decoded pixels go to the spool as they arrive: the parent's peak allocations stay far
    below the pixels of the whole set (numpy reports its buffers to tracemalloc)."""
    import tracemalloc

    root = make_digit_folder(tmp_path / "digits", count=600)
    images = ImagesConfig(image_size=(96, 96))
    tracemalloc.start()
    try:
        loaded = load_source(folder_config(root, images=images), spool_dir=tmp_path / "spool")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixel_bytes = 600 * 96 * 96
    assert not isinstance(loaded.train.images, np.ndarray)  # a lazy view of the spool
    assert loaded.train.images.shape == (600, 96, 96, 1)
    assert peak < 0.5 * pixel_bytes, (peak, pixel_bytes)  # all at once would be >= 1.0
    assert list((tmp_path / "spool").iterdir()) == []  # unnamed: nothing to clean up


def stage_config(root: Path):
    return folder_config(root, images=ImagesConfig(image_size=(16, 16)))


def test_a_full_disk_while_spooling_is_one_line(tmp_path, monkeypatch):
    import errno

    from cnnpipe.data import spool

    root = make_digit_folder(tmp_path / "digits", count=40)

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(spool.tempfile, "TemporaryFile", FullDisk)
    with pytest.raises(DataError) as excinfo:
        build_dataset(stage_config(root), seed=0, spool_dir=tmp_path / "data")
    assert str(excinfo.value) == (
        f"cannot write decoded images to {tmp_path / 'data'}: No space left on device"
    )


def test_a_full_disk_while_writing_shards_leaves_no_prepared_folder(tmp_path, monkeypatch):
    import builtins
    import errno

    from cnnpipe.data.storage import write_prepared

    root = make_digit_folder(tmp_path / "digits", count=100)
    built = build_dataset(stage_config(root), seed=0, spool_dir=tmp_path)
    real_open = builtins.open
    written = []

    def open_that_fills_up(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".bin"):
            written.append(path)
            if len(written) == 2:  # train went in; the disk is full when val starts
                handle.close()
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return handle

    monkeypatch.setattr(builtins, "open", open_that_fills_up)
    target = tmp_path / "data" / "prepared"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".prepared.staging-killed").mkdir()  # from an earlier killed run
    with pytest.raises(DataError) as excinfo:
        write_prepared(target, built.prepared, built.card)
    assert str(excinfo.value) == f"cannot write {target / 'val'}: No space left on device"
    assert list((tmp_path / "data").iterdir()) == []  # no half-written split, no staging
    monkeypatch.setattr(builtins, "open", real_open)
    card = write_prepared(target, built.prepared, built.card)
    assert sorted(p.name for p in target.iterdir()) == ["data_card.json", "test", "train", "val"]
    train = ShardSet(target / "train")
    np.testing.assert_array_equal(train.read(np.arange(len(train))), np.asarray(built.prepared.train.images))
    np.testing.assert_array_equal(train.labels, built.prepared.train.labels)
    assert card["storage"]["bytes"] <= 1.1 * sum(len(s) for s in built.prepared.splits().values()) * 16 * 16
