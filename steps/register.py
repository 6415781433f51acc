"""register: a train run's model -> a new version of ``flight-delay`` on the alias ``staging``.

Reads: the model URI (``models:/m-…`` or ``runs:/…/model``; default: the newest train run's)
and the holdout flights. Writes: a model version with the gate's comparison as tags
(``gate.decision``: the candidate against the current Production on the latest period) and
description, on the alias ``staging`` and the stage ``Staging`` (kept in step; the previous
Staging version archived). It never moves ``production``: ``steps.promote`` does, after the
acceptance checks. The candidate and the current Production are scored on the same holdout
flights before anything is written, and the version is created with every gate tag in one call;
a failure after the version exists deletes it again where allowed (under auth deleting needs
MANAGE; the version then keeps its tags and a rerun reuses it), so nothing is half-registered.
"""

from __future__ import annotations

import logging

from skyprophet import config
from skyprophet import params as step_params
from skyprophet.lifecycle.registration import RegisterResult
from skyprophet.lifecycle.registration import register as run
from skyprophet.mlops import tracking

__all__ = ["RegisterResult", "main", "run"]
logger = logging.getLogger("skyprophet.register")


def main() -> None:
    """CLI: ``python -m steps.register --model-uri ... --promote auto|force|never``."""
    args = config.argument_parser("register", __doc__).parse_args()
    tracking.setup_logging()
    result = run(step_params.parse("register", vars(args)))
    logger.info("done: %s", result)


if __name__ == "__main__":
    main()
