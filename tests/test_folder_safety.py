"""No silent wrong labels from an image folder: links, copies under two classes, special
files, loops and endless files, each on a real file tree."""

from __future__ import annotations

import io
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnpipe import cli
from cnnpipe.data.decode import ImageDecodeError, decode_image, max_file_bytes
from cnnpipe.data.folders import fit_to_size
from cnnpipe.data.quality import DataQualityError, render_markdown
from cnnpipe.data.sources import build_dataset, load_source
from cnnpipe.params.schema import Data, ImageFolder, Images

PER_CLASS = 12


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_red_blue(root: Path, first_seed: int = 0) -> Path:
    for offset, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            (root / name / f"{i:02d}.png").write_bytes(png(first_seed + 1000 * offset + i))
    return root


def config(root: Path, **changes) -> Data:
    settings = {
        "source": "image_folder",
        "image_folder": ImageFolder(path=str(root)),
        "images": Images(image_size=(8, 8), channels=3),
        **changes,
    }
    return Data(**settings)


@pytest.fixture
def no_hang():
    """Fail instead of blocking the suite when a read of a special file would never end."""

    def give_up(*_):
        raise TimeoutError("the folder scan blocked on a special file")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def pixels_by_class(built) -> dict[str, set[bytes]]:
    """Per class, the pixels of every image in any prepared split."""
    seen: dict[str, set[bytes]] = {}
    for split in built.prepared.splits().values():
        for image, label in zip(split.images, split.labels, strict=True):
            name = built.prepared.class_names[label]
            seen.setdefault(name, set()).add(np.asarray(image).tobytes())
    return seen


def decoded(content: bytes) -> bytes:
    """The pixels the prepare stage stores for a file of ``content``."""
    return fit_to_size(decode_image(content, channels=3), (8, 8)).tobytes()


def test_file_links_into_a_sibling_class_are_conflicts_removed_from_every_split(tmp_path):
    root = make_red_blue(tmp_path / "images")
    for i in range(2):  # two red images also filed as blue, through links
        (root / "blue" / f"from_red_{i}.png").symlink_to(Path("..") / "red" / f"{i:02d}.png")
    built = build_dataset(config(root, max_label_conflict_fraction=0.2), seed=0)
    conflicts = built.report["label_conflicts"]
    assert (conflicts["groups"], conflicts["images"], conflicts["removed"]) == (2, 4, 4)
    first = conflicts["details"][0]
    assert first["classes"] == ["blue", "red"]
    assert first["files"][0] == {
        "path": "blue/from_red_0.png", "class": "blue", "split": "train", "links_to": "red/00.png",
    }  # fmt: skip
    assert built.report["totals_per_class"] == {"blue": PER_CLASS, "red": PER_CLASS - 2}
    pixels = pixels_by_class(built)
    for i in range(2):  # in no split, under neither class
        linked = decoded((root / "red" / f"{i:02d}.png").read_bytes())
        assert linked not in pixels["red"] and linked not in pixels["blue"]
    markdown = render_markdown(built.report)
    assert "## Label conflicts" in markdown
    assert "train: blue/from_red_0.png (link to red/00.png)<br>train: red/00.png" in markdown

    # More than the threshold: one line that names an example, and the report to write.
    with pytest.raises(DataQualityError) as refused:
        build_dataset(config(root), seed=0)
    message = str(refused.value)
    assert message.startswith("4 of 26 decoded images (15.4%) are filed under two or more classes")
    assert "blue/from_red_0.png (link to red/00.png) = red/00.png" in message
    assert "data.max_label_conflict_fraction=0.01" in message and "\n" not in message
    assert refused.value.report["problems"] == [message.split("; details in")[0]]


def test_a_folder_link_into_a_sibling_class_relabels_nothing(tmp_path):
    root = make_red_blue(tmp_path / "images")
    (root / "blue" / "reds").symlink_to(Path("..") / "red")  # the 10 red images as blue
    built = build_dataset(config(root), seed=0)
    assert built.report["totals_per_class"] == {"blue": PER_CLASS, "red": PER_CLASS}
    red = {decoded((root / "red" / f"{i:02d}.png").read_bytes()) for i in range(PER_CLASS)}
    assert not red & pixels_by_class(built)["blue"]
    assert built.report["files"]["ignored"] == {"folder_link": 1}
    [entry] = built.report["not_read"]["details"]
    assert entry["path"] == "blue/reds"
    assert entry["reason"].startswith("link to the folder red: not followed")
    assert "| blue/reds | link to the folder red: not followed" in render_markdown(built.report)


