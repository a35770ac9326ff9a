"""Object detection data: the digits-on-a-canvas generator and the annotations CSV reader.

The built-in `detection_digits` pastes sklearn's 8x8 digits, upscaled to 12-20 px, at random
non-overlapping positions on a blank canvas and writes the canvases as PNGs plus an
`annotations.csv` (`image,label,ymin,xmin,ymax,xmax`, pixels, max exclusive): the user format
that `read_detection_csv` reads, for built-in and user data alike.

Prepared targets are fixed-size: y (N, max_objects, 5) float32 rows
`[ymin, xmin, ymax, xmax, class]` with coordinates as fractions of the image height/width and
padding rows `[0, 0, 0, 0, -1]`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from kerasops.data.errors import DataError
from kerasops.data.materialize import write_csv, write_if_changed
from kerasops.data.progress import progress
from kerasops.data.readers import ColorMode, read_csv, read_image, to_number

ANNOTATION_COLUMNS = ("image", "label", "ymin", "xmin", "ymax", "xmax")
PADDING_CLASS = -1


@dataclasses.dataclass(frozen=True)
class CanvasSpec:
    """How the digits canvases are drawn."""

    num_images: int
    canvas_size: int
    min_object_size: int
    max_object_size: int
    max_objects: int
    seed: int


@dataclasses.dataclass(frozen=True)
class DetectionExamples:
    """Images x (N, H, W, C) float32, targets y (N, max_objects, 5) float32, class names."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]


def compose_canvases(
    glyphs: np.ndarray, labels: Sequence[str], spec: CanvasSpec
) -> tuple[np.ndarray, list[list[object]]]:
    """Paste glyphs (G, h, w) uint8 at random non-overlapping places: canvases (N, S, S) uint8
    and annotation rows `[image index, label, ymin, xmin, ymax, xmax]` in pixels."""

    rng = np.random.default_rng(spec.seed)
    size = spec.canvas_size
    canvases = np.zeros((spec.num_images, size, size), dtype=np.uint8)  # (N, S, S)
    rows: list[list[object]] = []
    for index in range(spec.num_images):
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, spec.max_objects + 1))):
            side = int(rng.integers(spec.min_object_size, spec.max_object_size + 1))
            box = _free_box(rng, size, side, boxes)
            if box is None:
                continue  # the canvas is too full for another object of this size
            glyph = int(rng.integers(len(glyphs)))
            tile = Image.fromarray(glyphs[glyph]).resize((side, side), Image.Resampling.BILINEAR)
            top, left = box[0], box[1]
            canvases[index, top : top + side, left : left + side] = np.asarray(tile)
            boxes.append(box)
            rows.append([index, labels[glyph], *box])
    return canvases, rows


def _free_box(
    rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    """A (ymin, xmin, ymax, xmax) square of `side` px inside the canvas, one pixel clear of
    every taken box; None after 100 tries."""
    for _ in range(100):
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = (top, left, top + side, left + side)
        if all(_apart(box, other) for other in taken):
            return box
    return None


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def materialize_detection_digits(raw_dir: Path, spec: CanvasSpec) -> Path:
    """Write `raw_dir/images/<index>.png` and `raw_dir/annotations.csv`; return the CSV path."""
    # deferred: scikit-learn loads slowly; only the built-in canvases need it
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = (digits.images * 15).astype(np.uint8)  # (1797, 8, 8), 0..240
    canvases, rows = compose_canvases(glyphs, [str(t) for t in digits.target], spec)
    images = raw_dir / "images"
    wanted = set()
    for index, canvas in enumerate(canvases):
        path = images / f"{index:05d}.png"
        buffer = io.BytesIO()
        Image.fromarray(canvas, mode="L").save(buffer, format="PNG")
        write_if_changed(path, buffer.getvalue())
        wanted.add(path)
    for stale in set(images.glob("*.png")) - wanted:
        stale.unlink()
    named = [[f"images/{r[0]:05d}.png", *r[1:]] for r in rows]
    return write_csv(raw_dir / "annotations.csv", ANNOTATION_COLUMNS, named)


def read_detection_csv(
    path: Path, image_size: tuple[int, int], color_mode: ColorMode, max_objects: int
) -> DetectionExamples:
    """Read an annotations CSV (one row per box, image paths relative to the CSV's folder).

    Images are resized to `image_size`; boxes become fractions of the image's own size.
    Raises DataError for a bad row, a missing image or an image with over `max_objects` boxes.
    """
    _, rows = read_csv(path, ANNOTATION_COLUMNS)
    per_image: dict[str, list[tuple[str, list[float]]]] = {}
    for i, row in enumerate(rows):
        box = [to_number(row[c], path, i, c) for c in ANNOTATION_COLUMNS[2:]]
        if not row["label"].strip():
            raise DataError(f"{path} row {i + 2} has an empty label; give every box a label")
        if box[0] >= box[2] or box[1] >= box[3] or min(box) < 0:
            raise DataError(
                f"{path} row {i + 2}: box {box} needs 0 <= ymin < ymax and 0 <= xmin < xmax"
            )
        per_image.setdefault(row["image"], []).append((row["label"], box))
    classes = tuple(sorted({label for boxes in per_image.values() for label, _ in boxes}))
    channels = 1 if color_mode == "grayscale" else 3
    x = np.zeros((len(per_image), *image_size, channels), dtype=np.float32)  # (N, H, W, C)
    y = np.zeros((len(per_image), max_objects, 5), dtype=np.float32)  # (N, M, 5)
    y[..., 4] = PADDING_CLASS
    listed = sorted(per_image.items())
    for n, (name, boxes) in enumerate(progress(listed, len(listed), f"reading {path.name}", "img")):
        image_path = path.parent / name
        if not image_path.is_file():
            raise DataError(f"{path}: image {name} does not exist beside the CSV")
        if len(boxes) > max_objects:
            raise DataError(
                f"{path}: {name} has {len(boxes)} boxes, over max_objects={max_objects}; "
                "raise max_objects"
            )
        x[n] = read_image(image_path, image_size, color_mode).reshape(*image_size, channels)
        y[n, : len(boxes)] = _targets(image_path, boxes, classes, path, name)
    return DetectionExamples(x=x, y=y, classes=classes)


def _targets(
    image_path: Path,
    boxes: list[tuple[str, list[float]]],
    classes: tuple[str, ...],
    csv_path: Path,
    name: str,
) -> np.ndarray:
    """Rows `[ymin, xmin, ymax, xmax, class]`, coordinates as fractions of the source image."""

    with Image.open(image_path) as image:
        width, height = image.size
    rows = []
    for label, (ymin, xmin, ymax, xmax) in boxes:
        if ymax > height or xmax > width:
            raise DataError(f"{csv_path}: a box of {name} ends outside its {height}x{width} image")
        rows.append([ymin / height, xmin / width, ymax / height, xmax / width])
        rows[-1].append(float(classes.index(label)))
    return np.array(rows, dtype=np.float32)  # (objects, 5)
