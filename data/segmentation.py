"""Image segmentation data: the digits-on-a-canvas generator and the image/mask folder reader.

The built-in `segmentation_digits` pastes sklearn's 8x8 digits, upscaled, at random
non-overlapping places on a blank canvas (as `detection_digits` does) and writes the user format
that `read_mask_folder` reads, for built-in and user data alike:

    <folder>/images/<name>.png   the image
    <folder>/masks/<name>.png    its mask, same size, one class id per pixel (0 = background)

The built-in mask holds digit class + 1 where the digit's ink is and 0 elsewhere. Prepared
targets are y (N, H, W) int32 class ids; images are resized bilinearly, masks by nearest pixel.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kerasops.data.detection import CanvasSpec, compose_canvases
from kerasops.data.errors import DataError
from kerasops.data.materialize import write_if_changed
from kerasops.data.progress import progress
from kerasops.data.readers import ColorMode, read_image

BACKGROUND = "background"
INK_THRESHOLD = 64  # a pasted glyph pixel at least this bright (of 240) is the digit's ink
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclasses.dataclass(frozen=True)
class SegmentationExamples:
    """Images x (N, H, W, C) float32, masks y (N, H, W) int32 class ids, class names."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]


def digit_masks(canvases: np.ndarray, rows: Sequence[Sequence[object]]) -> np.ndarray:
    """Masks (N, S, S) uint8 of canvases (N, S, S): digit + 1 on each box's ink, 0 elsewhere;
    rows are `[image index, label, ymin, xmin, ymax, xmax]` as `compose_canvases` writes them."""
    masks = np.zeros(canvases.shape, dtype=np.uint8)
    for index, label, top, left, bottom, right in rows:
        tile = canvases[index, top:bottom, left:right]
        masks[index, top:bottom, left:right][tile >= INK_THRESHOLD] = int(label) + 1
    return masks


def materialize_segmentation_digits(raw_dir: Path, spec: CanvasSpec) -> Path:
    """Write `raw_dir/images/<index>.png` and `raw_dir/masks/<index>.png`; return `raw_dir`."""
    # deferred: scikit-learn loads slowly; only the built-in canvases need it
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = (digits.images * 15).astype(np.uint8)  # (1797, 8, 8), 0..240
    canvases, rows = compose_canvases(glyphs, [str(t) for t in digits.target], spec)
    masks = digit_masks(canvases, rows)  # (N, S, S)
    for folder, arrays in (("images", canvases), ("masks", masks)):
        wanted = set()
        for index, array in enumerate(arrays):
            path = raw_dir / folder / f"{index:05d}.png"
            buffer = io.BytesIO()
            Image.fromarray(array, mode="L").save(buffer, format="PNG")
            write_if_changed(path, buffer.getvalue())
            wanted.add(path)
        for stale in set((raw_dir / folder).glob("*.png")) - wanted:
            stale.unlink()
    return raw_dir


def digit_classes() -> tuple[str, ...]:
    """The built-in set's classes: background, then the digits 0-9 (class id = digit + 1)."""
    return (BACKGROUND, *(str(d) for d in range(10)))


def read_mask_folder(
    folder: Path, image_size: tuple[int, int], color_mode: ColorMode, classes: Sequence[str]
) -> SegmentationExamples:
    """Read `folder/images/*` and their masks `folder/masks/<same name>.png`.

    Raises DataError naming the file for an image without a mask (or a mask without an image),
    a mask whose size differs from its image's, or a mask value beyond the declared classes.
    """
    images_dir, masks_dir = folder / "images", folder / "masks"
    for part in (images_dir, masks_dir):
        if not part.is_dir():
            raise DataError(
                f"{part} is not a folder; a segmentation dataset is images/<name> and "
                "masks/<name>.png side by side"
            )
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{images_dir} holds no images (.png, .jpg, .jpeg, .bmp)")
    pairs = [(image, masks_dir / f"{image.stem}.png") for image in images]
    for image, mask in pairs:
        if not mask.is_file():
            raise DataError(f"{image} has no mask; add {mask} (one class id per pixel)")
    named = {image.stem for image in images}
    for mask in sorted(masks_dir.glob("*.png")):
        if mask.stem not in named:
            raise DataError(f"{mask} has no image; add it to {images_dir} or remove the mask")
    channels = 1 if color_mode == "grayscale" else 3
    x = np.zeros((len(pairs), *image_size, channels), dtype=np.float32)  # (N, H, W, C)
    y = np.zeros((len(pairs), *image_size), dtype=np.int32)  # (N, H, W)
    for n, (image, mask) in enumerate(progress(pairs, len(pairs), f"reading {folder.name}", "img")):
        x[n] = read_image(image, image_size, color_mode).reshape(*image_size, channels)
        y[n] = read_mask(mask, _size_of(image), image_size, len(classes))
    return SegmentationExamples(x=x, y=y, classes=tuple(classes))


def read_mask(
    path: Path, expected: tuple[int, int], image_size: tuple[int, int], num_classes: int
) -> np.ndarray:
    """One mask as (H, W) int32 class ids, resized by nearest pixel to `image_size`; its own
    size must be `expected` (its image's) and its values below `num_classes`."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(
                    f"{path} is a {mask.mode} image; a mask is one channel of class ids"
                )
            if (mask.height, mask.width) != expected:
                raise DataError(
                    f"{path} is {mask.height}x{mask.width} but its image is "
                    f"{expected[0]}x{expected[1]}; a mask has its image's size"
                )
            values = np.asarray(mask, dtype=np.int64)
            if values.max() >= num_classes:
                raise DataError(
                    f"{path} holds class id {int(values.max())} beyond the {num_classes} "
                    f"declared classes (ids 0..{num_classes - 1}); fix the mask or add classes"
                )
            if values.shape != image_size:
                resized = mask.resize((image_size[1], image_size[0]), Image.Resampling.NEAREST)
                values = np.asarray(resized, dtype=np.int64)
            return values.astype(np.int32)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} cannot be read as a mask ({exc}); remove or replace it") from None


def _size_of(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(
            f"{path} cannot be read as an image ({exc}); remove or replace it"
        ) from None
