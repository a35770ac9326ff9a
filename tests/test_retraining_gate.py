"""The champion/challenger gate and the `retraining:` config: pure functions, no training."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from kerasops.errors import ConfigError
from kerasops.pipelines.config import Params, load_params
from kerasops.pipelines.config.retraining import GateRule, RetrainingConfig
from kerasops.pipelines.steps.gate import gate, judge
from kerasops.pipelines.steps.monitor import CompareReport, compare_report_path
from tests.conftest import write_params


def rules(**values) -> dict[str, GateRule]:
    return RetrainingConfig.from_dict({"gate": values}).rules()


def test_first_model_is_judged_by_absolute_thresholds_alone():
    config = rules(test_accuracy={"minimum": 0.8, "min_improvement": 0.05})
    decision = gate({"test_accuracy": 0.81}, None, config)
    assert decision.passed
    assert [c.rule for c in decision.checks] == ["minimum"]
    assert not gate({"test_accuracy": 0.79}, None, config).passed


def test_change_thresholds_compare_with_the_champion_in_the_metric_direction():
    higher = rules(test_accuracy={"minimum": 0.5, "max_regression": 0.01})
    assert gate({"test_accuracy": 0.905}, {"test_accuracy": 0.91}, higher).passed
    worse = gate({"test_accuracy": 0.89}, {"test_accuracy": 0.91}, higher)
    assert not worse.passed
    (failed,) = [c for c in worse.checks if not c.passed]
    assert failed.rule == "max_regression" and failed.value == pytest.approx(-0.02)
    assert "change in test_accuracy = -0.0200" in worse.reasons()[0]

    lower = rules(test_mae={"maximum": 10.0, "min_improvement": 0.5})
    assert not gate({"test_mae": 8.0}, {"test_mae": 9.0}, lower).passed  # higher is better
    lower = rules(test_mae={"direction": "lower", "maximum": 10.0, "min_improvement": 0.5})
    assert gate({"test_mae": 8.0}, {"test_mae": 9.0}, lower).passed
    assert not gate({"test_mae": 8.8}, {"test_mae": 9.0}, lower).passed
    assert not gate({"test_mae": 11.0}, None, lower).passed


def test_every_rule_must_pass_and_a_missing_metric_fails():
    config = rules(
        test_accuracy={"minimum": 0.8}, test_macro_f1={"minimum": 0.8, "max_regression": 0.0}
    )
    decision = gate({"test_accuracy": 0.9, "test_macro_f1": 0.85}, {"test_macro_f1": 0.86}, config)
    assert not decision.passed and len(decision.checks) == 3
    missing = gate({"test_accuracy": 0.9}, None, config)
    assert not missing.passed and "not computed" in missing.reasons()[0]
    assert "| test_macro_f1 | minimum | 0.8 | n/a | **no** |" in missing.to_markdown()
    assert not gate({"test_accuracy": 0.9}, None, {}).passed  # no rule: never blessed


@pytest.mark.parametrize(
    "section, message",
    [
        ({"gate": {"test_accuracy": {"minimun": 0.8}}}, "retraining.gate.test_accuracy.minimun"),
        ({"gate": {"test_accuracy": {"direction": "up", "minimum": 1}}}, "direction"),
        ({"gate": {"test_accuracy": {}}}, "retraining.gate.test_accuracy: the rule sets no"),
        ({"gate": {"acc": {"max_regression": 0.1, "min_improvement": 0.1}}}, "not both"),
        ({"gate": {"acc": {"max_regression": -0.1}}}, "max_regression must be >= 0"),
        ({"gate": {"acc": 0.8}}, "retraining.gate.acc: expected a mapping"),
        ({"registered_model": "{model}-{split}"}, "may only use {model} and {dataset}"),
        ({"registered_model": "{model}/{dataset}"}, "letters, digits"),
        ({"canary": "yes"}, "retraining.canary"),
        ({"infra_validation": {"latency_ms": 5}}, "retraining.infra_validation.latency_ms"),
        ({"split": "train"}, "retraining.split"),
        ({"gate": {"live_agreement": {"minimum": 0.9, "max_regression": 0.1}}}, "minimum/maximum"),
        ({"gate": {"live_speed": {"maximum": 9}}}, "retraining.gate.live_speed: unknown live"),
    ],
)
def test_bad_retraining_sections_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Params.from_dict({"retraining": section})


def test_params_section_is_typed():
    params = Params.from_dict(
        {"retraining": {"gate": {"test_accuracy": {"minimum": 0.8}}, "canary": True}}
    )
    assert params.retraining.canary is True
    assert params.retraining.model_name("cnn", "digits") == "cnn-digits"
    assert params.retraining.rules()["test_accuracy"].minimum == 0.8


def test_infra_validation_compares_numbers_and_texts():
    import numpy as np

    from kerasops.pipelines.retraining.infra import difference, outputs_of

    assert difference([[0.5, 0.25]], np.array([[0.5, 0.5]])) == 0.25
    texts = np.array([b"2021-03-03", b"2020-01-01"], dtype=object)
    assert difference(["2021-03-03", "2020-01-01"], texts) == 0.0
    assert difference(["2021-03-03", "2020-01-02"], texts) == float("inf")
    assert set(outputs_of({"boxes": [1], "scores": [2]})) == {"boxes", "scores"}
    assert set(outputs_of(np.zeros((2, 3)))) == {""}


def serve_labels(project, **labels: int) -> None:
    """models.config serving digits with these labels, where `kerasops monitor` looks."""
    path = project / "artifacts" / "serving" / "models.config"
    path.parent.mkdir(parents=True, exist_ok=True)
    versions = "".join(f"versions: {v} " for v in sorted(set(labels.values())))
    keys = "".join(f'version_labels {{ key: "{k}" value: {v} }} ' for k, v in labels.items())
    path.write_text(
        f'model_config_list {{ config {{ name: "digits" base_path: "{project}/models/digits" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ {versions}}} }} '
        f"{keys}}} }}\n"
    )


def write_compare_report(params, agreement=0.97, p99=12.0, versions=(2, 1), age_s=0.0) -> None:
    """The report `kerasops monitor digits --compare champion challenger` writes."""
    latency = {"champion": {"p50": 1.0, "p99": 2.0}, "challenger": {"p50": 1.0, "p99": p99}}
    report = CompareReport(
        "digits", "champion", "challenger", versions, 40, 40, 0, "classifier",
        agreement, None, latency,
    )  # fmt: skip
    summary = {**dataclasses.asdict(report), "metrics": report.metrics()}
    summary["created_at"] = time.time() - age_s
    path = compare_report_path(params, "digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))


def test_live_rules_read_the_compare_report_and_fail_without_one(project):
    params = load_params(project / "params.yaml")
    live = rules(
        test_accuracy={"minimum": 0.8},
        live_agreement={"minimum": 0.95},
        live_latency_ms={"direction": "lower", "maximum": 50},
    )
    missing = judge(params, "digits", {"test_accuracy": 0.9}, None, live)
    assert not missing.passed
    assert [c.metric for c in missing.checks if not c.passed] == [
        "live_agreement",
        "live_latency_ms",
    ]
    assert "no shadow-traffic comparison report at" in missing.reasons()[0]
    assert "kerasops monitor digits --compare champion challenger" in missing.reasons()[0]

    serve_labels(project, champion=2, challenger=1)

    def compared(agreement: float, p99: float) -> None:
        write_compare_report(params, agreement, p99)

    compared(0.97, 12.0)
    assert judge(params, "digits", {"test_accuracy": 0.9}, None, live).passed
    compared(0.90, 12.0)
    low = judge(params, "digits", {"test_accuracy": 0.9}, None, live)
    assert not low.passed and low.reasons() == ["live_agreement = 0.9000 (needs >=0.95)"]
    compared(0.97, 80.0)
    slow = judge(params, "digits", {"test_accuracy": 0.9}, None, live)
    assert slow.reasons() == ["live_latency_ms = 80.0000 (needs <=50)"]
    compare_report_path(params, "digits").write_text("{not json")
    broken = judge(params, "digits", {"test_accuracy": 0.9}, None, live)
    assert "unreadable shadow-traffic comparison report" in broken.reasons()[0]
    offline = rules(test_accuracy={"minimum": 0.8})  # no live rule: the report is not read
    assert judge(params, "digits", {"test_accuracy": 0.9}, None, offline).passed


def test_live_rules_refuse_an_old_report_or_one_of_other_versions(project):
    params = load_params(project / "params.yaml")
    assert params.monitoring.compare_max_age_h == 24.0  # the default
    live = rules(test_accuracy={"minimum": 0.8}, live_agreement={"minimum": 0.95})
    serve_labels(project, champion=2, challenger=1)
    write_compare_report(params, age_s=3600)
    assert judge(params, "digits", {"test_accuracy": 0.9}, None, live).passed
    write_compare_report(params, age_s=25 * 3600)  # older than a day
    (old,) = judge(params, "digits", {"test_accuracy": 0.9}, None, live).reasons()
    assert "is 25.0 h old, older than monitoring.compare_max_age_h = 24" in old
    assert "kerasops monitor digits --compare champion challenger" in old
    write_compare_report(params)
    serve_labels(project, champion=3, challenger=2)  # promoted since the report
    (moved,) = judge(params, "digits", {"test_accuracy": 0.9}, None, live).reasons()
    assert "compared versions 2 (champion) and 1 (challenger)" in moved
    assert "are versions 3 and 2 now" in moved
    (project / "artifacts" / "serving" / "models.config").unlink()
    (gone,) = judge(params, "digits", {"test_accuracy": 0.9}, None, live).reasons()
    assert "cannot be checked: models.config not found" in gone
    write_params(project, monitoring={"compare_max_age_h": 0})
    with pytest.raises(ConfigError, match="monitoring.compare_max_age_h must be positive"):
        load_params(project / "params.yaml")
