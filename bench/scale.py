"""Memory, time and disk of the data stages as the image count grows.

Generates folders of RGB JPEGs (10 learnable classes: a coloured shape per class at a random
position and size over a noisy background, seeded), builds a throw-away copy of this
repository for each size with ``data.source: image_folder``, runs the stages there, each
under ``/usr/bin/time -v``, and prints a table of wall time, peak RSS and output size, plus
the fitted bytes of peak RSS per extra image (the slope between the sizes):

    python bench/scale.py [--sizes 5000,20000] [--image-size 224] [--workdir DIR] [--train]

``--train`` also runs ``train@simple_cnn`` for one epoch at a fixed batch size (it needs a
train stage that reads the shards); ``--train-images N`` trains that epoch on N labelled
images at every size, the same number of steps, for a machine too slow for whole epochs. ``--reader`` instead times a pass of the shard reader's
tf.data pipeline over Fashion-MNIST's 54,000 training images against
``from_tensor_slices(array).shuffle(54000).batch(128)``.

Needs GNU time (Debian package ``time``: ``apt-get update && apt-get install -y time``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = (
    "circle", "square", "triangle", "cross", "ring",
    "hstripes", "vstripes", "checker", "diamond", "star",
)  # fmt: skip
# One hue per class, so colour alone already separates them and a 1-epoch model can learn.
COLOURS = (
    (220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (200, 60, 200),
    (30, 200, 200), (240, 130, 20), (120, 60, 20), (250, 250, 250), (10, 10, 10),
)  # fmt: skip
TRAIN_BATCH_SIZE = 32


# --- data --------------------------------------------------------------------------------


def draw_image(class_index: int, rng: np.random.Generator, size: int):
    from PIL import Image, ImageDraw

    base = rng.integers(60, 196, size=3)
    noise = rng.normal(0, 25, size=(size, size, 3))
    background = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    extent = int(rng.uniform(0.25, 0.6) * size)
    left = int(rng.integers(0, size - extent))
    top = int(rng.integers(0, size - extent))
    box = (left, top, left + extent, top + extent)
    colour = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[class_index])
    name = CLASSES[class_index]
    cx, cy, r = left + extent / 2, top + extent / 2, extent / 2
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    elif name == "triangle":
        draw.polygon([(cx, top), (left, top + extent), (left + extent, top + extent)], fill=colour)
    elif name == "cross":
        w = extent // 5
        draw.rectangle((cx - w, top, cx + w, top + extent), fill=colour)
        draw.rectangle((left, cy - w, left + extent, cy + w), fill=colour)
    elif name == "ring":
        draw.ellipse(box, outline=colour, width=max(2, extent // 8))
    elif name in ("hstripes", "vstripes"):
        step = max(4, extent // 6)
        for offset in range(0, extent, 2 * step):
            if name == "hstripes":
                draw.rectangle((left, top + offset, left + extent, top + offset + step), fill=colour)
            else:
                draw.rectangle((left + offset, top, left + offset + step, top + extent), fill=colour)
    elif name == "checker":
        step = max(4, extent // 4)
        for i in range(0, extent, step):
            for j in range(0, extent, step):
                if (i // step + j // step) % 2 == 0:
                    draw.rectangle((left + i, top + j, left + i + step, top + j + step), fill=colour)
    elif name == "diamond":
        draw.polygon([(cx, top), (left + extent, cy), (cx, top + extent), (left, cy)], fill=colour)
    else:  # star
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.4
            angle = math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy - radius * math.sin(angle)))
        draw.polygon(points, fill=colour)
    return image


def _write_images(job: tuple[Path, int, int, int, int]) -> None:
    root, start, stop, size, seed = job
    for index in range(start, stop):
        class_index = index % len(CLASSES)
        rng = np.random.default_rng([seed, index])
        path = root / CLASSES[class_index] / f"{index:06d}.jpg"
        draw_image(class_index, rng, size).save(path, quality=90)


def generate(root: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` images, evenly over the classes, on every core; skipped when already there."""
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{count} {size} {seed}":
        return
    shutil.rmtree(root, ignore_errors=True)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    step = 250
    jobs = [(root, i, min(i + step, count), size, seed) for i in range(0, count, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write_images, jobs))
    marker.write_text(f"{count} {size} {seed}")