def test_byte_identical_files_under_two_classes_are_removed_whichever_sorts_first(tmp_path):
    root = make_red_blue(tmp_path / "images")
    copy = png(777)
    (root / "blue" / "aa_copy.png").write_bytes(copy)  # sorts first in blue/
    (root / "red" / "zz_copy.png").write_bytes(copy)
    (root / "red" / "zz_twin.png").write_bytes((root / "red" / "03.png").read_bytes())
    built = build_dataset(config(root, max_label_conflict_fraction=0.1), seed=0)
    assert built.report["totals_per_class"] == {"blue": PER_CLASS, "red": PER_CLASS}
    [conflict] = built.report["label_conflicts"]["details"]
    assert [f["path"] for f in conflict["files"]] == ["blue/aa_copy.png", "red/zz_copy.png"]
    pixels = pixels_by_class(built)
    assert decoded(copy) not in pixels["blue"] | pixels["red"]
    # A copy under one class is still an ordinary duplicate: one is kept.
    [same_label] = built.report["duplicates"]["details"]
    assert same_label["kept"]["path"] == "red/03.png"
    assert built.report["duplicates"]["removed"] == 3


def test_presplit_conflict_leaves_both_train_and_test(tmp_path):
    root = tmp_path / "images"
    for first_seed, pool in ((0, "train"), (5000, "test")):
        make_red_blue(root / pool, first_seed)
    leaked = (root / "train" / "red" / "05.png").read_bytes()
    (root / "test" / "blue" / "leak.png").write_bytes(leaked)
    loaded = load_source(config(root, max_label_conflict_fraction=0.1))
    assert np.bincount(loaded.train.labels).tolist() == [PER_CLASS, PER_CLASS - 1]
    assert np.bincount(loaded.test.labels).tolist() == [PER_CLASS, PER_CLASS]
    [conflict] = loaded.report["label_conflicts"]["details"]
    assert {(f["split"], f["class"]) for f in conflict["files"]} == {
        ("train", "red"), ("test", "blue"),
    }  # fmt: skip


def test_a_link_to_dev_zero_is_listed_not_read(tmp_path, no_hang):
    root = make_red_blue(tmp_path / "images")
    (root / "red" / "zero.png").symlink_to("/dev/zero")
    built = build_dataset(config(root), seed=0)
    [entry] = built.report["not_read"]["details"]
    assert entry == {
        "path": "red/zero.png",
        "reason": "link to /dev/zero (a character device), outside the image folder: not followed",
    }
    assert built.report["totals_per_class"] == {"blue": PER_CLASS, "red": PER_CLASS}
    # predict and any other direct read refuse it too, at once
    with pytest.raises(ImageDecodeError, match="not read: a character device"):
        decode_image(root / "red" / "zero.png")


def test_a_fifo_is_listed_not_read(tmp_path, no_hang):
    root = make_red_blue(tmp_path / "images")
    os.mkfifo(root / "red" / "pipe.png")
    (root / "blue" / "to_pipe.png").symlink_to(Path("..") / "red" / "pipe.png")
    built = build_dataset(config(root), seed=0)
    assert built.report["not_read"]["details"] == [
        {"path": "blue/to_pipe.png", "reason": "link to a FIFO: not read"},
        {"path": "red/pipe.png", "reason": "a FIFO: not read"},
    ]
    assert built.report["files"]["ignored"] == {"special_file": 2}
    assert "| red/pipe.png | a FIFO: not read |" in render_markdown(built.report)
    with pytest.raises(ImageDecodeError, match="not read: a FIFO"):
        decode_image(root / "red" / "pipe.png")


def test_a_directory_loop_is_reported_not_walked(tmp_path):
    root = make_red_blue(tmp_path / "images")
    (root / "red" / "nested").mkdir()
    (root / "red" / "nested" / "up").symlink_to(Path("..") / "..")  # the image folder itself
    (root / "blue" / "self").symlink_to(".")
    loaded = load_source(config(root))
    assert loaded.report["not_read"]["details"] == [
        {"path": "blue/self", "reason": "link to the enclosing folder blue (a directory loop): "
                                        "not followed"},
        {"path": "red/nested/up", "reason": "link to the enclosing folder . (a directory loop): "
                                            "not followed"},
    ]  # fmt: skip
    assert np.bincount(loaded.train.labels).tolist() == [PER_CLASS, PER_CLASS]


