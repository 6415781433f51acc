"""monitor: new scheduled flights vs the flights the Production model learned from -> drift report.

Reads: the new flights (path, ``file://`` or ``gs://``; CSV or Parquet; a schedule is enough:
only the columns of ``pyfunc.schema.REQUIRED_COLUMNS``), the Production version of
``model_name`` (its feature spec) and the ``train`` dataset its train run logged (the reference).
Writes: an MLflow run tagged with the watched version (adversarial ROC AUC, per-feature importance
and population stability index), ``reports/monitor/{report.md,top_drift.png,drift.json}``, also
logged as run artifacts under ``report/``.

When the flights carry what happened (``Fecha-O``), monitor also measures realized quality
(``skyprophet.monitoring.realized``): each flown flight scored by the version that was Production when it flew,
metrics ``realized_*`` overall and ``realized_weekly_*`` per ISO week (step 201727 = 2017 week 27),
tables ``realized/{by_airline,weekly}.json``, ``report/realized.png``, and ``realized.*`` tags and a
description line on the Production version. It is judged against the gate's figures of the version
(``realized_ece_margin``, ``realized_auc_margin``).

An adversarial validator (XGBoost, stratified K-fold) learns to tell reference rows from new rows
on the model's own input features: an out-of-fold ROC AUC of 0.5 means indistinguishable.
Categories the model never saw keep an "unseen" code instead of failing: they are drift too.

Exit codes of ``python -m steps.monitor``: 0 no drift; 3 drift (AUC >= ``auc_threshold``);
4 the new flights are unusable (missing, empty, wrong schema, bad values); 5 realized quality
degraded (realized ECE > gate ECE + ``realized_ece_margin`` or realized ROC AUC < gate ROC AUC -
``realized_auc_margin``; wins over 3: retrain or correct); 1 any other failure.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from mlflow.entities import DatasetInput  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from pyfunc.features import FEATURE_NAMES, FEATURE_TYPES, FeatureSpec, build_features  # noqa: E402
from pyfunc.schema import (  # noqa: E402
    CATEGORY_COLUMNS,
    REQUIRED_COLUMNS,
    TARGET,
    InvalidFlightsError,
    clean_flights,
    scorable,
)
from skyprophet import config  # noqa: E402
from skyprophet.mlops import tracking  # noqa: E402
from skyprophet.mlops.registry import require_production  # noqa: E402
from skyprophet.mlops.tags import TRAIN_CONTEXT, TRAIN_DATASET  # noqa: E402
from skyprophet.monitoring import realized  # noqa: E402
from skyprophet.storage import DataSourceError, fetch  # noqa: E402

logger = logging.getLogger("skyprophet.monitor")
MONITOR = config.DEFAULTS["monitor"]
EXIT_DRIFT = 3
EXIT_BAD_INPUT = 4
EXIT_DEGRADED = 5
UNSEEN = "<unseen>"
RARE_OR_UNSEEN = "<rare or unseen>"
PSI_BINS = 10
# Shares below this count as this, so a category absent on one side gives a large, finite PSI.
PSI_FLOOR = 1e-4
# Per feature, the categories / bins kept in the report and drift.json (largest PSI first).
KEPT_BINS = 10
TOP_FEATURES = 10
# A small validator: drift that a few shallow trees cannot find is not worth an alert.
VALIDATOR_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_cat_to_onehot": 1,
    "eta": 0.15,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    # One thread: on a shared 2-core machine two OpenMP threads ran 10-20x slower than one.
    "nthread": 1,
}
VALIDATOR_ROUNDS = 50


class BadFlightsError(ValueError):
    """The new flights cannot be checked as given; the message says what is wrong."""


class ReferenceDataError(RuntimeError):
    """The Production version's training data cannot be found, or changed since training."""


@dataclass
class FeatureDrift:
    """How one model input moved: validator importance (share of gain) and PSI with its largest bins."""

    name: str
    importance: float
    psi: float
    bins: list[dict[str, object]]


