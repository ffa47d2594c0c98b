"""Request bodies to model inputs, shared by the protocols; every refusal is one line.

Encoded images become pixels through :func:`cnnpipe.predict.read_image`, the code prepare and
``cnnpipe predict`` use (EXIF orientation, transparency, modes, the card's crop or stretch,
the decompression-bomb guard). Pixel arrays must be exactly what the model takes: uint8
values 0..255 in (N, H, W, C). These functions are synchronous and run in the decoding pool.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from cnnpipe.data.decode import ImageDecodeError
from cnnpipe.inference import InputSpec
from cnnpipe.serve.errors import ApiError


def bad_request(message: str, reason: str = "bad_request") -> ApiError:
    return ApiError(400, message, reason)


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; 400 for an empty or malformed one."""
    if not body.strip():
        raise bad_request("empty body: send a JSON object", "empty_body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad_request(f"malformed JSON: {exc}", "malformed_json") from None


def check_count(count: int, max_images: int) -> None:
    if count > max_images:
        raise ApiError(413, f"{count} images in one request; this server takes at most "
                       f"{max_images} (--max-images-per-request)", "too_many_images")
    if count == 0:
        raise bad_request("no images in the request")


def from_base64(text: Any, where: str) -> bytes:
    """The bytes of standard base64 ``text`` (RFC 4648, as TF Serving's ``b64``)."""
    if not isinstance(text, str):
        raise bad_request(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: not valid base64") from None


def decode_images(blobs: list[bytes], spec: InputSpec, where: str) -> np.ndarray:
    """(N, H, W, C) uint8 pixels of encoded images, as prepare and predict decode them."""
    from cnnpipe.predict import read_image

    pixels = []
    for index, blob in enumerate(blobs):
        try:
            pixels.append(read_image(blob, spec.shape, spec.crop_to_aspect_ratio))
        except ImageDecodeError as exc:
            raise bad_request(f"{where}[{index}]: {exc.reason}", "not_an_image") from None
    return np.stack(pixels)


def pixel_array(data: Any, shape: Any, spec: InputSpec, where: str) -> np.ndarray:
    """``data`` (nested lists, or a flat list with ``shape``) as the model's uint8 batch.

    ``shape`` None means ``data`` carries its own nesting. Refuses other sizes and channels,
    non-integers, values outside 0..255 and ragged lists, naming what the model takes.
    """
    takes = f"uint8 (N, {', '.join(map(str, spec.shape))})"
    if shape is not None:
        if (not isinstance(shape, list) or len(shape) != 4
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise bad_request(f"{where}: shape must be [N, H, W, C], got {shape!r}")
        if tuple(shape[1:]) != spec.shape:
            raise bad_request(f"{where}: shape {shape} does not fit this model, which takes "
                              f"{takes}", "wrong_shape")
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise bad_request(f"{where}: a ragged list; the model takes {takes}", "wrong_shape") \
            from None
    if values.dtype.kind not in "iu" and values.size:
        raise bad_request(f"{where}: values must be whole numbers 0..255 (uint8), got "
                          f"{_kind_name(values)}", "wrong_dtype")
    if shape is not None:
        if values.size != math.prod(shape):
            raise bad_request(f"{where}: shape {shape} needs {math.prod(shape)} values, "
                              f"data has {values.size}", "wrong_shape")
        values = values.reshape(shape)
    if values.ndim != 4 or values.shape[1:] != spec.shape:
        raise bad_request(f"{where}: got an array of shape {list(values.shape)}; this model "
                          f"takes {takes}", "wrong_shape")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise bad_request(f"{where}: values must lie in 0..255 (uint8)", "wrong_dtype")
    return values.astype(np.uint8)


def _kind_name(values: np.ndarray) -> str:
    return {"f": "fractional numbers", "b": "booleans", "U": "strings",
            "O": "mixed values"}.get(values.dtype.kind, str(values.dtype))
