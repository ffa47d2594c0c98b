"""Small builders shared by several test modules."""

import struct
import zlib

# Hyperparameters that make each registered architecture tiny enough for a unit test.
TINY_HYPERPARAMETERS = {
    "simple_cnn": {"filters": (4, 8, 8), "dense_units": 8},
    "regularized_cnn": {"filters": (4, 8, 8), "dense_units": 8},
    "overfit_cnn": {"filters": (8, 8), "dense_units": 16},
    "bn_gap_cnn": {"filters": (4, 8, 8), "dense_units": 8},
    # residual_filters != stem_filters exercises the projection shortcut.
    "residual_cnn": {
        "stem_filters": 4, "residual_filters": 8, "block_filters": (8, 8), "dense_units": 8,
    },
    "inception_attention": {"stem_filters": 8, "inception_filters": (8, 16), "attention_ratio": 4},
    "augmented_cnn": {"filters": (4, 8, 8), "dense_units": 8},
    "mobilenet_transfer": {"alpha": 0.35, "image_size": 32, "dense_units": 8},
}


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