@dataclass
class DriftReport:
    """The adversarial validator's verdict and every feature's drift, most separating first."""

    roc_auc: float
    fold_roc_auc: list[float]
    reference_rows: int
    new_rows: int
    new_unseen_rows: int
    features: list[FeatureDrift]

    def top(self, n: int = 5, by: str = "importance") -> list[str]:
        """Names of the ``n`` features with the largest ``importance`` or ``psi``."""
        return [f.name for f in sorted(self.features, key=lambda f: -getattr(f, by))[:n]]

    def feature(self, name: str) -> FeatureDrift:
        """One feature's drift by name."""
        return next(f for f in self.features if f.name == name)


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


def read_flights(uri: str, workdir: Path) -> pd.DataFrame:
    """The new flights as given (CSV as text, or Parquet); refuses a missing, empty or unreadable file."""
    if not uri:
        raise BadFlightsError("no new flights given: pass -P data=<path, file:// or gs:// URI> (or --data)")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not local.is_file():
            raise BadFlightsError(f"new flights not found at {uri}; pass an existing file")
    try:
        path = fetch(uri, workdir / (Path(parsed.path).name or "flights.csv"))
    except DataSourceError as err:
        raise BadFlightsError(f"cannot fetch new flights: {err}") from err
    if path.stat().st_size == 0:
        raise BadFlightsError(f"new flights file {uri} is empty; expected a header with {list(REQUIRED_COLUMNS)}")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise BadFlightsError(f"cannot read new flights {uri} as CSV or Parquet: {err}") from err
    if frame.empty:
        raise BadFlightsError(f"new flights file {uri} has no flights (header only?)")
    return frame


def clean_new_flights(frame: pd.DataFrame, uri: str) -> pd.DataFrame:
    """The schedule's required columns, parsed and normalised; schema problems name the field."""
    try:
        return clean_flights(frame)
    except InvalidFlightsError as err:
        raise BadFlightsError(
            f"new flights {uri}: {err.message}; a schedule needs the columns {list(REQUIRED_COLUMNS)}"
        ) from err


def production_version(client: mlflow.MlflowClient, model_name: str) -> ModelVersion:
    """The version under the alias ``production``; says what to run when there is none."""
    version = require_production(client, model_name)
    if not version.run_id:
        raise ReferenceDataError(f"{model_name} version {version.version} has no source run, so no training data")
    return version


def reference_input(client: mlflow.MlflowClient, run_id: str) -> DatasetInput:
    """The ``train`` dataset (context ``training``) the train run logged as its input."""
    for dataset_input in client.get_run(run_id).inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in dataset_input.tags}.get(MLFLOW_DATASET_CONTEXT)
        if dataset_input.dataset.name == TRAIN_DATASET and context == TRAIN_CONTEXT:
            return dataset_input
    raise ReferenceDataError(
        f"train run {run_id} logged no '{TRAIN_DATASET}' dataset; retrain with `mlflow run . -e main`"
    )


def load_reference(dataset_input: DatasetInput) -> tuple[pd.DataFrame, mlflow.data.Dataset]:
    """Download the reference through its lineage and check it is still what training saw (digest)."""
    logged = dataset_input.dataset
    source_uri = json.loads(logged.source).get("uri", logged.source)
    try:
        local = mlflow.data.get_source(dataset_input).load()
        frame = pd.read_parquet(local)
    except (MlflowException, OSError, ValueError) as err:
        raise ReferenceDataError(f"cannot load the training data {source_uri}: {err}") from err
    dataset = mlflow.data.from_pandas(
        frame, source=tracking.dataset_source(source_uri), name=TRAIN_DATASET, targets=TARGET
    )
    if dataset.digest != logged.digest:
        raise ReferenceDataError(
            f"the training data at {source_uri} changed since training (digest {dataset.digest}, "
            f"logged {logged.digest}); retrain (`mlflow run . -e main`) so the lineage points at kept data"
        )
    return frame, dataset


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if max_rows and len(frame) > max_rows:
        return frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    return frame.reset_index(drop=True)


