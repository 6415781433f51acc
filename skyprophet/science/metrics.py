"""Model quality metrics and plots shared by train, register and evaluate."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

ECE_BINS = 10


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width bins, weighted by count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(total / len(y))


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Probability threshold that maximises F1 of the delayed class."""
    precision, recall, thresholds = skm.precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray) -> dict[str, float]:
    """ROC/PR AUC, per-class precision/recall/F1 at the threshold, Brier, log loss, ECE.

    ``threshold`` may be one per flight (months pooled, each with its own model's); the mean is reported.
    """
    predicted = (p >= threshold).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, predicted, labels=[0, 1], zero_division=0)
    result = {
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "brier": skm.brier_score_loss(y, p),
        "log_loss": skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
        "ece": expected_calibration_error(y, p),
        "threshold": float(np.mean(threshold)),
    }
    for label, name in ((0, "on_time"), (1, "delayed")):
        result[f"precision_{name}"] = precision[label]
        result[f"recall_{name}"] = recall[label]
        result[f"f1_{name}"] = f1[label]
    return {k: float(v) for k, v in result.items()}


def log_figure(figure: plt.Figure, path: str) -> None:
    """Log a figure to the active MLflow run and free it (pyplot keeps every open figure)."""
    import mlflow

    mlflow.log_figure(figure, path)
    plt.close(figure)


def confusion_figure(y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray) -> plt.Figure:
    """Confusion matrix at the decision threshold (one per flight when months are pooled)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    skm.ConfusionMatrixDisplay.from_predictions(
        y, (p >= threshold).astype(int), display_labels=["on time", "delayed"], ax=ax, colorbar=False
    )
    ax.set_title(f"threshold {float(np.mean(threshold)):.3f}")
    fig.tight_layout()
    return fig


def curves_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> plt.Figure:
    """ROC and PR curves of one or more models on the same flights."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, p in scores.items():
        skm.RocCurveDisplay.from_predictions(y, p, name=name, ax=roc)
        skm.PrecisionRecallDisplay.from_predictions(y, p, name=name, ax=pr)
    roc.plot([0, 1], [0, 1], "k:", lw=1)
    fig.tight_layout()
    return fig


def reliability_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> plt.Figure:
    """Observed delay rate against predicted probability (10 bins)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        edges = np.linspace(0, 1, ECE_BINS + 1)
        index = np.clip(np.digitize(p, edges[1:-1]), 0, ECE_BINS - 1)
        used = [b for b in range(ECE_BINS) if (index == b).any()]
        ax.plot([p[index == b].mean() for b in used], [y[index == b].mean() for b in used], "o-", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="predicted probability", ylabel="observed delay rate", title="reliability")
    ax.legend()
    fig.tight_layout()
    return fig


def importance_figure(importance: dict[str, float]) -> plt.Figure:
    """Horizontal bars of feature importance (total gain)."""
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="total gain", title="feature importance")
    fig.tight_layout()
    return fig


def contributions_figure(mean_abs: dict[str, float], unit: str) -> plt.Figure:
    """Horizontal bars of mean |contribution| per feature (the booster's exact per-flight contributions)."""
    items = sorted(mean_abs.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel=f"mean |contribution| on the holdout ({unit})", title="what drives the model")
    fig.tight_layout()
    return fig
