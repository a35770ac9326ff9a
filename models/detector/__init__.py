"""The single-shot grid detector: builder (`builder`), mAP metrics (`metrics`), plots and its
training recipe (`recipe`), registered as the `detector` family."""

from kerasops.models.detector.builder import DetectorConfig, build_detector
from kerasops.models.detector.recipe import DetectionRecipe
from kerasops.models.family import ModelFamily

# Presets by role and size.
PRESETS = {
    "detector_tiny": {"filters": [8, 16, 32], "head_filters": 32},
    "detector_small": {"filters": [16, 32, 64], "head_filters": 64},
}

FAMILY = ModelFamily(
    DetectorConfig,
    build_detector,
    "single-shot grid detector: boxes, classes and scores after non-max suppression",
    PRESETS,
    DetectionRecipe(),
)

__all__ = ["FAMILY", "PRESETS", "DetectorConfig", "build_detector"]