def _psi_terms(reference_share: np.ndarray, new_share: np.ndarray) -> np.ndarray:
    r, n = np.maximum(reference_share, PSI_FLOOR), np.maximum(new_share, PSI_FLOOR)
    return (n - r) * np.log(n / r)


def _psi_bins(labels: list[str], reference_share: np.ndarray, new_share: np.ndarray) -> tuple[float, list[dict]]:
    terms = _psi_terms(reference_share, new_share)
    order = [i for i in np.argsort(-terms) if reference_share[i] > 0 or new_share[i] > 0][:KEPT_BINS]
    bins = [
        {"bin": labels[i], "reference": float(reference_share[i]), "new": float(new_share[i]), "psi": float(terms[i])}
        for i in order
    ]
    return float(terms.sum()), bins


def categorical_psi(reference: np.ndarray, new: np.ndarray, names: list[str], other: str) -> tuple[float, list]:
    """PSI over categories (codes; the code ``len(names)`` is ``other``), with per-category terms."""
    codes = np.union1d(np.unique(reference), np.unique(new)).astype(int)
    labels = [names[c] if c < len(names) else other for c in codes]
    reference_share = np.array([(reference == c).mean() for c in codes])
    new_share = np.array([(new == c).mean() for c in codes])
    return _psi_bins(labels, reference_share, new_share)


