"""Decode one image file (or its bytes) into a uint8 (H, W, C) array, or say in one line why not.

Shared by the prepare stage (folders and archives of user images) and the predict command,
so that training and prediction see identical pixels for the same file.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnpipe.core.errors import DataError

# Default cap against decompression bombs: a 50-megapixel photo still passes, a crafted
# 100000 x 100000 PNG of a few kilobytes does not get to allocate 30 GB.
MAX_PIXELS = 50_000_000

# No supported file within the pixel cap needs more bytes than this: uncompressed 16-bit RGBA
# (TIFF) is 8 bytes a pixel, and the margin covers metadata (EXIF, ICC, XMP, thumbnails).
# Reading stops there, so a huge or endless file cannot fill the memory.
BYTES_PER_PIXEL_CAP = 8
METADATA_MARGIN_BYTES = 64 * 2**20

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Only these decoders are offered the bytes: Pillow would otherwise try some forty exotic
# formats on anything it is handed, each one more attack surface for untrusted uploads.
# (The JPEG opener also hands back the MPO files many cameras write as .jpg.)
DECODERS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(DataError):
    """One file could not become pixels; ``reason`` is the short cause without the file name."""

    def __init__(self, reason: str, source: str | Path | None = None):
        self.reason = reason
        self.source = None if source is None else str(source)
        super().__init__(reason if source is None else f"{source}: {reason}")


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W, C) uint8, orientation applied
    width: int  # of the file as stored, before the EXIF rotation
    height: int
    mode: str  # Pillow mode of the file, e.g. "RGB", "P", "I;16"
    format: str  # Pillow format name, e.g. "JPEG"


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    return BYTES_PER_PIXEL_CAP * max_pixels + METADATA_MARGIN_BYTES


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def file_kind(mode: int) -> str:
    """'a FIFO', 'a character device', ... for an ``st_mode`` that is not a regular file."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_image_bytes(path: str | Path, max_pixels: int = MAX_PIXELS) -> bytes:
    """The file's bytes, refusing (ImageDecodeError) anything that is not a regular file of
    at most :func:`max_file_bytes`: a FIFO would block the read, /dev/zero never end it."""
    limit = max_file_bytes(max_pixels)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ImageDecodeError(f"cannot read ({exc.strerror or exc})", path) from None
    with open(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"not read: {file_kind(info.st_mode)}", path)
        too_big = f"larger than {limit / 2**20:.0f} MiB (the cap follows data.images.max_pixels)"
        if info.st_size > limit:
            raise ImageDecodeError(too_big, path)
        try:
            content = handle.read(limit + 1)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read ({exc.strerror or exc})", path) from None
    if len(content) > limit:  # it grew while being read
        raise ImageDecodeError(too_big, path)
    return content


def decode_image(
    source: str | Path | bytes, channels: int | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """uint8 (H, W, C) pixels; C is the file's own (1 gray, 3 colour) unless ``channels`` is given.

    Raises :class:`ImageDecodeError` for anything that is not a complete, supported image
    within ``max_pixels``.
    """
    return decode_image_with_info(source, channels, max_pixels).pixels


def decode_image_with_info(
    source: str | Path | bytes, channels: int | None = None, max_pixels: int = MAX_PIXELS
) -> DecodedImage:
    """Like :func:`decode_image`, also returning the file's original size, mode and format."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    name = None if isinstance(source, (bytes, bytearray, memoryview)) else source
    if name is None:
        content = bytes(source)
    else:
        content = read_image_bytes(source, max_pixels)
    if not content:
        raise ImageDecodeError("empty file", name)
    try:
        with Image.open(io.BytesIO(content), formats=DECODERS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"too large ({width} x {height} > {max_pixels} pixels)", name
                )
            mode, fmt = image.mode, image.format or "unknown"
            # The first frame only: animated GIF/WebP and multi-page TIFF are single images here.
            image.load()
            pixels = _to_uint8(_upright(image))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (or not a supported format)", name) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too large ({_first_line(exc)})", name) from None
    except MemoryError:
        raise ImageDecodeError("too large (out of memory while decoding)", name) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types for bad bytes
        raise ImageDecodeError(_describe_failure(exc), name) from None
    return DecodedImage(_with_channels(pixels, channels), width, height, mode, fmt)


def _upright(image: Image.Image) -> Image.Image:
    """The image as cameras mean it to be shown (EXIF orientation applied)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a mangled EXIF block should not cost the pixels
        return image


def _describe_failure(exc: Exception) -> str:
    text = _first_line(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated"
    return f"corrupt ({type(exc).__name__}: {text})" if text else f"corrupt ({type(exc).__name__})"


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _to_uint8(image: Image.Image) -> np.ndarray:
    """(H, W, 1) or (H, W, 3) uint8 from any Pillow mode, transparency flattened onto white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _scale_to_uint8(np.asarray(image), 65535)[..., None]
    if mode == "I":
        # 32-bit integers: 16-bit PNG/TIFF sources land here in some Pillow paths, so the
        # 16-bit range is the natural scale; anything beyond it is stretched, not clipped.
        values = np.asarray(image)
        if values.min() >= 0 and values.max() <= 65535:
            return _scale_to_uint8(values, 65535)[..., None]
        return _stretch_to_uint8(values)[..., None]
    if mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ValueError("float image holds NaN or infinity")
        if values.min() >= 0 and values.max() <= 1:
            return _scale_to_uint8(values, 1.0)[..., None]
        return _stretch_to_uint8(values)[..., None]
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
        if not has_alpha:
            # Grayscale images saved as GIF come back as palette images with a grey palette;
            # they are grayscale sources and keep one channel.
            pixels = np.asarray(image)
            red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
            if (red == green).all() and (green == blue).all():
                return pixels[..., :1]
            return pixels
    if mode in ("LA", "La", "RGBA", "RGBa"):
        image = image.convert("LA" if mode.startswith("L") else "RGBA")
        return _composite_on_white(np.asarray(image))
    if mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB"):
        # CMYK, YCbCr, LAB, HSV and the rest: Pillow knows how to get to RGB.
        image = image.convert("RGB")
    pixels = np.asarray(image)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    scaled = values.astype(np.float64) * (255.0 / full_scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return _scale_to_uint8(values.astype(np.float64) - low, high - low)


def _composite_on_white(pixels: np.ndarray) -> np.ndarray:
    colour = pixels[..., :-1].astype(np.float32)
    alpha = pixels[..., -1:].astype(np.float32) / 255.0
    blended = colour * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _with_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or pixels.shape[-1] == channels:
        return np.array(pixels, dtype=np.uint8, order="C")  # Pillow's buffers are read-only
    if channels == 3:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=-1))
    # ITU-R 601 luma, the same weights as Pillow's convert("L"), so either path agrees.
    gray = Image.fromarray(pixels).convert("L")
    return np.asarray(gray)[..., None].copy()
