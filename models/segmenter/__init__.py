"""The U-Net-style segmenter: builder (`builder`), IoU metrics (`metrics`), plots and its
training recipe (`recipe`), registered as the `segmenter` family."""

from kerasops.models.family import ModelFamily
from kerasops.models.segmenter.builder import SegmenterConfig, build_segmenter
from kerasops.models.segmenter.recipe import SegmentationRecipe

# Presets by role and size.
PRESETS = {
    "segmenter_tiny": {"filters": [8, 16]},
    "segmenter_small": {"filters": [16, 32, 64]},
}

FAMILY = ModelFamily(
    SegmenterConfig,
    build_segmenter,
    "U-Net-style segmenter: a class id and class probabilities for every pixel",
    PRESETS,
    SegmentationRecipe(),
)

__all__ = ["FAMILY", "PRESETS", "SegmenterConfig", "build_segmenter"]
