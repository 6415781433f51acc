"""main: etl -> train -> register -> promote, each as its own MLflow run, handing URIs from one to the next.

Each step is launched with ``mlflow.projects.run`` on this project in a run of its own, nested in
the main run; the next receives the previous run's artifact URIs, never a local path
(``skyprophet.lifecycle.pipeline``).

``promote``: ``never`` stops at Staging (promote is not run); ``auto`` and ``force`` run promote on
the new version (``force`` lets a version the gate did not pass through, never one that fails the
smoke, contract or load check). A version whose only failed check is ``quality`` under ``auto``
(the gate kept the current Production) is the ordinary outcome of a weaker candidate: main says so
and succeeds; any other failed check fails main (a broken model is a broken pipeline).
"""

from __future__ import annotations

import argparse
import logging

from skyprophet import config
from skyprophet.lifecycle.pipeline import STEPS, StepFailed
from skyprophet.lifecycle.pipeline import run_pipeline as run
from skyprophet.mlops import tracking

__all__ = ["main", "run"]
logger = logging.getLogger("skyprophet.main")


# What main hands from one step to the next itself (promote's model name and mode are register's).
HANDED_OVER = {
    "train": ("processed_uri",),
    "register": ("model_uri", "holdout_uri"),
    "promote": ("version", "model_name", "promote"),
}


def main() -> None:
    """CLI: every parameter of etl, train, register and promote, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {}
    for step in STEPS:
        for name in config.add_step_options(parser, step, skip=HANDED_OVER.get(step, ())):
            groups[name] = step
    args = vars(parser.parse_args())
    params = {step: {k: v for k, v in args.items() if groups[k] == step} for step in STEPS}
    params["promote"]["model_name"] = params["register"]["model_name"]
    tracking.setup_logging()
    try:
        ids = run(params["etl"], params["train"], params["register"], params["promote"])
    except StepFailed as err:
        logger.error("main: %s", err)
        raise SystemExit(1) from None
    logger.info("done: %s", ids)


if __name__ == "__main__":
    main()
