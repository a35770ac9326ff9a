"""One image file to the bytes a shard stores, with the pixel sums the statistics need.

This module imports neither TensorFlow nor kerasops' heavier parts, so a process pool's workers
start in a fraction of a second and decode images on every core.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95  # a JPEG source resized once is stored as JPEG at this quality
KEPT_FORMATS = frozenset({"PNG", "JPEG"})  # formats tf.io.decode_image reads like PIL does


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """The stored bytes of one image and sums over its stored pixel values."""

    data: bytes
    pixel_sum: float
    pixel_sum_sq: float
    pixel_max: float
    pixels: int


@dataclasses.dataclass(frozen=True)
class ImageFailure:
    """An image file that could not be read: its path and why."""

    path: str
    reason: str


def encode_image(
    path: str, image_size: tuple[int, int], color_mode: str
) -> EncodedImage | ImageFailure:
    """`path` at `image_size` (rows, columns) in `color_mode`, as PNG or JPEG bytes.

    A PNG or JPEG already at the target size and mode is kept byte for byte; any other image is
    resized (bilinear) once and re-encoded: JPEG sources as JPEG, every other format as PNG.
    Never raises for a bad file: an ImageFailure says what was wrong.
    """
    try:
        raw = Path(path).read_bytes()
        with Image.open(io.BytesIO(raw)) as image:
            source_format = image.format
            image.load()
        mode = "L" if color_mode == "grayscale" else "RGB"
        converted = image.convert(mode) if image.mode != mode else image
        target = (int(image_size[1]), int(image_size[0]))  # PIL sizes are (width, height)
        keep = source_format in KEPT_FORMATS and image.mode == mode and image.size == target
        if keep:
            return _summed(raw, converted)
        if converted.size != target:
            converted = converted.resize(target, Image.Resampling.BILINEAR)
        data = _encode(converted, "JPEG" if source_format == "JPEG" else "PNG")
        with Image.open(io.BytesIO(data)) as stored:  # the sums are of what is stored
            return _summed(data, stored.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return ImageFailure(path, str(exc) or type(exc).__name__)


def encode_image_task(task: tuple[str, tuple[int, int], str]) -> EncodedImage | ImageFailure:
    """`encode_image` on one (path, image_size, color_mode), for a process pool's map."""
    return encode_image(*task)


def encode_pixels(pixels: np.ndarray) -> bytes:
    """Lossless PNG bytes of integral pixel values 0-255: (H, W) grayscale or (H, W, 3) RGB."""
    image = Image.fromarray(np.asarray(pixels).astype(np.uint8))
    return _encode(image, "PNG")


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    else:
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _summed(data: bytes, image: Image.Image) -> EncodedImage:
    pixels = np.asarray(image, dtype=np.float64)
    return EncodedImage(
        data=data,
        pixel_sum=float(pixels.sum()),
        pixel_sum_sq=float(np.square(pixels).sum()),
        pixel_max=float(pixels.max()) if pixels.size else 0.0,
        pixels=int(pixels.size),
    )
