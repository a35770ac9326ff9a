"""The `retraining:` section of params.yaml: the champion/challenger gate and infra-validation.

```yaml
retraining:
  registered_model: "{model}-{dataset}"   # MLflow registered model and served model name
  split: test                             # held-out split both models are scored on
  gate:                                   # every rule must pass (TFX Evaluator's blessing)
    test_accuracy: {direction: higher, minimum: 0.8, max_regression: 0.01}
    test_macro_f1: {direction: higher, minimum: 0.75}
  model_gates:                            # a family's own rules, instead of `gate`
    rnn: {test_mae: {direction: lower, maximum: 20, max_regression: 1.0}}
  infra_validation: {requests: 8, latency_bound_ms: 1000, tolerance: 1.0e-4}
  canary: false                           # publish the new version under label `canary` first
```

Rules on live traffic (`live_agreement: {minimum: 0.95}`, `live_latency_ms: {direction: lower,
maximum: 50}`, `live_mean_abs_diff`) are read from the shadow-traffic comparison
(`kerasops monitor NAME --compare champion challenger`); they take absolute thresholds only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from kerasops.config import StrictConfig, require
from kerasops.errors import ConfigError

# gate metrics read from the shadow-traffic comparison report, not from a held-out split
LIVE_METRICS = ("live_agreement", "live_latency_ms", "live_mean_abs_diff")


@dataclasses.dataclass(frozen=True)
class GateRule(StrictConfig):
    """Thresholds for one metric; unset thresholds are not checked.

    Args:
        direction: `higher` or `lower` is better.
        minimum: absolute floor the challenger must reach.
        maximum: absolute ceiling the challenger must stay under.
        max_regression: against the champion: may be worse by at most this much.
        min_improvement: against the champion: must be better by at least this much.
    """

    direction: Literal["higher", "lower"] = "higher"
    minimum: float | None = None
    maximum: float | None = None
    max_regression: float | None = None
    min_improvement: float | None = None

    def validate(self) -> None:
        require(
            self.max_regression is None or self.min_improvement is None,
            "set max_regression or min_improvement, not both",
        )
        for key in ("max_regression", "min_improvement"):
            value = getattr(self, key)
            require(value is None or value >= 0, f"{key} must be >= 0")
        checks = (self.minimum, self.maximum, self.max_regression, self.min_improvement)
        require(any(v is not None for v in checks), "the rule sets no threshold")


@dataclasses.dataclass(frozen=True)
class InfraValidationConfig(StrictConfig):
    """How a challenger proves it serves before promotion.

    Args:
        requests: warmup requests written into the export and sent over REST and over gRPC.
        latency_bound_ms: slowest acceptable answer, per request.
        tolerance: largest absolute difference from the in-process prediction.
    """

    requests: int = 8
    latency_bound_ms: float = 1000.0
    tolerance: float = 1e-4

    def validate(self) -> None:
        require(self.requests >= 1, "retraining.infra_validation.requests must be >= 1")
        require(self.latency_bound_ms > 0, "retraining.infra_validation.latency_bound_ms > 0")
        require(self.tolerance >= 0, "retraining.infra_validation.tolerance must be >= 0")


@dataclasses.dataclass(frozen=True)
class RetrainingConfig(StrictConfig):
    """The scheduled retraining flow's settings (see the module docstring for an example)."""

    registered_model: str = "{model}-{dataset}"
    split: Literal["val", "test"] = "test"
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_gates: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    infra_validation: InfraValidationConfig = dataclasses.field(
        default_factory=InfraValidationConfig
    )
    canary: bool = False

    def validate(self) -> None:
        self.rules()  # every rule is checked when params.yaml is read
        for model in self.model_gates:
            self.rules(model)
        try:
            name = self.registered_model.format(model="m", dataset="d")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                "retraining.registered_model may only use {model} and {dataset}, "
                f"got {self.registered_model!r}"
            ) from None
        require(
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) is not None,
            f"retraining.registered_model {self.registered_model!r} must give a name of "
            "letters, digits, '_', '-' and '.'",
        )

    def rules(self, model: str | None = None) -> dict[str, GateRule]:
        """The gate's rules by metric name, each checked strictly: `model_gates.<model>` when
        the model family has its own (a forecaster gates on MAE), else `gate`."""
        rules = {}
        own = model is not None and model in self.model_gates
        section = f"retraining.model_gates.{model}" if own else "retraining.gate"
        for metric, values in (self.model_gates[model] if own else self.gate).items():
            prefix = f"{section}.{metric}."
            if not isinstance(values, dict):
                raise ConfigError(f"{section}.{metric}: expected a mapping of thresholds")
            try:
                rules[metric] = GateRule.from_dict(values, prefix=prefix)
            except ConfigError as exc:
                text = str(exc)
                raise ConfigError(text if prefix in text else f"{prefix[:-1]}: {text}") from None
            _check_live(f"{section}.{metric}", metric, rules[metric])
        return rules

    def model_name(self, model: str, dataset: str) -> str:
        """The registered (and served) model name for a model family trained on a dataset."""
        return self.registered_model.format(model=model, dataset=dataset)


def _check_live(key: str, metric: str, rule: GateRule) -> None:
    """A live_* rule names a metric of the comparison report and sets absolute thresholds."""
    if not metric.startswith("live_"):
        return
    require(metric in LIVE_METRICS, f"{key}: unknown live metric; use {', '.join(LIVE_METRICS)}")
    require(
        rule.max_regression is None and rule.min_improvement is None,
        f"{key}: a live metric takes minimum/maximum only (the champion has no shadow figures)",
    )
