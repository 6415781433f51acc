"""recalibrate: the delay-rate correction, a new version with Production's booster and a shifted calibration.

Reads: flown flights (``--data``: path, ``file://`` or ``gs://``, with ``Fecha-O``) and the
Production version of ``model_name``. Writes: when the serving mean is more than ``tolerance`` off
the realized delay rate of the last ``days`` days, a ``recalibrate`` run with the corrected model
(same booster, calibration's intercept shifted), registered on ``staging`` and promoted through the
acceptance checks like any other version. The method: ``skyprophet.lifecycle.recalibration``.

Exit codes of ``python -m steps.recalibrate``: 0 corrected (or nothing to correct), 4 the flights
are unusable, 1 any other failure (a failed acceptance check included: Production untouched).
"""

from __future__ import annotations

import logging
import sys

from skyprophet import config
from skyprophet import params as step_params
from skyprophet.lifecycle.acceptance_record import AcceptanceFailed
from skyprophet.lifecycle.recalibration import RecalibrateResult
from skyprophet.lifecycle.recalibration import recalibrate as run
from skyprophet.mlops import tracking
from skyprophet.monitoring import flights

__all__ = ["RecalibrateResult", "main", "run"]
logger = logging.getLogger("skyprophet.recalibrate")


def main() -> None:
    """CLI: ``python -m steps.recalibrate --data <flown flights>``; exit codes in the module docstring."""
    args = config.argument_parser("recalibrate", __doc__).parse_args()
    tracking.setup_logging()
    try:
        result = run(step_params.parse("recalibrate", vars(args)))
    except flights.BadFlightsError as err:
        logger.error("bad input: %s", err)
        sys.exit(flights.EXIT_BAD_INPUT)
    except AcceptanceFailed as err:
        logger.error("recalibrate: %s", err)
        sys.exit(1)
    if result.version:
        sys.stdout.write(
            f"corrected: {result.model_name} version {result.version} = version {result.corrects_version} with "
            f"intercept shift {result.shift:+.4f} ({result.window_flights} flown flights, realized rate "
            f"{result.realized_rate:.4f}, mean predicted {result.mean_before:.4f} -> {result.mean_after:.4f}); "
            f"promoted: {result.promoted}\n"
        )
    else:
        sys.stdout.write(f"not corrected: {result.reason}\n")


if __name__ == "__main__":
    main()