def numeric_psi(reference: np.ndarray, new: np.ndarray, bins: int = PSI_BINS) -> tuple[float, list]:
    """PSI over bins cut at the reference's quantiles (ties merged), with per-bin terms."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    if len(edges) == 0:
        edges = np.unique(reference)[:1]
    labels = [f"<= {edges[0]:g}"]
    labels += [f"({low:g}, {high:g}]" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f"> {edges[-1]:g}")
    count = len(edges) + 1
    reference_share = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=count) / len(reference)
    new_share = np.bincount(np.searchsorted(edges, new, side="left"), minlength=count) / len(new)
    return _psi_bins(labels, reference_share, new_share)


def category_labels(spec: FeatureSpec) -> dict[str, tuple[list[str], str]]:
    """Per categorical feature: the name of each code, and the name of the code past the end."""
    labels = {f"{column}_code": (list(spec.vocabulary[column]), UNSEEN) for column in CATEGORY_COLUMNS}
    labels["flight_key_code"] = (list(spec.flight_keys), RARE_OR_UNSEEN)
    return labels


def cross_validated_auc(
    features: np.ndarray, is_new: np.ndarray, names: list[str], folds: int, seed: int
) -> tuple[list[float], dict[str, float]]:
    """Out-of-fold ROC AUC of each fold and each feature's share of the validators' total gain."""
    types = [FEATURE_TYPES[FEATURE_NAMES.index(n)] for n in names]
    params = {**VALIDATOR_PARAMS, "seed": seed}
    aucs, gain = [], dict.fromkeys(names, 0.0)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(features, is_new):
        matrix = xgb.DMatrix(
            features[fit_rows],
            label=is_new[fit_rows],
            feature_names=names,
            feature_types=types,
            enable_categorical=True,
        )
        booster = xgb.train(params, matrix, num_boost_round=VALIDATOR_ROUNDS)
        aucs.append(float(roc_auc_score(is_new[score_rows], booster.inplace_predict(features[score_rows]))))
        for name, value in booster.get_score(importance_type="total_gain").items():
            gain[name] += value
    total = sum(gain.values()) or 1.0
    return aucs, {name: value / total for name, value in gain.items()}


def detect_drift(
    reference: pd.DataFrame,
    new: pd.DataFrame,
    spec: FeatureSpec,
    cv_folds: int = MONITOR["cv_folds"],
    seed: int = MONITOR["seed"],
    max_rows: int = MONITOR["max_rows"],
    exclude_features: tuple[str, ...] = (),
) -> DriftReport:
    """Adversarial validation and PSI of cleaned ``new`` flights against cleaned ``reference`` flights.

    Both sides are sampled down to ``max_rows`` (0 = all); ``exclude_features`` leaves model inputs
    out of both (say, the calendar ones when a batch covers one month of a year-long reference).
    """
    unknown = sorted(set(exclude_features) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"exclude_features {unknown} are not model features; choose from {list(FEATURE_NAMES)}")
    names = [n for n in FEATURE_NAMES if n not in exclude_features]
    if not names:
        raise ValueError("exclude_features leaves no feature to compare")
    if min(len(reference), len(new)) < cv_folds:
        raise BadFlightsError(f"{len(new)} new and {len(reference)} reference flights: need {cv_folds} on each side")
    reference, new = _sample(reference, max_rows, seed), _sample(new, max_rows, seed + 1)
    columns = [FEATURE_NAMES.index(n) for n in names]
    reference_x = build_features(reference, spec)[:, columns]
    new_x = build_features(new, spec)[:, columns]
    features = np.vstack([reference_x, new_x])
    is_new = np.r_[np.zeros(len(reference_x)), np.ones(len(new_x))]
    logger.info(
        "validate: %d reference vs %d new flights, %d features, %d folds",
        len(reference),
        len(new),
        len(names),
        cv_folds,
    )
    aucs, importance = cross_validated_auc(features, is_new, names, cv_folds, seed)
    labels = category_labels(spec)
    drifts = []
    for i, name in enumerate(names):
        if name in labels:
            psi, bins = categorical_psi(reference_x[:, i], new_x[:, i], *labels[name])
        else:
            psi, bins = numeric_psi(reference_x[:, i], new_x[:, i])
        drifts.append(FeatureDrift(name, importance[name], psi, bins))
    drifts.sort(key=lambda f: (-f.importance, -f.psi))
    return DriftReport(
        roc_auc=float(np.mean(aucs)),
        fold_roc_auc=aucs,
        reference_rows=len(reference),
        new_rows=len(new),
        new_unseen_rows=int((~scorable(new, spec.vocabulary)).sum()),
        features=drifts,
    )


def drift_figure(report: DriftReport, title: str, n: int = TOP_FEATURES) -> plt.Figure:
    """The features that separate new from reference flights most: importance and PSI side by side."""
    top = [report.feature(name) for name in report.top(n)][::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.35 * len(top) + 1.8), sharey=True)
    left.barh([f.name for f in top], [f.importance for f in top], color="tab:red")
    left.set(xlabel="share of validator gain", title="separates new from reference")
    right.barh([f.name for f in top], [f.psi for f in top], color="tab:blue")
    for limit, style in ((0.1, ":"), (0.25, "--")):
        right.axvline(limit, color="k", lw=1, ls=style)
    right.set(xlabel="PSI (0.1 moderate, 0.25 major)", title="population stability index")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def report_markdown(report: DriftReport, context: dict[str, str], auc_threshold: float) -> str:
    """A short human-readable drift report."""
    drift = report.roc_auc >= auc_threshold
    verdict = "**DRIFT**" if drift else "no drift"
    spread = float(np.std(report.fold_roc_auc))
    lines = [
        f"# Drift report: {context['model_name']} version {context['model_version']} (Production)",
        "",
        f"- verdict: {verdict}: adversarial ROC AUC **{report.roc_auc:.3f}** ± {spread:.3f} over "
        f"{len(report.fold_roc_auc)} folds (alert at >= {auc_threshold:.2f}; 0.5 = indistinguishable)",
        f"- new flights: `{context['data']}`: {report.new_rows} flights, {report.new_unseen_rows} with a "
        "category the model never saw",
        f"- reference: dataset `{TRAIN_DATASET}` of train run `{context['model_run_id']}` "
        f"(`{context['reference_source']}`, digest {context['reference_digest']}): {report.reference_rows} flights",
        f"- MLflow run: `{context['run_id']}`",
        "",
        "## The features that separate them most",
        "",
        "| feature | share of validator gain | PSI | largest moves (reference share -> new share) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name in report.top(TOP_FEATURES):
        feature = report.feature(name)
        moves = "; ".join(f"{b['bin']}: {b['reference']:.1%} -> {b['new']:.1%}" for b in feature.bins[:3])
        lines.append(f"| {name} | {feature.importance:.3f} | {feature.psi:.3f} | {moves} |")
    lines += [
        "",
        "PSI per feature: categories for `*_code` features (`<unseen>` = not in the model's vocabulary), "
        "bins cut at the reference's deciles otherwise; below 0.1 stable, 0.1-0.25 moderate, above 0.25 major.",
        "",
        "![top drifting features](top_drift.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(report: DriftReport, context: dict[str, str], auc_threshold: float, folder: Path) -> list[Path]:
    """``report.md``, ``top_drift.png`` and ``drift.json`` (everything measured) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown, plot, data = folder / "report.md", folder / "top_drift.png", folder / "drift.json"
    markdown.write_text(report_markdown(report, context, auc_threshold), encoding="utf-8")
    title = f"{context['model_name']} v{context['model_version']}: adversarial ROC AUC {report.roc_auc:.3f}"
    fig = drift_figure(report, title)
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    payload = {"context": context, "auc_threshold": auc_threshold, **asdict(report)}
    data.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    return [markdown, plot, data]


