"""Transfer learning: an ImageNet backbone from Keras Applications under a small named head.

The model takes raw pixels. Inside it: grayscale to RGB, rescaling to the 0..255 range the
backbones expect, a resize to `image_size`, optional augmentation (active in training only),
the backbone's own `preprocess_input`, the backbone called with `training=False` (BatchNorm in
inference mode, kept so during `fit` by `InferenceMode`), then the head (`head_pool`,
`head_dropout`, `head_dense`, `probabilities`).

The builder returns the model ready for phase 1: backbone frozen, head trainable.
`unfreeze_top_layers` prepares phase 2 (fine-tuning) and never unfreezes BatchNorm.

Weights (`weights`):
* `imagenet`: Keras' standard download into its cache (`~/.keras/models/`, or
  `$KERAS_HOME/models/`); a cached file is used without network. When the download fails,
  `KerasopsError` names the missing file and the two ways to provide it.
* `none`: random initialisation.
* a path: a weights file of the same backbone architecture, loaded with `load_weights`:
  a `.weights.h5` (`backbone.save_weights`), a `.keras` (`backbone.save`) or the legacy `.h5`
  that Keras itself downloads for `imagenet` (e.g. `resnet50_..._notop.h5`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Literal, NamedTuple

import keras
from keras.src.backend.config import keras_home

from kerasops.config import StrictConfig, require
from kerasops.errors import KerasopsError
from kerasops.models.inputs import InputSpec, classification_head, model_input, require_inputs


class Backbone(NamedTuple):
    """A Keras Applications backbone: constructor, preprocessing module and input sizes."""

    application: str  # constructor in keras.applications, e.g. "MobileNetV2"
    module: str  # keras.applications submodule whose preprocess_input it needs
    native_size: int  # the size its ImageNet weights were trained at
    min_size: int  # the smallest input side the architecture accepts


BackboneName = Literal[
    "mobilenet_v2",
    "resnet50",
    "efficientnet_b0",
    "vgg16",
    "inception_v3",
    "mobilenet_v3_small",
    "resnet50_v2",
    "densenet121",
    "xception",
]

BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone("MobileNetV2", "mobilenet_v2", 224, 32),
    "resnet50": Backbone("ResNet50", "resnet50", 224, 32),
    "efficientnet_b0": Backbone("EfficientNetB0", "efficientnet", 224, 32),
    "vgg16": Backbone("VGG16", "vgg16", 224, 32),
    "inception_v3": Backbone("InceptionV3", "inception_v3", 299, 75),
    "mobilenet_v3_small": Backbone("MobileNetV3Small", "mobilenet_v3", 224, 32),
    "resnet50_v2": Backbone("ResNet50V2", "resnet_v2", 224, 32),
    "densenet121": Backbone("DenseNet121", "densenet", 224, 32),
    "xception": Backbone("Xception", "xception", 299, 71),
}

Augmentation = Literal["flip", "rotation", "zoom", "translation", "contrast"]
BACKBONE_LAYER = "backbone"


@dataclasses.dataclass(frozen=True)
class TransferConfig(StrictConfig):
    """An ImageNet backbone with a classification head, trained in two phases.

    Args:
        inputs: filled from the dataset (images, classification).
        backbone: a name of `BACKBONES`.
        weights: `imagenet`, `none`, or a path to a weights file of the same backbone.
        image_size: side the images are resized to inside the model; None for the
            backbone's native size (224, or 299 for InceptionV3 and Xception).
        augmentation: random layers applied in training only (flip is horizontal).
        augmentation_factor: strength of rotation, zoom, translation and contrast.
        head_units: hidden dense units of the head (0 for none).
        head_dropout: dropout before the head's dense layers.
        fine_tune_layers: phase 2 unfreezes the last N backbone layers (BatchNorm stays frozen;
            0 skips phase 2; -1 unfreezes every layer of whichever backbone is chosen).
        fine_tune_epochs: phase 2 epochs (0 skips phase 2); phase 1 runs `train.epochs`.
        fine_tune_learning_rate: phase 2 learning rate, usually 10-100x below phase 1's.
        calibration_images: with `weights: none`, training images used to set the backbone's
            BatchNorm statistics before phase 1 (0 to skip); a random backbone has placeholder
            statistics (mean 0, variance 1) under which its deep features vanish.
    """

    inputs: InputSpec | None = None
    backbone: BackboneName = "mobilenet_v2"
    weights: str = "imagenet"
    image_size: int | None = None
    augmentation: tuple[Augmentation, ...] = ()
    augmentation_factor: float = 0.1
    head_units: int = 0
    head_dropout: float = 0.2
    fine_tune_layers: int = 30
    fine_tune_epochs: int = 10
    fine_tune_learning_rate: float = 1e-4
    calibration_images: int = 256

    def validate(self) -> None:
        spec = BACKBONES[self.backbone]
        require(self.weights.strip() != "", "weights must be imagenet, none or a file path")
        require(
            self.image_size is None or self.image_size >= spec.min_size,
            f"image_size {self.image_size} is below {self.backbone}'s minimum of {spec.min_size}",
        )
        require(0.0 <= self.augmentation_factor < 1.0, "augmentation_factor must be in [0, 1)")
        require(self.head_units >= 0, "head_units must be >= 0")
        require(0.0 <= self.head_dropout < 1.0, "head_dropout must be in [0, 1)")
        require(self.fine_tune_layers >= -1, "fine_tune_layers must be >= 0, or -1 for all")
        require(self.fine_tune_epochs >= 0, "fine_tune_epochs must be >= 0")
        require(self.fine_tune_learning_rate > 0, "fine_tune_learning_rate must be positive")
        require(self.calibration_images >= 0, "calibration_images must be >= 0")

    @property
    def size(self) -> int:
        """The side images are resized to."""
        return self.image_size or BACKBONES[self.backbone].native_size


@keras.saving.register_keras_serializable(package="kerasops")
class ToRgb(keras.layers.Layer):
    """Repeat a single grayscale channel to three; RGB passes through."""

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def call(self, inputs):
        if inputs.shape[-1] == 1:
            return keras.ops.repeat(inputs, 3, axis=-1)  # (B, H, W, 3)
        return inputs


@keras.saving.register_keras_serializable(package="kerasops")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own `keras.applications.<module>.preprocess_input`, as a layer.

    Takes RGB values in 0..255; gives what the backbone was trained on ([-1, 1], caffe BGR
    mean-subtracted, torch-normalised, or unchanged for backbones that preprocess inside).
    """

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}")
        self.backbone = backbone

    def call(self, inputs):
        module = getattr(keras.applications, BACKBONES[self.backbone].module)
        return module.preprocess_input(keras.ops.cast(inputs, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


@keras.saving.register_keras_serializable(package="kerasops")
class InferenceMode(keras.layers.Layer):
    """Calls the wrapped backbone with `training=False`, whatever mode the outer model runs in.

    Keras 3 functional models pass the outer call's `training` down to every nested layer,
    overriding a `training=False` given when the graph was built; this layer keeps the
    backbone's BatchNorm and dropout in inference mode during `fit` as well.
    """

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)

    def call(self, inputs):
        return self.backbone(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)

    def get_config(self):
        backbone = keras.saving.serialize_keras_object(self.backbone)
        return {**super().get_config(), "backbone": backbone}

    @classmethod
    def from_config(cls, config):
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


def keras_cache_folder() -> Path:
    """The folder Keras downloads application weights into (`$KERAS_HOME/models`)."""
    try:
        home = keras_home()
    except ImportError:  # the private accessor moved: same rule as Keras applies
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser() / "models"


_FETCH_FAILURE = re.compile(r"URL fetch failure on (\S+?): ")


def weights_download_error(backbone: str, error: Exception) -> KerasopsError | None:
    """The user-facing error for a failed ImageNet download, or None if `error` is another."""
    match = _FETCH_FAILURE.search(str(error))
    if match is None:
        return None
    file_name = match.group(1).rsplit("/", 1)[-1]
    return KerasopsError(
        f"cannot download the ImageNet weights of {backbone} ({file_name}): no network? "
        f"Either copy {file_name} into {keras_cache_folder()}/ (the Keras cache) or set "
        f"weights: PATH to a weights file of {backbone} (.weights.h5, .keras or .h5)"
    )


def build_backbone(config: TransferConfig) -> keras.Model:
    """The headless backbone named `backbone`, with the weights `config.weights` asks for."""
    spec = BACKBONES[config.backbone]
    constructor = getattr(keras.applications, spec.application)
    weights = {"imagenet": "imagenet", "none": None}.get(config.weights, config.weights)
    if weights not in ("imagenet", None) and not Path(weights).is_file():
        raise KerasopsError(
            f"weights: {config.weights!r} is neither imagenet, none nor an existing file"
        )
    shape = (config.size, config.size, 3)
    try:
        return constructor(
            include_top=False, weights=weights, input_shape=shape, name=config.backbone
        )
    except Exception as exc:
        if weights == "imagenet" and (clear := weights_download_error(config.backbone, exc)):
            raise clear from None
        if weights not in ("imagenet", None):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise KerasopsError(
                f"weights file {weights} does not fit the {config.backbone} backbone: {first}"
            ) from None
        raise


def augmentation_layers(config: TransferConfig) -> list[keras.layers.Layer]:
    """Random layers, active only in training (identity at inference and in exports)."""
    factor = config.augmentation_factor
    makers = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", name="augment_flip"),
        "rotation": lambda: keras.layers.RandomRotation(factor, name="augment_rotation"),
        "zoom": lambda: keras.layers.RandomZoom(factor, name="augment_zoom"),
        "translation": lambda: keras.layers.RandomTranslation(
            factor, factor, name="augment_translation"
        ),
        "contrast": lambda: keras.layers.RandomContrast(factor, name="augment_contrast"),
    }
    return [makers[name]() for name in dict.fromkeys(config.augmentation)]


