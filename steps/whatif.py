"""whatif: a few flights with a changed departure time, day or airline, beside the originals.

Reads: ``data``, a CSV or Parquet schedule (a path; ``score``'s output works too), and the flights
to try in ``flights``: ``<flight number>@<YYYY-MM-DD>`` (or ``@<YYYY-MM-DD HH:MM>``), comma
separated, at most ``MAX_WHATIF_FLIGHTS`` (``skyprophet.batch.whatif``, where the selection, the
change and the comparison live). The change: ``departure`` (a time of day, HH:MM),
``date`` (a day, YYYY-MM-DD; the time kept), ``airline`` (an ``Emp-I`` code; ``operator``, the
``OPERA`` name, defaults to the one that flies that code most in ``data``); at least one of them.

Both versions go through the model's public ``predict`` with ``explain`` (and
``unknown_categories="score"``: an airline the model never saw is scored as unseen and said so).
The answer per flight: the two probabilities and the factors that moved, each factor's
contribution before and after in the model's margin unit (its words from ``explain`` where that
factor is among the flight's top three). One MLflow run (``skyprophet.step=whatif``) keeps the
parameters and the table (``whatif.csv``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from skyprophet import config
from skyprophet import params as step_params
from skyprophet.batch.contract import ScoreInputError
from skyprophet.batch.model import resolve_model
from skyprophet.batch.whatif import (
    WhatIfInputError,
    as_text,
    changed,
    compare,
    operator_of,
    parse_flights,
    read_flights,
    select,
)
from skyprophet.mlops import tracking
from skyprophet.params import WhatifParams

logger = logging.getLogger("skyprophet.whatif")


def run(params: WhatifParams = WhatifParams()) -> pd.DataFrame:
    """Score the flights as they are and as changed, inside one MLflow run; returns the side-by-side table."""
    departure, date, airline, operator = params.departure, params.date, params.airline, params.operator
    if not (departure or date or airline):
        raise WhatIfInputError("departure, date, airline: no change given; pass at least one of them")
    wanted = parse_flights(params.flights)
    schedule = read_flights(params.data)
    before = select(schedule, wanted)
    if airline and not operator:
        operator = operator_of(schedule, airline)
    after = changed(before, departure, date, airline, operator)
    with tracking.step_run("whatif") as active:
        tracking.log_step_params(params, operator=operator)
        try:
            uri, name, version = resolve_model(params.model_uri)
        except ScoreInputError as err:
            raise WhatIfInputError(f"model_uri: {err}") from err
        mlflow.set_tags(
            {"skyprophet.model_uri": uri, "skyprophet.model_name": name, "skyprophet.model_version": version}
        )
        table = compare(mlflow.pyfunc.load_model(uri), before, after)
        mlflow.log_text(table.to_csv(index=False), "whatif.csv")
        if params.output:
            table.to_csv(params.output, index=False)
        logger.info("what-if of %d flight(s) with %s in run %s", len(table), uri, active.info.run_id)
    return table


def main(argv: list[str] | None = None, exit: Callable[[int], None] = sys.exit) -> None:
    """CLI: ``python -m steps.whatif --data schedule.csv --flights 92@2017-12-29 --departure 19:00``."""
    parser = config.argument_parser("whatif", __doc__)
    args = parser.parse_args(argv)
    tracking.setup_logging()
    try:
        table = run(step_params.parse("whatif", vars(args)))
    except WhatIfInputError as err:
        logger.error("whatif failed: %s", err)
        exit(2)
        return
    sys.stdout.write(as_text(table) + "\n")
    if args.output:
        sys.stdout.write(f"table: {Path(args.output).resolve()}\n")


if __name__ == "__main__":
    main()
