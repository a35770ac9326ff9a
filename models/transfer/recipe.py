"""How the transfer family trains: two phases in one run.

Phase 1 fits `train.epochs` at `train.learning_rate` with the backbone frozen; phase 2
unfreezes the last `fine_tune_layers` backbone layers (BatchNorm stays frozen), recompiles at
`fine_tune_learning_rate` and fits `fine_tune_epochs`. Each phase has its own early stopping
and logs `phase<N>_<metric>` per epoch, `phase<N>_trainable_params`, `phase<N>_seconds`,
`phase<N>_epochs` and `phase<N>_test_*`; the unprefixed per-epoch metrics run on across both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import keras

from kerasops.data import PreparedData
from kerasops.models.recipe import Recipe
from kerasops.models.training import (
    EpochLogger,
    History,
    RunLog,
    TrainConfig,
    compile_model,
    fit_phase,
    trainable_count,
)
from kerasops.models.transfer.builder import (
    TransferConfig,
    calibrate_batchnorm,
    unfreeze_top_layers,
)


class TransferRecipe(Recipe):
    """The head on the frozen backbone, then fine-tuning of the backbone's top layers."""

    def fit(
        self,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: TransferConfig,
        log: RunLog,
    ) -> History:
        if config.weights == "none" and config.calibration_images:
            images = prepared.splits["train"].head(config.calibration_images).x
            log.params({"calibrated_batchnorm_layers": calibrate_batchnorm(model, images)})
        history = self.run_phase(1, model, prepared, train, callbacks, config, log, train.epochs)
        if config.fine_tune_epochs and config.fine_tune_layers:
            start_fine_tuning(model, config, prepared, train)
            second = self.run_phase(
                2,
                model,
                prepared,
                train,
                callbacks,
                config,
                log,
                config.fine_tune_epochs,
                offset=len(history.get("loss", [])),
            )
            history = {k: history.get(k, []) + second.get(k, []) for k in {*history, *second}}
        return history

    def run_phase(
        self,
        phase: int,
        model: keras.Model,
        prepared: PreparedData,
        train: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback],
        config: TransferConfig,
        log: RunLog,
        epochs: int,
        offset: int = 0,
    ) -> History:
        """Fit one phase and log its trainable count, wall time, epochs and test metrics."""
        prefix = f"phase{phase}_"
        trainable = trainable_count(model)
        started = time.monotonic()
        phase_log = EpochLogger(log, prefix, offset)  # steps count epochs of the run
        history = fit_phase(
            phase, model, prepared, train, [*callbacks, phase_log], log, epochs, offset
        )
        seconds = time.monotonic() - started
        scores = self.evaluate(model, prepared, config).metrics
        log.metrics(
            {
                f"{prefix}trainable_params": float(trainable),
                f"{prefix}seconds": seconds,
                f"{prefix}epochs": float(len(history.get("loss", []))),
                **{f"{prefix}{k}": v for k, v in scores.items() if k.startswith("test_")},
            }
        )
        return history


def start_fine_tuning(
    model: keras.Model, config: TransferConfig, prepared: PreparedData, train: TrainConfig
) -> list[str]:
    """Unfreeze the backbone's top layers (BatchNorm kept frozen) and recompile at the
    fine-tuning learning rate; return the names of the layers made trainable."""
    unfrozen = unfreeze_top_layers(model, config.fine_tune_layers)
    slower = train.replace(learning_rate=config.fine_tune_learning_rate)
    compile_model(model, prepared.manifest.task, slower)
    return unfrozen
