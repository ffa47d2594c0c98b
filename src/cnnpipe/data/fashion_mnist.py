"""Fashion-MNIST: find the four IDX files offline or download them, verify, parse.

Checksums are of the *decompressed* IDX bytes: Debian's ``dataset-fashion-mnist`` package
re-compresses the official ``.gz`` files, so only the content hash is stable across sources.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.data.download import DownloadLimits, download

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# file name -> sha256 of the decompressed IDX content
FILES = {
    "train_images": (
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}

LICENSE = "MIT (Zalando Research)"


@dataclass(frozen=True)
class RawSplits:
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where the files came from, for the data card
    checksums: dict[str, str]


def parse_idx(content: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an uncompressed IDX file (the MNIST container) of unsigned bytes."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    if content[2] != 0x08:
        raise DataError(f"{name}: IDX element type {content[2]:#x} is not unsigned byte")
    ndim = content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(content) - header != expected:
        raise DataError(
            f"{name}: IDX header promises {expected} bytes for shape {shape}, "
            f"file holds {len(content) - header}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot decompress ({exc})") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
        raise DataError(
            f"{path}: checksum mismatch (sha256 of content {digest}, expected {expected_sha256})"
        )
    return content


def locate_files(
    local_dir: Path, url: str, download_dir: Path, limits: DownloadLimits
) -> tuple[dict[str, Path], str]:
    """Paths of the four files: the local copy if complete, else downloaded into download_dir."""
    local = {key: local_dir / name for key, (name, _) in FILES.items()}
    if all(p.is_file() for p in local.values()):
        return local, f"local:{local_dir}"
    cached = {key: download_dir / name for key, (name, _) in FILES.items()}
    for key, path in cached.items():
        if not path.is_file():
            download(url.rstrip("/") + "/" + path.name, path, limits)
    return cached, f"download:{url}"


def load_fashion_mnist(
    local_dir: Path, url: str, download_dir: Path, limits: DownloadLimits
) -> RawSplits:
    paths, source = locate_files(local_dir, url, download_dir, limits)
    arrays = {}
    for key, (name, sha256) in FILES.items():
        try:
            content = _read_verified(paths[key], sha256)
        except DataError:
            if source.startswith("download:"):
                # A corrupt cached download would otherwise fail every later run the same way.
                paths[key].unlink(missing_ok=True)
            raise
        arrays[key] = parse_idx(content, name)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{split}: {len(images)} images but {len(labels)} labels")
    return RawSplits(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        source=source,
        checksums={name: sha for name, sha in FILES.values()},
    )