def image_preprocessing(
    inputs: keras.KerasTensor, spec: InputSpec, config: TransferConfig
) -> keras.KerasTensor:
    """Raw pixels (B, H, W, 1|3) in [0, pixel_max] to the backbone's input (B, S, S, 3)."""
    x = ToRgb(name="to_rgb")(inputs)  # (B, H, W, 3)
    x = keras.layers.Rescaling(255.0 / spec.pixel_max, name="to_255")(x)
    x = keras.layers.Resizing(config.size, config.size, name="resize")(x)  # (B, S, S, 3)
    for layer in augmentation_layers(config):
        x = layer(x)
    return BackbonePreprocess(config.backbone, name="backbone_preprocess")(x)


def transfer_head(features: keras.KerasTensor, spec: InputSpec, config: TransferConfig):
    """Pool the backbone's feature map (B, h, w, F) and classify: the trainable head."""
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)  # (B, F)
    x = keras.layers.Dropout(config.head_dropout, name="head_dropout")(x)
    if config.head_units:
        x = keras.layers.Dense(config.head_units, activation="relu", name="head_dense")(x)
    return classification_head(x, spec)  # (B, K)


def build_transfer(config: TransferConfig) -> keras.Model:
    """Return an uncompiled transfer model taking raw pixels, its backbone frozen (phase 1)."""
    spec = require_inputs(config.inputs, "transfer", ("image",))
    require(spec.task == "classification", "transfer builds classifiers; the dataset is regression")
    require(
        len(spec.shape) == 3 and spec.shape[-1] in (1, 3),
        f"transfer needs (height, width, 1 or 3) images, got {spec.shape}",
    )
    inputs = model_input(spec)  # (B, H, W, C) raw pixels
    x = image_preprocessing(inputs, spec, config)  # (B, S, S, 3)
    backbone = build_backbone(config)
    require(
        config.fine_tune_layers <= len(backbone.layers),  # -1 (all layers) always fits
        f"fine_tune_layers is {config.fine_tune_layers}, but {config.backbone} has "
        f"{len(backbone.layers)} layers",
    )
    backbone.trainable = False
    features = InferenceMode(backbone, name=BACKBONE_LAYER)(x)  # (B, h, w, F), training=False
    outputs = transfer_head(features, spec, config)
    return keras.Model(inputs, outputs, name=f"transfer_{config.backbone}")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model of a transfer model."""
    try:
        return model.get_layer(BACKBONE_LAYER).backbone
    except (ValueError, AttributeError):
        raise KerasopsError(f"model {model.name!r} has no {BACKBONE_LAYER!r} layer") from None


def is_batchnorm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def unfreeze_top_layers(model: keras.Model, num_layers: int) -> list[str]:
    """Make the last `num_layers` backbone layers trainable, BatchNorm excepted.

    Layers are counted as in `backbone.layers` (the Keras fine-tuning guide's convention).
    The caller recompiles: a change of `trainable` takes effect at the next compile.
    Returns the names of the layers now trainable; raises KerasopsError if N is out of range
    or unfreezes no weights.
    """
    backbone = backbone_of(model)
    total = len(backbone.layers)
    num_layers = total if num_layers == -1 else num_layers
    if not 1 <= num_layers <= total:
        raise KerasopsError(
            f"fine_tune_layers is {num_layers}; {backbone.name} of this model has "
            f"{total} layers, so choose 1..{total}"
        )
    top = backbone.layers[-num_layers:]
    unfrozen = [layer.name for layer in top if layer.weights and not is_batchnorm(layer)]
    if not unfrozen:
        raise KerasopsError(
            f"the last {num_layers} layers of {backbone.name} hold no weights outside "
            "BatchNorm, so phase 2 would train nothing: raise fine_tune_layers"
        )
    backbone.trainable = True
    for layer in backbone.layers[:-num_layers]:
        layer.trainable = False
    for layer in top:
        layer.trainable = not is_batchnorm(layer)
    if any(layer.trainable_weights for layer in backbone.layers if is_batchnorm(layer)):
        raise RuntimeError("a BatchNormalization layer became trainable while fine-tuning")
    return unfrozen


def calibrate_batchnorm(model: keras.Model, images) -> int:
    """Set every backbone BatchNorm's moving statistics to those of `images` (raw pixels).

    For a randomly initialised backbone only (`weights: none`): one forward pass in training
    mode with momentum 0, so each layer's statistics are exactly those of its inputs. The
    trainable flags and momenta are restored; returns the number of BatchNorm layers set.
    """
    backbone = backbone_of(model)
    preprocess = keras.Model(model.inputs[0], model.get_layer("backbone_preprocess").output)
    norms = [layer for layer in backbone.layers if is_batchnorm(layer)]
    trainable = [layer.trainable for layer in backbone.layers]
    momenta = [layer.momentum for layer in norms]
    backbone.trainable = True  # BatchNorm updates statistics only when trainable and training
    for layer in norms:
        layer.momentum = 0.0
    try:
        backbone(preprocess(images, training=False), training=True)  # (N, h, w, F), discarded
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
        backbone.trainable = all(trainable)
        for layer, flag in zip(backbone.layers, trainable, strict=True):
            layer.trainable = flag
    return len(norms)
