"""The names one step writes and another reads: run and version tags, dataset names, and their typed readers.

A tag is a string on MLflow's side; where a step compares it (``staged``, a time), it reads it
through a reader here, never by hand. The acceptance digest and verdict stay in
``skyprophet.mlops.digest``, the ``promotion.*`` history in ``skyprophet.mlops.registry`` (their writers).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

# train's run: the logged model, the holdout it was measured on, and the last scheduled time
# among its training flights (the gate asks whether a version saw the holdout). Register copies
# the model URI and the time onto the version.
MODEL_URI_TAG = "skyprophet.model_uri"
HOLDOUT_URI_TAG = "skyprophet.holdout_uri"
TRAINED_THROUGH_TAG = "skyprophet.trained_through"
# Name and context of the training flights train (and a refit) logs as a run input (monitor's drift reference).
TRAIN_DATASET, TRAIN_CONTEXT = "train", "training"
# register's version: the candidate it was refitted from, and the refit's link back to its candidate.
CANDIDATE_URI_TAG = "skyprophet.candidate_model_uri"
REFIT_OF_TAG = "skyprophet.refit_of"
REFIT_RUN_TAG = "skyprophet.refit_run_id"
# register's run: the version, the gate's decision and whether it went on ``staging`` (what main reads).
REGISTERED_MODEL_TAG = "registered_model"
REGISTERED_VERSION_TAG = "registered_version"
GATE_DECISION_TAG = "gate_decision"
STAGED_TAG = "staged"
# A delay-rate correction's version (``lifecycle.recalibration`` writes; realized quality reads): the
# last flown flight its shift was chosen from, the shift, and the version whose booster it corrects.
CALIBRATED_THROUGH_TAG = "skyprophet.calibrated_through"
SHIFT_TAG = "skyprophet.intercept_shift"
CORRECTS_TAG = "skyprophet.corrects_version"
# register's version: the gate's comparison (``lifecycle.gate`` writes it; promote's quality check and
# realized quality read it) and the model's decision threshold.
GATE_VERDICT_TAG = "gate.decision"
GATE_PASSED, GATE_NOT_PASSED = "promoted", "not promoted"
GATE_HOLDOUT_URI_TAG = "gate.holdout_uri"
THRESHOLD_TAG = "model.threshold"
# promote's run and version: each check's outcome, the checks that failed (comma-separated, or "none").
ACCEPTANCE_FAILED_TAG = "acceptance.failed"
ACCEPTANCE_QUALITY_TAG = "acceptance.quality"
# The time format of TRAINED_THROUGH_TAG.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def gate_figure_tag(model: str, metric: str) -> str:
    """The version tag of the gate's ``metric`` for ``model`` (candidate, production): ``gate.candidate_ece``."""
    return f"gate.{model}_{metric}"


def acceptance_tag(check: str) -> str:
    """The tag of one acceptance check's outcome: ``acceptance.smoke`` = ``passed`` / ``failed: <reason>``."""
    return f"acceptance.{check}"


def is_staged(tags: Mapping[str, str]) -> bool:
    """Whether register's run put its version on ``staging`` (its STAGED_TAG, written as ``str(bool)``)."""
    return tags.get(STAGED_TAG) == str(True)


def staged_value(staged: bool) -> str:
    """STAGED_TAG's value for ``staged`` (what ``is_staged`` reads)."""
    return str(bool(staged))


def trained_through(tags: Mapping[str, str]) -> pd.Timestamp | None:
    """The last scheduled time among a model's training flights (TRAINED_THROUGH_TAG), if tagged."""
    value = tags.get(TRAINED_THROUGH_TAG)
    return pd.Timestamp(value) if value else None


def trained_through_value(through: pd.Timestamp) -> str:
    """TRAINED_THROUGH_TAG's value for ``through`` (what ``trained_through`` reads)."""
    return f"{through:{TIME_FORMAT}}"
