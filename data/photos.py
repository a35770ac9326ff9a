"""A folder of generated colour photos, one subfolder per class, for tests and benchmarks.

Every photo is a random square crop of one of the two photos scikit-learn ships
(`sklearn.datasets.load_sample_images`: a temple in China, a flower), resized, maybe mirrored,
then recoloured by its class: `warm` (red up, blue down), `cool` (blue up, red down) or `grey`
(desaturated). The class shows in the colours, never in the scene, so a small CNN learns it;
nothing is downloaded, and the same seed gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cool", "grey", "warm")
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _recolour(pixels: np.ndarray, label: str, strength: float) -> np.ndarray:
    """(H, W, 3) float pixels recoloured by class."""
    if label == "grey":
        grey = pixels @ _GREY  # (H, W)
        return pixels * (1 - strength) + grey[..., None] * strength
    sign = 1.0 if label == "warm" else -1.0
    gains = np.array([1 + sign * 0.35 * strength, 1.0, 1 - sign * 0.35 * strength])
    return pixels * gains.astype(np.float32)


def generate_photo_folder(
    folder: Path,
    count: int,
    size: int = 256,
    seed: int = 0,
    quality: int = 90,
    first: int = 0,
) -> Path:
    """Write `count` JPEG photos of `size` x `size` to `folder/<class>/NNNNNN.jpg`, classes in
    turn, numbered from `first` (so processes can each write a part); return `folder`. Each
    photo depends only on `seed` and its number."""
    # deferred: scikit-learn loads only when photos are generated
    from sklearn.datasets import load_sample_images

    scenes = [np.asarray(image, dtype=np.float32) for image in load_sample_images().images]
    folder = Path(folder)
    for label in CLASSES:
        (folder / label).mkdir(parents=True, exist_ok=True)
    for index in range(first, first + count):
        rng = np.random.default_rng([seed, index])
        label = CLASSES[index % len(CLASSES)]
        scene = scenes[int(rng.integers(len(scenes)))]
        side = int(rng.integers(96, min(scene.shape[:2]) + 1))
        top = int(rng.integers(scene.shape[0] - side + 1))
        left = int(rng.integers(scene.shape[1] - side + 1))
        crop = scene[top : top + side, left : left + side]  # (side, side, 3)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        pixels = _recolour(crop, label, float(rng.uniform(0.6, 1.0)))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        image.save(folder / label / f"{index:06d}.jpg", format="JPEG", quality=quality)
    return folder