def log_report(report: DriftReport) -> None:
    """Verdict, sizes and every feature's importance and PSI as metrics of the active run."""
    mlflow.log_metrics(
        {
            "adversarial_roc_auc": report.roc_auc,
            "adversarial_roc_auc_std": float(np.std(report.fold_roc_auc)),
            "reference_rows": report.reference_rows,
            "new_rows": report.new_rows,
            "new_unseen_rows": report.new_unseen_rows,
            **{f"importance.{f.name}": f.importance for f in report.features},
            **{f"psi.{f.name}": f.psi for f in report.features},
        }
    )
    for fold, auc in enumerate(report.fold_roc_auc):
        mlflow.log_metric("adversarial_roc_auc_fold", auc, step=fold)


def run(
    data: str = MONITOR["data"],
    model_name: str = MONITOR["model_name"],
    auc_threshold: float = MONITOR["auc_threshold"],
    cv_folds: int = MONITOR["cv_folds"],
    seed: int = MONITOR["seed"],
    max_rows: int = MONITOR["max_rows"],
    exclude_features: str = MONITOR["exclude_features"],
    report_dir: str = MONITOR["report_dir"],
    realized_ece_margin: float = MONITOR["realized_ece_margin"],
    realized_auc_margin: float = MONITOR["realized_auc_margin"],
) -> MonitorResult:
    """Compare the new flights with the Production version's training flights inside one MLflow run."""
    folder = Path(report_dir) if report_dir else config.PROJECT_ROOT / "reports" / "monitor"
    excluded = tuple(name.strip() for name in exclude_features.split(",") if name.strip())
    with tracking.step_run("monitor") as active, tempfile.TemporaryDirectory() as workdir:
        tracking.log_params(
            {
                "data": data,
                "model_name": model_name,
                "auc_threshold": auc_threshold,
                "cv_folds": cv_folds,
                "seed": seed,
                "max_rows": max_rows,
                "exclude_features": exclude_features,
                "report_dir": str(folder),
                "realized_ece_margin": realized_ece_margin,
                "realized_auc_margin": realized_auc_margin,
            }
        )
        logger.info("read: new flights %s", data)
        raw = read_flights(data, Path(workdir))
        new = clean_new_flights(raw, data)
        client = mlflow.MlflowClient()
        version = production_version(client, model_name)
        model_uri = f"models:/{model_name}/{version.version}"
        logger.info("reference: %s (train run %s)", model_uri, version.run_id)
        spec = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().spec.features
        reference_raw, reference_dataset = load_reference(reference_input(client, version.run_id))
        context = {
            "run_id": active.info.run_id,
            "data": data,
            "model_name": model_name,
            "model_version": str(version.version),
            "model_run_id": version.run_id,
            "reference_source": json.loads(reference_dataset.source.to_json()).get("uri", ""),
            "reference_digest": reference_dataset.digest,
        }
        mlflow.set_tags({f"monitor.{k}": v for k, v in context.items() if k not in ("run_id", "data")})
        tracking.log_input(reference_dataset, context="reference")
        monitored = mlflow.data.from_pandas(raw, source=tracking.dataset_source(data), name="monitored")
        tracking.log_input(monitored, context="monitored")
        report = detect_drift(
            clean_flights(reference_raw), new, spec, cv_folds, seed, max_rows, exclude_features=excluded
        )
        drift = report.roc_auc >= auc_threshold
        logger.info("verdict: adversarial ROC AUC %.4f (alert at %.2f): %s", report.roc_auc, auc_threshold, drift)
        log_report(report)
        mlflow.set_tags(
            {
                "monitor.drift": "detected" if drift else "none",
                "monitor.top_features": ",".join(report.top(5)),
                "monitor.top_psi_features": ",".join(report.top(5, by="psi")),
            }
        )
        paths = write_report(report, context, auc_threshold, folder)
        measured = None
        if realized.has_flown(raw):
            measured = measure_realized(client, version, raw, realized_ece_margin, realized_auc_margin, folder)
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


