"""The validate step: a prepared dataset checked against its reference version."""

from __future__ import annotations

import json
import logging

from kerasops.data import load_prepared
from kerasops.data.errors import DataError
from kerasops.data.validation import (
    ValidationError,
    ValidationReport,
    keep_reference,
    load_reference,
    validate_prepared,
)
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named

log = logging.getLogger("kerasops.pipeline")


@named("validate")
def validate(params: Params, dataset: str, keep: bool = True) -> ValidationReport:
    """Validate the prepared `dataset` against its reference; write the report to
    `artifacts/validation/<dataset>.{json,md}`.

    Raises ValidationError (naming each failed check) when a check failed; the reference is then
    left as it was. A passed version becomes the reference of the next one when `keep`.
    """
    prepared_root = params.path("prepared_data")
    current = load_prepared(dataset, prepared_root)
    try:
        reference = load_reference(prepared_root, dataset)
    except DataError as exc:
        log.warning("ignoring the unreadable reference of %s: %s", dataset, exc)
        reference = None
    report = validate_prepared(current, reference, params.validation(dataset))
    folder = params.path("artifacts") / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    verdict = {"passed": report.passed, "failures": len(report.failures)}
    verdict["warnings"] = len(report.warnings)
    (folder / f"{dataset}.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (folder / f"{dataset}.md").write_text(report.to_markdown())
    for warning in report.warnings:
        log.warning("%s: %s: %s", dataset, warning.name, warning.message)
    if not report.passed:
        raise ValidationError(report)
    if keep and report.reference_hash != report.content_hash:
        keep_reference(prepared_root, dataset)
    return report
