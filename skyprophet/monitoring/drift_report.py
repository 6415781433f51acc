"""Monitor's drift report: ``report.md``, ``top_drift.png`` and ``drift.json``, and the run's metrics.

The figure is a plain ``matplotlib.figure.Figure`` (no pyplot): nothing global to set or free.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
from matplotlib.figure import Figure

from skyprophet.mlops.tags import TRAIN_DATASET
from skyprophet.monitoring.drift import DriftReport

TOP_FEATURES = 10


def drift_figure(report: DriftReport, title: str, n: int = TOP_FEATURES) -> Figure:
    """The features that separate new from reference flights most: importance and PSI side by side."""
    top = [report.feature(name) for name in report.top(n)][::-1]
    fig = Figure(figsize=(11, 0.35 * len(top) + 1.8))
    left, right = fig.subplots(1, 2, sharey=True)
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