def link_subset(source: Path, target: Path, count: int) -> None:
    """The first ``count`` images of a bigger generated folder, as hard links (no copies)."""
    shutil.rmtree(target, ignore_errors=True)
    for index in range(count):
        name = CLASSES[index % len(CLASSES)]
        (target / name).mkdir(parents=True, exist_ok=True)
        os.link(source / name / f"{index:06d}.jpg", target / name / f"{index:06d}.jpg")


# --- the pipeline copy -------------------------------------------------------------------


def make_repo(target: Path, images: Path, image_size: int, train: bool,
              train_images: int = 0) -> None:
    import yaml

    shutil.rmtree(target, ignore_errors=True)
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode().split("\0")
    for relative in filter(None, tracked):
        source = REPO / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["data"]["source"] = "image_folder"
    params["data"]["image_folder"]["path"] = str(images)
    params["data"]["input"] = str(images)
    params["data"]["images"]["image_size"] = [image_size, image_size]
    # standardize makes preprocess stream every training image once (the costly case).
    params["preprocess"]["normalization"] = "standardize"
    if train:
        params["train"]["epochs"] = 1
        # One epoch at one batch size at every scale: the small-data rules stay out of it.
        params["train"]["min_images_seen"] = 0
        params["train"]["min_steps_per_epoch"] = 0
        params["models"]["simple_cnn"]["batch_size"] = TRAIN_BATCH_SIZE
        params["models"]["simple_cnn"]["epochs"] = 1
        # The same number of training steps at every size (0: the whole split), so that a
        # growth in peak memory comes from the data set's size, not from a longer epoch.
        params["models"]["simple_cnn"]["train_images"] = train_images
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def timed_stage(repo: Path, args: list[str]) -> dict:
    """Run one stage under GNU time; wall seconds and peak RSS (the stage or a worker)."""
    command = ["/usr/bin/time", "-v", sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": "src", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        stage_output = result.stderr.split("\tCommand being timed")[0]  # GNU time's stats follow
        raise SystemExit(f"{' '.join(args)} failed in {repo}:\n{result.stdout}\n{stage_output}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    return {"wall_s": wall, "rss_mib": peak_kb / 1024, "stdout": result.stdout.strip()}


def disk_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_sizes(sizes: list[int], image_size: int, workdir: Path, train: bool,
              train_images: int = 0) -> list[dict]:
    if not Path("/usr/bin/time").exists():
        raise SystemExit("needs GNU time: apt-get update && apt-get install -y time")
    largest = max(sizes)
    started = time.perf_counter()
    generate(workdir / f"images-{largest}", largest, image_size)
    print(f"generated {largest} images of {image_size}x{image_size} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    stages = [
        ("prepare", ["stages/prepare.py"], "data/prepared"),
        ("preprocess", ["stages/preprocess.py"], "data/processed"),
    ]
    if train:
        stages.append(("train@simple_cnn", ["stages/train.py", "simple_cnn"], "models/simple_cnn"))
    rows = []
    for count in sorted(sizes):
        images = workdir / f"images-{largest}"
        if count != largest:
            images = workdir / f"images-{count}"
            link_subset(workdir / f"images-{largest}", images, count)
        repo = workdir / f"repo-{count}"
        make_repo(repo, images, image_size, train, train_images)
        timed_stage(repo, ["stages/params.py"])
        for name, args, output in stages:
            measured = timed_stage(repo, args)
            rows.append({"stage": name, "images": count, **measured,
                         "disk_mib": disk_mib(repo / output)})  # fmt: skip
            print(f"  {name} at {count}: {measured['wall_s']:.1f} s, "
                  f"{measured['rss_mib']:.0f} MiB; {measured['stdout'].splitlines()[-1]}", flush=True)
        shutil.rmtree(repo / "data", ignore_errors=True)  # gigabytes of shards per size
    return rows


def print_table(rows: list[dict], image_size: int) -> None:
    pixel_bytes = image_size * image_size * 3
    print()
    print("| stage | images | wall s | peak RSS MiB | disk MiB of outputs |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['stage']} | {row['images']:,} | {row['wall_s']:.1f} | "
              f"{row['rss_mib']:.0f} | {row['disk_mib']:.1f} |")
    print()
    print("| stage | fitted peak-RSS bytes per image | x pixel bytes | disk / pixel bytes |")
    print("|---|---:|---:|---:|")
    for stage in dict.fromkeys(row["stage"] for row in rows):
        points = [(r["images"], r["rss_mib"] * 2**20, r["disk_mib"] * 2**20)
                  for r in rows if r["stage"] == stage]  # fmt: skip
        if len(points) < 2:
            continue
        counts, rss, disk = (np.array(v, dtype=float) for v in zip(*points))
        slope = np.polyfit(counts, rss, 1)[0]
        disk_ratio = disk[-1] / (counts[-1] * pixel_bytes)
        print(f"| {stage} | {slope:,.0f} | {slope / pixel_bytes:.3f} | {disk_ratio:.3f} |")


# --- the reader --------------------------------------------------------------------------


def reader_throughput(workdir: Path, rounds: int = 3, batch_size: int = 128) -> None:
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnpipe.core.shards import write_arrays
    from cnnpipe.data.download import DownloadLimits
    from cnnpipe.data.fashion_mnist import load_fashion_mnist

    raw = load_fashion_mnist(
        Path("/usr/share/datasets/fashion-mnist"), "http://127.0.0.1:9/", workdir / "dl",
        DownloadLimits(max_bytes=2**30, stall_seconds=60, deadline_seconds=600),
    )
    images = raw.train_images[:54000, :, :, None]
    labels = raw.train_labels[:54000].astype(np.int32)
    shards = write_arrays(workdir / "fashion_mnist" / "train", images, labels)
    import tensorflow as tf

    from cnnpipe.train.build import training_batches

    def one_pass(dataset) -> float:
        started = time.perf_counter()
        seen = 0
        for batch in dataset:
            seen += int(batch[0].shape[0])
        assert seen == len(labels), seen
        return seen / (time.perf_counter() - started)

    pipelines = {
        "from_tensor_slices + shuffle(54000)": lambda: tf.data.Dataset.from_tensor_slices(
            (images, labels)).shuffle(54000).batch(batch_size),
        "shards, shuffled": lambda: training_batches(shards, batch_size, 0, shuffle_buffer_mb=256),
        "shards, in order": lambda: shards.dataset(batch_size),
        "shards, shuffled, with_index": lambda: training_batches(
            shards, batch_size, 0, shuffle_buffer_mb=256, with_index=True),
    }  # fmt: skip
    speeds = {name: [] for name in pipelines}
    for _ in range(rounds):  # interleaved, so drift on a shared machine hits all alike
        for name, build in pipelines.items():
            speeds[name].append(one_pass(build()))
    baseline = float(np.median(speeds["from_tensor_slices + shuffle(54000)"]))
    print(f"\nFashion-MNIST train, {len(labels):,} x 28x28x1, batch {batch_size}, "
          f"{shards.records_per_shard} records per shard, median of {rounds} passes:\n")
    print("| pipeline | images/s | ratio to from_tensor_slices |")
    print("|---|---:|---:|")
    for name, values in speeds.items():
        median = float(np.median(values))
        print(f"| {name} | {median:,.0f} | {median / baseline:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--train", action="store_true", help="also time train@simple_cnn")
    parser.add_argument("--train-images", type=int, default=0,
                        help="with --train: train on this many labelled images at every size "
                             "(the same steps everywhere; default 0, the whole split)")
    parser.add_argument("--reader", action="store_true", help="time the tf.data reader instead")
    parser.add_argument("--keep", action="store_true", help="keep the generated images")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cnnpipe-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.reader:
            reader_throughput(workdir)
            return
        sizes = [int(s) for s in args.sizes.split(",") if s]
        rows = run_sizes(sizes, args.image_size, workdir, args.train, args.train_images)
        print_table(rows, args.image_size)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
