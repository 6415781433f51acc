"""One monitoring pass: new flights against the Production version's training flights, and realized quality.

Reads the new flights and the reference (the ``train`` dataset the version's train run logged),
runs the adversarial validator and PSI (``drift``), writes the report (``drift_report``) and, when
the flights have flown (``Fecha-O``), the realized quality (``realized``); all inside one
``monitor`` run tagged with the watched version.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pyfunc.schema import clean_flights
from skyprophet import config
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import require_production, version_uri
from skyprophet.monitoring import drift_report, flights, realized, reference
from skyprophet.monitoring.drift import detect_drift
from skyprophet.params import MonitorParams

logger = logging.getLogger("skyprophet.monitor")


@dataclass
class MonitorResult:
    """What a scheduler needs: the verdict, the watched version, the run and the report."""

    run_id: str
    model_name: str
    model_version: str
    roc_auc: float
    auc_threshold: float
    drift: bool
    top_features: list[str]
    report_path: str
    realized: dict[str, float] | None = None
    degraded_reasons: list[str] | None = None

    @property
    def degraded(self) -> bool:
        """Realized quality fell past the thresholds (exit code 5)."""
        return bool(self.degraded_reasons)


def watch(params: MonitorParams = MonitorParams()) -> MonitorResult:
    """Compare the new flights with the Production version's training flights inside one MLflow run."""
    data, model_name, auc_threshold = params.data, params.model_name, params.auc_threshold
    folder = Path(params.report_dir) if params.report_dir else config.PROJECT_ROOT / "reports" / "monitor"
    excluded = tuple(name.strip() for name in params.exclude_features.split(",") if name.strip())
    with tracking.step_run("monitor") as active, tempfile.TemporaryDirectory() as workdir:
        tracking.log_step_params(params, report_dir=str(folder))
        logger.info("read: new flights %s", data)
        raw = flights.read_flights(data, Path(workdir))
        new = flights.clean_new_flights(raw, data)
        client = mlflow.MlflowClient()
        version = require_production(client, model_name)
        train_run_id = reference.source_run(version)
        model_uri = version_uri(model_name, version.version)
        logger.info("reference: %s (train run %s)", model_uri, train_run_id)
        spec = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().spec.features
        reference_raw, reference_dataset = reference.load_reference(reference.reference_input(client, train_run_id))
        context = {
            "run_id": active.info.run_id,
            "data": data,
            "model_name": model_name,
            "model_version": str(version.version),
            "model_run_id": train_run_id,
            "reference_source": json.loads(reference_dataset.source.to_json()).get("uri", ""),
            "reference_digest": reference_dataset.digest,
        }
        mlflow.set_tags({f"monitor.{k}": v for k, v in context.items() if k not in ("run_id", "data")})
        tracking.log_input(reference_dataset, context="reference")
        monitored = mlflow.data.from_pandas(raw, source=tracking.dataset_source(data), name="monitored")
        tracking.log_input(monitored, context="monitored")
        report = detect_drift(
            clean_flights(reference_raw),
            new,
            spec,
            params.cv_folds,
            params.seed,
            params.max_rows,
            exclude_features=excluded,
        )
        drift = report.roc_auc >= auc_threshold
        logger.info("verdict: adversarial ROC AUC %.4f (alert at %.2f): %s", report.roc_auc, auc_threshold, drift)
        drift_report.log_report(report)
        mlflow.set_tags(
            {
                "monitor.drift": "detected" if drift else "none",
                "monitor.top_features": ",".join(report.top(5)),
                "monitor.top_psi_features": ",".join(report.top(5, by="psi")),
            }
        )
        paths = drift_report.write_report(report, context, auc_threshold, folder)
        measured = None
        if realized.has_flown(raw):
            measured = realized.measure_realized(
                client, version, raw, params.realized_ece_margin, params.realized_auc_margin, folder
            )
            paths.append(folder / "realized.png")
        for path in paths:
            mlflow.log_artifact(str(path), "report")
    return MonitorResult(
        run_id=context["run_id"],
        model_name=model_name,
        model_version=context["model_version"],
        roc_auc=report.roc_auc,
        auc_threshold=auc_threshold,
        drift=drift,
        top_features=report.top(5),
        report_path=str(folder / "report.md"),
        realized=None if measured is None else measured.overall,
        degraded_reasons=None if measured is None else measured.reasons,
    )
