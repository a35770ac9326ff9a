"""A compact single-shot object detector (YOLO-v1 style, one box per grid cell).

A small conv/batch-norm backbone turns raw pixels (rescaled inside the model) into an
(Sy, Sx) grid, one cell per `2 ** len(filters)` pixels. Each cell predicts, in a layer named
`grid` with 5 + K channels:

    [objectness logit, y offset, x offset, height, width (logits), K class logits]

The object whose box center falls in a cell is that cell's target: the offsets place the
center inside the cell and the height/width are fractions of the image (sigmoids of the
logits). Decoding and class-wise non-max suppression are layers of the model itself, so the
model built here, trained through its `grid` output (`training_view`), answers with

    boxes (B, D, 4) [ymin, xmin, ymax, xmax] as image fractions, classes (B, D) int32 (-1 pads),
    scores (B, D) = objectness x class probability, num_detections (B,) int32

for D = `max_detections`. `encode_targets` and `DetectionLoss` define the training targets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasops.config import StrictConfig, require
from kerasops.models.inputs import InputSpec, model_input, require_inputs, rescale_pixels

GRID_LAYER = "grid"
OUTPUT_KEYS = ("boxes", "classes", "scores", "num_detections")
TARGET_CHANNELS = 6  # [object, y offset, x offset, height, width, class]


@dataclasses.dataclass(frozen=True)
class DetectorConfig(StrictConfig):
    """A conv backbone down to a grid, a per-cell head, decoding and non-max suppression.

    Args:
        inputs: filled from the dataset (an image detection set).
        filters: filters of each backbone block (two 3x3 conv/batch-norm/ReLU, 2x2 pooling);
            each block halves the map, so the grid cell is `2 ** len(filters)` pixels.
        head_filters: filters of the 3x3 conv before the per-cell prediction.
        batchnorm_momentum: moving-statistics momentum of the batch norms.
        max_detections: boxes returned per image (padded with class -1 and score 0).
        score_threshold: boxes scoring below it are dropped before suppression.
        iou_threshold: a box overlapping a better one of its class above it is suppressed.
    """

    inputs: InputSpec | None = None
    filters: tuple[int, ...] = (16, 32, 64)
    head_filters: int = 64
    batchnorm_momentum: float = 0.9
    max_detections: int = 10
    score_threshold: float = 0.05
    iou_threshold: float = 0.5

    def validate(self) -> None:
        require(len(self.filters) > 0, "filters needs at least one block")
        require(all(f > 0 for f in self.filters), "filters must be positive")
        require(self.head_filters > 0, "head_filters must be positive")
        require(0.0 < self.batchnorm_momentum < 1.0, "batchnorm_momentum must be in (0, 1)")
        require(self.max_detections >= 1, "max_detections must be at least 1")
        require(0.0 <= self.score_threshold < 1.0, "score_threshold must be in [0, 1)")
        require(0.0 < self.iou_threshold <= 1.0, "iou_threshold must be in (0, 1]")


@keras.saving.register_keras_serializable(package="kerasops")
class DecodeGrid(keras.layers.Layer):
    """Grid predictions (B, Sy, Sx, 5 + K) to boxes (B, Sy*Sx, 4) and class scores
    (B, Sy*Sx, K)."""

    def call(self, grid):
        ops = keras.ops
        sy, sx = grid.shape[1], grid.shape[2]
        objectness = ops.sigmoid(grid[..., 0:1])  # (B, Sy, Sx, 1)
        offsets = ops.sigmoid(grid[..., 1:3])  # (B, Sy, Sx, 2)
        sizes = ops.sigmoid(grid[..., 3:5])  # (B, Sy, Sx, 2)
        rows = ops.reshape(ops.arange(sy, dtype=grid.dtype), (1, sy, 1))
        cols = ops.reshape(ops.arange(sx, dtype=grid.dtype), (1, 1, sx))
        center_y = (rows + offsets[..., 0]) / sy  # (B, Sy, Sx)
        center_x = (cols + offsets[..., 1]) / sx
        half_h, half_w = sizes[..., 0] / 2, sizes[..., 1] / 2
        corners = [center_y - half_h, center_x - half_w, center_y + half_h, center_x + half_w]
        boxes = ops.stack(corners, axis=-1)  # (B, Sy, Sx, 4)
        scores = objectness * ops.softmax(grid[..., 5:], axis=-1)  # (B, Sy, Sx, K)
        cells, num_classes = sy * sx, scores.shape[-1]
        boxes = ops.reshape(boxes, (-1, cells, 4))  # (B, N, 4)
        return boxes, ops.reshape(scores, (-1, cells, num_classes))  # (B, N, K)

    def compute_output_shape(self, input_shape):
        batch, sy, sx, channels = input_shape
        return (batch, sy * sx, 4), (batch, sy * sx, channels - 5)


@keras.saving.register_keras_serializable(package="kerasops")
class ClassNonMaxSuppression(keras.layers.Layer):
    """Per-class non-max suppression keeping the `max_detections` best boxes of each image.

    Returns boxes (B, D, 4) clipped to [0, 1], classes (B, D) int32 with -1 past the valid
    ones, scores (B, D) and num_detections (B,) int32.
    """

    def __init__(self, max_detections: int, iou_threshold: float, score_threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.max_detections = max_detections
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold

    def call(self, boxes, scores):

        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :],  # (B, N, 1, 4): one box shared by every class
            scores,  # (B, N, K)
            max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections,
            iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold,
            clip_boxes=True,
        )
        count = tf.cast(nms.valid_detections, tf.int32)  # (B,)
        valid = tf.range(self.max_detections)[None, :] < count[:, None]  # (B, D)
        classes = tf.where(valid, tf.cast(nms.nmsed_classes, tf.int32), -1)
        return nms.nmsed_boxes, classes, nms.nmsed_scores, count

    def compute_output_spec(self, boxes, scores):
        batch, d = boxes.shape[0], self.max_detections
        return (
            keras.KerasTensor((batch, d, 4), dtype="float32"),
            keras.KerasTensor((batch, d), dtype="int32"),
            keras.KerasTensor((batch, d), dtype="float32"),
            keras.KerasTensor((batch,), dtype="int32"),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_detections": self.max_detections,
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
        }


def backbone(x: keras.KerasTensor, config: DetectorConfig) -> keras.KerasTensor:
    """Conv blocks, each two conv/batch-norm/ReLU units then 2x2 max pooling."""
    for i, filters in enumerate(config.filters):
        for j in range(2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"block{i}_conv{j}"
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=config.batchnorm_momentum, name=f"block{i}_bn{j}"
            )(x)
            x = keras.layers.ReLU(name=f"block{i}_relu{j}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)  # (B, H/2, W/2, F)
    return x


def build_detector(config: DetectorConfig) -> keras.Model:
    """Return an uncompiled detector: raw pixels in, boxes/classes/scores/num_detections out."""
    spec = require_inputs(config.inputs, "detector", ("image",))
    require(spec.task == "detection", f"detector needs a detection dataset, not {spec.task}")
    require(len(spec.shape) == 3, f"detector needs (height, width, channels), got {spec.shape}")
    stride = 2 ** len(config.filters)
    require(
        spec.shape[0] % stride == 0 and spec.shape[1] % stride == 0,
        f"image sides {spec.shape[:2]} must be multiples of the grid cell {stride} "
        f"(2 ** len(filters)); use fewer blocks or another image size",
    )
    inputs = model_input(spec)  # (B, H, W, C)
    x = backbone(rescale_pixels(inputs, spec), config)  # (B, Sy, Sx, F)
    x = keras.layers.Conv2D(
        config.head_filters, 3, padding="same", activation="relu", name="head_conv"
    )(x)
    grid = keras.layers.Conv2D(5 + spec.num_outputs, 1, dtype="float32", name=GRID_LAYER)(x)
    # Decoding and non-max suppression stay float32 under mixed precision (the NMS op needs it).
    boxes, scores = DecodeGrid(dtype="float32", name="decode")(grid)  # (B, N, 4), (B, N, K)
    nms = ClassNonMaxSuppression(
        config.max_detections,
        config.iou_threshold,
        config.score_threshold,
        dtype="float32",
        name="nms",
    )(boxes, scores)
    return keras.Model(inputs, dict(zip(OUTPUT_KEYS, nms, strict=True)), name="detector")


def training_view(model: keras.Model) -> keras.Model:
    """The detector from its input to the raw `grid` predictions, sharing its weights."""
    return keras.Model(model.inputs, model.get_layer(GRID_LAYER).output, name="detector_grid")


def grid_shape(model: keras.Model) -> tuple[int, int]:
    """(Sy, Sx) of the detector's grid."""
    shape = model.get_layer(GRID_LAYER).output.shape
    return int(shape[1]), int(shape[2])