def measure_realized(
    client: mlflow.MlflowClient,
    version: ModelVersion,
    raw: pd.DataFrame,
    ece_margin: float,
    auc_margin: float,
    folder: Path,
) -> realized.Realized:
    """Realized quality of the flown flights in the active run, the report and on the Production version."""
    scored = realized.realized_scores(client, version.name, raw)
    measured = realized.measure(scored)
    reference = realized.gate_reference(client, version)
    measured.reasons = realized.judge(measured, reference.tags, ece_margin, auc_margin)
    o = measured.overall
    logger.info(
        "realized: %d flights, ROC AUC %.4f, ECE %.4f, rate %.4f vs predicted %.4f: %s",
        int(o["flights"]),
        o["roc_auc"],
        o["ece"],
        o["base_rate"],
        o["mean_predicted"],
        "; ".join(measured.reasons) or "within thresholds",
    )
    realized.log_realized(measured)
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags(
        {
            "monitor.realized": "degraded" if measured.degraded else "ok",
            "monitor.realized_versions": ",".join(measured.versions),
            "monitor.realized_reasons": "; ".join(measured.reasons)[:5000] or "none",
        }
    )
    title = f"{version.name}: realized quality by week ({measured.period})"
    fig = realized.realized_figure(measured, title)
    fig.savefig(folder / "realized.png", dpi=100)
    plt.close(fig)
    with open(folder / "report.md", "a", encoding="utf-8") as report:
        report.write("\n".join(realized.markdown(measured)))
    realized.record_on_version(client, version, measured, run_id)
    return measured


def main() -> None:
    """CLI: ``python -m steps.monitor --data <uri>``; the exit code is the verdict (see module docstring)."""
    args = config.argument_parser("monitor", __doc__).parse_args()
    tracking.setup_logging()
    try:
        result = run(**vars(args))
    except BadFlightsError as err:
        logger.error("bad input: %s", err)
        sys.exit(EXIT_BAD_INPUT)
    verdict = "DRIFT" if result.drift else "no drift"
    sys.stdout.write(
        f"{verdict}: adversarial ROC AUC {result.roc_auc:.3f} (alert at {result.auc_threshold:.2f}) for "
        f"{result.model_name} version {result.model_version}; top features {', '.join(result.top_features)}; "
        f"report {result.report_path}; run {result.run_id}\n"
    )
    if result.realized is not None:
        o = result.realized
        sys.stdout.write(
            f"{'REALIZED QUALITY DEGRADED' if result.degraded else 'realized quality ok'}: "
            f"{int(o['flights'])} flown flights, ROC AUC {o['roc_auc']:.3f}, ECE {o['ece']:.3f}, "
            f"delay rate {o['base_rate']:.3f} vs mean predicted {o['mean_predicted']:.3f}"
            + (f"; {'; '.join(result.degraded_reasons)}" if result.degraded else "")
            + "\n"
        )
    sys.exit(EXIT_DEGRADED if result.degraded else EXIT_DRIFT if result.drift else 0)


if __name__ == "__main__":
    main()
