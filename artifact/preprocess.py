"""Image decoding and eval preprocessing, shared by training (its cache and evaluation) and serving.

numpy + Pillow only, so the slim serving image needs no torch. Both sides call decode_resized()
and center_crop()/normalize(), so a served prediction sees exactly the tensor evaluation saw.
"""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from artifact.manifest import Preprocessing

# Formats a data set or a request may carry; anything else is refused by content, not by name.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# Pillow's own bomb check (Image.open refuses above 179 megapixels) counts a JPEG at full size,
# though a 200-megapixel phone photo decodes at 1/8 scale; decode_resized applies its own limit,
# to the pixels it will decode.
Image.MAX_IMAGE_PIXELS = None
# A folder of photos (a data set, images to classify) may hold files far larger than a server
# takes; a decompression bomb among them must still be skipped, not fill the memory.
FOLDER_MAX_PIXELS = 400_000_000


class ImageTooLarge(ValueError):
    """More pixels than allowed (a decompression bomb, or simply too big to serve)."""


def resized_size(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to shorter_side (torchvision's rule)."""
    if width <= height:
        return shorter_side, int(shorter_side * height / width)
    return int(shorter_side * width / height), shorter_side


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, palette, CMYK, with alpha) to RGB, upright per its EXIF orientation."""
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:  # flatten onto white, as a viewer would show it
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit or float grayscale
        array = np.asarray(image, dtype=np.float32)
        span = float(array.max() - array.min()) or 1.0
        image = Image.fromarray(((array - array.min()) * (255.0 / span)).astype(np.uint8))
    return image.convert("RGB")


def decode_resized(
    source: str | os.PathLike | bytes | BinaryIO,
    shorter_side: int,
    interpolation: str = "bilinear",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode an image file or bytes to an RGB uint8 HWC array whose shorter side is shorter_side.

    Raises PIL.UnidentifiedImageError for non-images, OSError for corrupt or truncated files and
    ImageTooLarge when more than max_pixels would be decoded, known from the header before any
    pixel is. A JPEG decodes at 1/2, 1/4 or 1/8 scale when the target size allows (draft), and
    the limit counts that size: a 200-megapixel photo decodes as about 3. Other formats count
    their full size, and so do progressive JPEGs, whose decoder holds the whole image's
    coefficients in memory whatever the scale.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    image = Image.open(source, formats=IMAGE_FORMATS)
    with image:
        width, height = image.size
        # Never below the target size; free for JPEG, a no-op for the other formats.
        image.draft("RGB", resized_size(width, height, shorter_side))
        decoded = image.width * image.height
        progressive = bool(image.info.get("progressive"))
        counted = width * height if progressive else decoded
        if max_pixels is not None and counted > max_pixels:
            if progressive:
                what = f"progressive JPEG is {width}x{height} = {counted} pixels (decoded whole)"
            elif decoded < width * height:
                what = f"image is {width}x{height}: {decoded} pixels even at reduced scale"
            else:
                what = f"image is {width}x{height} = {counted} pixels"
            raise ImageTooLarge(f"{what}; the limit is {max_pixels}")
        image.load()  # decode now, so corrupt or truncated data raises here
        rgb = to_rgb(image)
    target = resized_size(rgb.width, rgb.height, shorter_side)  # EXIF may have swapped sides
    if rgb.size != target:
        rgb = rgb.resize(target, _RESAMPLING[interpolation])
    return np.array(rgb, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of an HWC array (torchvision's rounding)."""
    height, width = array.shape[:2]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return array[top : top + size, left : left + size]


def normalize(array: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 HWC RGB to float32 CHW, scaled to [0, 1] and standardised per channel."""
    scaled = array.astype(np.float32) * np.float32(1.0 / 255.0)
    chw = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(chw.transpose(2, 0, 1))


def eval_input(
    source: str | os.PathLike | bytes | BinaryIO,
    preprocessing: Preprocessing,
    max_pixels: int | None = None,
) -> np.ndarray:
    """The network's input for one image: float32 CHW, exactly as evaluation computes it."""
    array = decode_resized(
        source, preprocessing.resize_size, preprocessing.interpolation, max_pixels
    )
    array = center_crop(array, preprocessing.image_size)
    return normalize(array, preprocessing.mean, preprocessing.std)
