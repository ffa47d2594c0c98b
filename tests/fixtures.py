"""Small builders shared by several test modules."""

import struct
import zlib

def tiny_hyperparameters() -> dict[str, dict]:
    """Each registered architecture's own tiny configuration (its registration's ``tiny``)."""
    from cnnpipe.models import available_models, get_architecture

    return {name: dict(get_architecture(name).tiny) for name in available_models()}


# Hyperparameters that make each registered architecture tiny enough for a unit test.
TINY_HYPERPARAMETERS = tiny_hyperparameters()


def png_header_claiming(width: int, height: int) -> bytes:
    """A few-byte PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 10)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    )  # fmt: skip


def write_digits_folder(root, size: int = 32, rare_class: int | None = None,
                        rare_keep: float = 0.1, seed: int = 0,
                        per_class: int | None = None) -> dict[str, int]:
    """scikit-learn's 1,797 handwritten digits (8x8, shipped offline) as a folder of PNGs.

    ``root/<digit>/<n>.png``, upscaled to ``size`` with Pillow's bilinear filter: a small,
    real data set laid out the way users bring theirs. ``rare_class`` keeps only
    ``rare_keep`` of that class's images (an imbalanced set); ``per_class`` keeps the first
    that many of every class (a folder of a few hundred). Returns images per class.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    counts = {}
    for digit in range(10):
        members = np.flatnonzero(digits.target == digit)
        if digit == rare_class:
            members = rng.permutation(members)[: max(1, round(len(members) * rare_keep))]
        members = members[:per_class]
        folder = Path(root) / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for index in members:
            image = Image.fromarray(pixels[index]).resize((size, size), Image.Resampling.BILINEAR)
            image.save(folder / f"{index:04d}.png")
        counts[str(digit)] = len(members)
    return counts


# Three of scikit-image's sample photos (shipped in its wheel, no download): a person, a cup
# and a cat, distinct enough to learn, small enough that crops of one photo overlap.
PHOTO_CLASSES = ("astronaut", "coffee", "chelsea")
# Mixed formats, as a folder gathered from phones and the web would hold.
PHOTO_FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"))


def write_photo_crops_folder(root, per_class: int = 60, seed: int = 0) -> dict[str, int]:
    """A 3-class RGB folder: ``per_class`` random square crops of each sample photo.

    Each crop is 96-256 px square at a random place, mirrored half the time, saved in turn as
    PNG, JPEG, WebP and BMP at its own size (the pipeline resizes). Returns images per class.
    """
    from pathlib import Path

    import numpy as np
    import skimage.data
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    counts = {}
    for name in PHOTO_CLASSES:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            side = int(rng.integers(96, min(256, *photo.size) + 1))
            left = int(rng.integers(0, photo.width - side + 1))
            top = int(rng.integers(0, photo.height - side + 1))
            crop = photo.crop((left, top, left + side, top + side))
            if rng.random() < 0.5:
                crop = ImageOps.mirror(crop)
            suffix, kind = PHOTO_FORMATS[index % len(PHOTO_FORMATS)]
            crop.save(folder / f"{index:03d}.{suffix}", kind)
        counts[name] = per_class
    return counts
