import io

import numpy as np
import pytest
from fixtures import png_header_claiming
from PIL import Image

from cnnpipe.data import decode
from cnnpipe.data.decode import ImageDecodeError, decode_image, decode_image_with_info
from cnnpipe.core.errors import DataError


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_rgb(height=20, width=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "fmt, options, lossless",
    [
        ("PNG", {}, True),
        ("BMP", {}, True),
        ("TIFF", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("JPEG", {"quality": 95}, False),
        ("GIF", {}, False),  # quantised to a 256-colour palette
    ],
)
def test_every_supported_format_decodes_to_uint8_hwc(fmt, options, lossless):
    pixels = random_rgb()
    result = decode_image_with_info(encode(Image.fromarray(pixels), fmt, **options))
    assert result.pixels.dtype == np.uint8
    assert result.pixels.shape == (20, 30, 3)
    assert (result.width, result.height, result.format) == (30, 20, fmt)
    if lossless:
        np.testing.assert_array_equal(result.pixels, pixels)


def test_path_and_bytes_give_the_same_pixels(tmp_path):
    content = encode(Image.fromarray(random_rgb()), "PNG")
    (tmp_path / "a.png").write_bytes(content)
    np.testing.assert_array_equal(decode_image(tmp_path / "a.png"), decode_image(content))
    np.testing.assert_array_equal(decode_image(str(tmp_path / "a.png")), decode_image(content))


def test_grayscale_keeps_one_channel_unless_asked():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    content = encode(Image.fromarray(gray), "PNG")
    assert decode_image(content).shape == (3, 4, 1)
    three = decode_image(content, channels=3)
    assert three.shape == (3, 4, 3)
    np.testing.assert_array_equal(three[..., 2], gray)


def test_grayscale_gif_stays_grayscale():
    content = encode(Image.fromarray(np.full((3, 3), 77, np.uint8)), "GIF")
    np.testing.assert_array_equal(decode_image(content), np.full((3, 3, 1), 77, np.uint8))


def test_colour_to_one_channel_uses_pillow_luma():
    pixels = random_rgb()
    expected = np.asarray(Image.fromarray(pixels).convert("L"))
    result = decode_image(encode(Image.fromarray(pixels), "PNG"), channels=1)
    np.testing.assert_array_equal(result[..., 0], expected)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    result = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert result.shape == (2, 2, 3)
    assert result[0, 0].tolist() == [255, 255, 255]
    assert result[0, 1].tolist() == [255, 0, 0]
    assert result[1, 0].tolist() == [127, 127, 127]


def test_gray_with_alpha_and_palette_with_transparency():
    la = Image.new("LA", (2, 2), (0, 0))
    assert decode_image(encode(la, "PNG")).reshape(-1).tolist() == [255] * 4
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    palette.putpixel((1, 1), 1)
    result = decode_image(encode(palette, "PNG", transparency=0))
    assert result[0, 0].tolist() == [255, 255, 255]
    assert result[1, 1].tolist() == [0, 0, 0]


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    content = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(content)).mode.startswith("I")
    assert decode_image(content).reshape(-1).tolist() == [0, 100, 255]


def test_cmyk_becomes_rgb():
    content = encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100)
    result = decode_image(content)
    assert result.shape == (4, 4, 3)
    red, green, blue = result[0, 0].tolist()
    assert red > 240 and green < 15 and blue < 15


def test_exif_orientation_is_applied():
    # 2 rows x 4 columns, left half white; orientation 6 means "rotate 90 degrees clockwise
    # to display", which puts the left half on top.
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[:, :2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    content = encode(Image.fromarray(pixels), "JPEG", quality=100, exif=exif.tobytes())
    result = decode_image_with_info(content)
    assert (result.width, result.height) == (4, 2)  # as stored
    assert result.pixels.shape == (4, 2, 3)  # as displayed
    assert (result.pixels[:2] > 200).all() and (result.pixels[2:] < 50).all()


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer.getvalue())[0, 0].tolist() == [255, 0, 0]



@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not a picture\n", "not an image"),
        (encode(Image.fromarray(random_rgb(64, 64)), "JPEG")[:400], "truncated"),
        (encode(Image.fromarray(random_rgb(64, 64)), "PNG")[:300], "truncated"),
        (encode(Image.fromarray(random_rgb()), "PPM"), "not an image"),  # not offered to Pillow
        (png_header_claiming(8000, 8000), "too large (8000 x 8000 > 50000000 pixels)"),
        (png_header_claiming(100_000, 100_000), "too large"),  # Pillow's own bomb check
    ],
)
def test_bad_input_raises_one_line_reason(content, reason):
    with pytest.raises(ImageDecodeError) as excinfo:
        decode_image(content)
    assert excinfo.value.reason.startswith(reason)
    assert isinstance(excinfo.value, DataError)
    assert "\n" not in str(excinfo.value)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(ImageDecodeError, match=r"notes\.png: not an image"):
        decode_image(path)
    with pytest.raises(ImageDecodeError, match="missing.jpg: cannot read"):
        decode_image(tmp_path / "missing.jpg")


def test_max_pixels_is_checked_before_decoding(monkeypatch):
    content = encode(Image.fromarray(random_rgb()), "PNG")

    def fail(*args, **kwargs):
        raise AssertionError("pixels were decoded although the size is over the limit")

    monkeypatch.setattr(Image.Image, "load", fail)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", fail)
    with pytest.raises(ImageDecodeError, match=r"too large \(30 x 20 > 599 pixels\)"):
        decode_image(content, max_pixels=599)


def test_pillow_bomb_limit_becomes_a_decode_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(encode(Image.fromarray(random_rgb()), "PNG"))


def test_extensions_cover_the_supported_formats():
    assert decode.IMAGE_EXTENSIONS == {
        ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    }  # fmt: skip
    assert decode.MAX_PIXELS == 50_000_000