def test_a_file_over_the_size_cap_is_skipped_without_being_read(tmp_path):
    root = make_red_blue(tmp_path / "images")
    limit = max_file_bytes(1000)
    with open(root / "red" / "huge.png", "wb") as handle:
        handle.truncate(limit + 1)  # sparse: costs no disk
    tight = Images(image_size=(8, 8), channels=3, max_pixels=1000)
    loaded = load_source(config(root, images=tight))
    assert loaded.report["skipped"] == [{
        "path": "red/huge.png",
        "reason": f"larger than {limit / 2**20:.0f} MiB (the cap follows data.images.max_pixels)",
    }]  # fmt: skip


def test_links_inside_the_folder_are_read_and_links_out_are_not(tmp_path):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png(99))
    root = make_red_blue(tmp_path / "images")
    (root / ".pool").mkdir()
    (root / ".pool" / "extra.png").write_bytes(png(98))
    (root / "red" / "extra.png").symlink_to(Path("..") / ".pool" / "extra.png")
    (root / "red" / "out.png").symlink_to(outside)
    (root / "red" / "gone.png").symlink_to("missing.png")
    loaded = load_source(config(root))
    assert np.bincount(loaded.train.labels).tolist() == [PER_CLASS, PER_CLASS + 1]
    assert [e["path"] for e in loaded.report["not_read"]["details"]] == [
        "red/gone.png", "red/out.png",
    ]  # fmt: skip
    assert loaded.report["files"]["ignored"] == {
        "broken_link": 1, "hidden": 1, "link_outside_folder": 1,
    }  # fmt: skip


def test_check_images_names_what_would_hang_dvc(tmp_path, capsys):
    root = make_red_blue(tmp_path / "images")
    assert cli.main(["check-images", str(root)]) == 0
    assert "no FIFOs, devices, sockets or broken links" in capsys.readouterr().out
    os.mkfifo(root / "red" / ".pipe")  # hidden: prepare skips it, DVC still reads it
    (root / "blue" / "zero.png").symlink_to("/dev/zero")
    (root / "blue" / "reds").symlink_to(Path("..") / "red")  # DVC does not follow folder links
    assert cli.main(["check-images", str(root)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (f"{root}/blue/zero.png: link to /dev/zero, a character device; "
                        f"DVC would read it forever when hashing {root}")
    assert lines[1].startswith(f"{root}/red/.pipe: a FIFO;")
    assert len(lines) == 3 and lines[2].startswith("remove the 2 entries above")
    assert cli.main(["check-images", str(tmp_path / "nope")]) == 2


def test_check_images_names_a_broken_link_which_stops_dvc_hashing_the_folder(tmp_path, capsys):
    """DVC 3.67 stops `dvc add`, `dvc status` and `dvc repro` at a broken link in a tracked
    folder with "[Errno 2] No such file or directory" (prepare itself only lists it)."""
    root = make_red_blue(tmp_path / "images")
    (root / "red" / "gone.png").symlink_to("missing.png")
    assert cli.main(["check-images", str(root)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"{root}/red/gone.png: a broken link (to missing.png); DVC stops hashing "
                     f"{root} at it",
                     f"remove the 1 entry above from {root} (or move them out of it) before "
                     "running dvc"]


def test_one_misfiled_image_in_a_small_folder_is_removed_and_a_misfiled_folder_stops(tmp_path):
    """181 images, as in the issue's folder: one copy of a 3 under 5 is 2 of 181 (1.1%),
    over the default 1% but within the two images always allowed; ten copies are not."""
    from fixtures import write_digits_folder

    root = tmp_path / "digits"
    write_digits_folder(root, size=8, per_class=18)
    threes = sorted((root / "3").iterdir())
    shutil.copy(threes[0], root / "5" / "misfiled.png")
    settings = Data(source="image_folder", image_folder=ImageFolder(path=str(root)),
                    images=Images(image_size=(8, 8)))
    built = build_dataset(settings, seed=0)
    conflicts = built.report["label_conflicts"]
    assert (conflicts["images"], conflicts["removed"], conflicts["max_images"]) == (2, 2, 2)
    assert built.report["files"]["decoded"] == 181
    assert sum(built.report["totals_per_class"].values()) == 179  # both copies gone
    assert "## Label conflicts" in render_markdown(built.report)

    for three in threes[1:10]:
        shutil.copy(three, root / "5" / f"misfiled_{three.name}")
    with pytest.raises(DataQualityError) as refused:
        build_dataset(settings, seed=0)
    message = str(refused.value)
    assert message.startswith("20 of 190 decoded images (10.5%) are filed under two or more "
                              "classes")
    assert "more than the 2 that data.max_label_conflict_fraction=0.01 allows" in message
    assert "\n" not in message
