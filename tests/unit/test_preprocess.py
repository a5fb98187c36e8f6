"""artifact.preprocess: every storage form of an image becomes the same RGB pixels."""
import io

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError

from artifact.manifest import Preprocessing
from artifact.preprocess import ImageTooLarge, decode_resized, eval_input
from train.data import DecodeCache
from train.transforms import Normalizer, eval_transform


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture
def picture() -> Image.Image:
    """Left half red, right half blue, 200x100."""
    array = np.zeros((100, 200, 3), np.uint8)
    array[:, :100, 0] = 255
    array[:, 100:, 2] = 255
    return Image.fromarray(array)


def test_shorter_side_is_resized(picture):
    out = decode_resized(encode(picture, "PNG"), 50)
    assert out.shape == (50, 100, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_every_mode_becomes_rgb(picture, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = picture.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.asarray(picture.convert("L"), np.uint16) * 256))
    out = decode_resized(encode(image, fmt), 50)
    assert out.shape == (50, 100, 3)


def test_alpha_is_flattened_onto_white(picture):
    rgba = picture.convert("RGBA")
    rgba.putalpha(0)
    out = decode_resized(encode(rgba, "PNG"), 50)
    assert out.min() == 255


def test_exif_orientation_is_applied(picture):
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    sideways = picture.transpose(Image.Transpose.ROTATE_90)  # stored as 100 wide, 200 high
    out = decode_resized(encode(sideways, "JPEG", exif=exif, quality=95), 50)
    assert out.shape == (50, 100, 3)
    assert out[25, 10, 0] > 200 and out[25, 90, 2] > 200  # red left, blue right again


def test_truncated_and_non_images_raise(picture):
    data = encode(picture, "JPEG")
    with pytest.raises(OSError):
        decode_resized(data[: len(data) // 2], 50)
    with pytest.raises(UnidentifiedImageError):
        decode_resized(b"definitely not an image", 50)


def test_pixel_limit_is_checked_before_decoding(picture):
    with pytest.raises(ImageTooLarge, match="200x100"):
        decode_resized(encode(picture, "PNG"), 50, max_pixels=10_000)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds a few bytes: a bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_the_limit_counts_the_pixels_a_jpeg_decodes_at_draft_scale(phone_photo):
    """A 200-megapixel phone photo decodes at 1/8 scale (3.1 megapixels): within 50 million."""
    out = decode_resized(phone_photo["baseline"], 256, max_pixels=50_000_000)
    assert out.shape == (256, 341, 3)
    with pytest.raises(ImageTooLarge, match="even at reduced scale"):
        decode_resized(phone_photo["baseline"], 256, max_pixels=1_000_000)


def test_a_progressive_jpeg_counts_its_full_size(phone_photo):
    """Its decoder holds every coefficient of the full image, whatever the scale."""
    with pytest.raises(ImageTooLarge, match="progressive JPEG is 16320x12240"):
        decode_resized(phone_photo["progressive"], 256, max_pixels=50_000_000)


def test_a_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageTooLarge, match="30000x30000 = 900000000 pixels"):
        decode_resized(png_header(30000, 30000), 256, max_pixels=50_000_000)
    with pytest.raises(OSError):  # the same few bytes, small enough to be decoded: truncated
        decode_resized(png_header(300, 300), 256, max_pixels=50_000_000)


def test_serving_input_equals_training_eval_input(tmp_path, small_data_master):
    """The server's eval_input and training's cache + crop + Normalizer give the same tensor."""
    pre = Preprocessing(image_size=48, resize_size=56)
    cache = DecodeCache(tmp_path, pre.resize_size, pre.interpolation)
    normalizer = Normalizer(pre.mean, pre.std, torch.device("cpu"), channels_last=False)
    files = sorted(p for p in (small_data_master / "test").rglob("*") if p.is_file())[:6]
    for path in files:
        assert cache.ensure(path) is None
        cached = torch.from_numpy(cache.load(path)).permute(2, 0, 1)
        training = normalizer(eval_transform(pre.image_size)(cached)[None])[0].numpy()
        serving = eval_input(path.read_bytes(), pre)
        assert serving.shape == (3, 48, 48)
        np.testing.assert_allclose(serving, training, atol=1e-5)