def encode_targets(y: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Padded box rows y (N, M, 5) to grid targets (N, Sy, Sx, 6).

    Each box goes to the cell holding its center: `[1, y offset, x offset, height, width,
    class]`, offsets as fractions of the cell. When two centers share a cell the first box
    keeps it (the detector finds one object per cell).
    """
    sy, sx = grid
    targets = np.zeros((len(y), sy, sx, TARGET_CHANNELS), dtype=np.float32)
    for n, m in zip(*np.nonzero(y[..., 4] >= 0), strict=True):
        ymin, xmin, ymax, xmax, label = (float(v) for v in y[n, m])
        cy, cx = (ymin + ymax) / 2 * sy, (xmin + xmax) / 2 * sx  # in cells
        row, col = min(int(cy), sy - 1), min(int(cx), sx - 1)
        if targets[n, row, col, 0] == 0:
            targets[n, row, col] = [1.0, cy - row, cx - col, ymax - ymin, xmax - xmin, label]
    return targets


@keras.saving.register_keras_serializable(package="kerasops")
class DetectionLoss(keras.losses.Loss):
    """Per image: objectness cross-entropy over every cell, plus `box_weight` x the L1 error of
    offsets and sizes and the class cross-entropy on cells holding an object, all divided by the
    number of objects."""

    def __init__(self, box_weight: float = 5.0, name: str = "detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = box_weight

    def call(self, y_true, y_pred):
        ops = keras.ops
        present = y_true[..., 0]  # (B, Sy, Sx)
        objectness = ops.binary_crossentropy(present, y_pred[..., 0], from_logits=True)
        box_error = ops.sum(ops.abs(ops.sigmoid(y_pred[..., 1:5]) - y_true[..., 1:5]), axis=-1)
        labels = ops.cast(y_true[..., 5], "int32")
        class_error = ops.sparse_categorical_crossentropy(labels, y_pred[..., 5:], from_logits=True)
        per_cell = objectness + present * (self.box_weight * box_error + class_error)
        total = ops.sum(per_cell, axis=(1, 2))  # (B,)
        return total / ops.maximum(ops.sum(present, axis=(1, 2)), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "box_weight": self.box_weight}
