"""How the GAN trains: the generator against a discriminator, adversarially; the generator is
served (noise in, image out).

The GAN has no validation loss, so early stopping and best-checkpointing are not used: the
generator after the last epoch is kept. A grid of samples is reported every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from kerasops.config import require
from kerasops.data import PreparedData
from kerasops.models.evaluation import Evaluation
from kerasops.models.gan.builder import AdversarialTrainer, GanConfig, build_discriminator
from kerasops.models.gan.metrics import gan_metrics, generate
from kerasops.models.inputs import InputSpec
from kerasops.models.recipe import Recipe
from kerasops.models.training import History, RunLog, TrainConfig, fit_on, gradient_options


class GanRecipe(Recipe):
    """Adversarial steps with Adam (beta_1 0.5); scored by digits score and Fréchet distance."""

    def input_spec(self, prepared: PreparedData, train: TrainConfig) -> InputSpec:
        spec = super().input_spec(prepared, train)
        return spec.replace(task="generation", num_outputs=int(np.prod(spec.shape)))

    def compile(self, model: keras.Model, spec: InputSpec, train: TrainConfig) -> keras.Model:
        require(  # before the run starts: the adversarial fit has no validation split
            train.lr_schedule != "reduce_on_plateau",
            "train.lr_schedule reduce_on_plateau watches val_loss, which the gan has none of: "
            "use cosine or warmup_cosine",
        )
        return model  # the adversarial trainer is compiled in `fit`, with the discriminator

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: GanConfig,
        log: RunLog,
    ) -> History:
        trainer = AdversarialTrainer(
            model,
            build_discriminator(config),
            config.latent_dim,
            label_smoothing=config.label_smoothing,
            seed=train.seed,
        )
        trainer.compile(  # beta_1 = 0.5: the DCGAN paper's setting for stable adversarial steps
            d_optimizer=keras.optimizers.Adam(
                train.learning_rate, beta_1=0.5, **gradient_options(train)
            ),
            g_optimizer=keras.optimizers.Adam(
                train.learning_rate, beta_1=0.5, **gradient_options(train)
            ),
        )
        # no validation split: what watches validation metrics (early stopping, best-only
        # checkpoint, a plateau schedule) has nothing to watch
        kept = [c for c in callbacks if not str(getattr(c, "monitor", "")).startswith("val_")]
        grid = SampleGridLogger(model, log, config.inputs.pixel_max, seed=train.seed)
        return fit_on(trainer, prepared.splits["train"], None, train, [*kept, grid])

    def evaluate(
        self, model: keras.Model, prepared: PreparedData, config: GanConfig, split: str = "test"
    ) -> Evaluation:
        splits = prepared.splits
        pixel_max = config.inputs.pixel_max
        return Evaluation(metrics=gan_metrics(model, splits["train"], splits[split], pixel_max))

    def example_inputs(self, model: keras.Model, prepared: PreparedData) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(5, model.input_shape[-1])).astype("float32")


def sample_grid(images: np.ndarray, pixel_max: float, columns: int = 8, zoom: int = 4):
    """Tile images (N, H, W, 1) into one uint8 picture, each pixel enlarged `zoom` times."""
    count, height, width = images.shape[:3]
    rows = -(-count // columns)
    canvas = np.zeros((rows * (height + 1), columns * (width + 1)), dtype="float32")
    for i, image in enumerate(images[..., 0]):
        top, left = (i // columns) * (height + 1), (i % columns) * (width + 1)
        canvas[top : top + height, left : left + width] = image
    canvas = np.clip(canvas / pixel_max, 0.0, 1.0)
    return (np.kron(canvas, np.ones((zoom, zoom))) * 255).astype("uint8")


class SampleGridLogger(keras.callbacks.Callback):
    """Report a grid of images from fixed noise after every epoch (key `samples`)."""

    def __init__(
        self, generator: keras.Model, log: RunLog, pixel_max: float, count: int = 32, seed: int = 0
    ):
        super().__init__()
        self.generator = generator
        self.log = log
        self.pixel_max = pixel_max
        self.count = count
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        images = generate(self.generator, self.count, self.seed)
        self.log.image(sample_grid(images, self.pixel_max), key="samples", step=epoch + 1)
