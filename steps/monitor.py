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

An adversarial validator (XGBoost, stratified K-fold; ``skyprophet.monitoring.adversarial``) learns
to tell reference rows from new rows on the model's own input features: an out-of-fold ROC AUC of
0.5 means indistinguishable. Categories the model never saw keep an "unseen" code instead of
failing: they are drift too. The library: ``skyprophet.monitoring.flights`` (reading the new
flights), ``reference`` (the training data), ``drift`` (validator and PSI), ``drift_report``.

Exit codes of ``python -m steps.monitor``: 0 no drift; 3 drift (AUC >= ``auc_threshold``);
4 the new flights are unusable (missing, empty, wrong schema, bad values); 5 realized quality
degraded (realized ECE > gate ECE + ``realized_ece_margin`` or realized ROC AUC < gate ROC AUC -
``realized_auc_margin``; wins over 3: retrain or correct); 1 any other failure.
"""

from __future__ import annotations

import logging
import sys

from skyprophet import config
from skyprophet import params as step_params
from skyprophet.mlops import tracking
from skyprophet.monitoring import flights
from skyprophet.monitoring.watch import MonitorResult
from skyprophet.monitoring.watch import watch as run

__all__ = ["EXIT_DEGRADED", "EXIT_DRIFT", "MonitorResult", "main", "run"]
logger = logging.getLogger("skyprophet.monitor")
EXIT_DRIFT = 3
EXIT_DEGRADED = 5


def main() -> None:
    """CLI: ``python -m steps.monitor --data <uri>``; the exit code is the verdict (see module docstring)."""
    args = config.argument_parser("monitor", __doc__).parse_args()
    tracking.setup_logging()
    try:
        result = run(step_params.parse("monitor", vars(args)))
    except flights.BadFlightsError as err:
        logger.error("bad input: %s", err)
        sys.exit(flights.EXIT_BAD_INPUT)
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
