"""Transfer learning from ImageNet backbones: builder and backbones (`builder`) and the
two-phase training recipe (`recipe`), registered as the `transfer` family."""

from kerasops.models.family import ModelFamily
from kerasops.models.transfer.builder import (
    BACKBONES,
    TransferConfig,
    backbone_of,
    build_transfer,
    is_batchnorm,
    unfreeze_top_layers,
)
from kerasops.models.transfer.recipe import TransferRecipe, start_fine_tuning

# Presets by backbone, role and size.
PRESETS = {
    "transfer_mobilenet_small": {
        "backbone": "mobilenet_v2",
        "image_size": 96,
        "head_dropout": 0.2,
        "fine_tune_layers": 30,
    },
    "transfer_efficientnet_base": {
        "backbone": "efficientnet_b0",
        "image_size": 224,
        "augmentation": ["rotation", "zoom"],
        "head_dropout": 0.3,
        "fine_tune_layers": 40,
    },
    "transfer_resnet_base": {
        "backbone": "resnet50",
        "image_size": 224,
        "head_dropout": 0.3,
        "fine_tune_layers": 30,
    },
    "transfer_vgg_base": {
        "backbone": "vgg16",
        "image_size": 224,
        "head_units": 256,
        "head_dropout": 0.5,
        "fine_tune_layers": 4,
    },
    "transfer_inception_base": {
        "backbone": "inception_v3",
        "image_size": 299,
        "head_dropout": 0.3,
        "fine_tune_layers": 60,
    },
}

FAMILY = ModelFamily(
    TransferConfig,
    build_transfer,
    "ImageNet backbone (Keras Applications) + head, frozen then fine-tuned",
    PRESETS,
    TransferRecipe(),
)

__all__ = [
    "BACKBONES",
    "FAMILY",
    "PRESETS",
    "TransferConfig",
    "backbone_of",
    "build_transfer",
    "is_batchnorm",
    "start_fine_tuning",
    "unfreeze_top_layers",
]
