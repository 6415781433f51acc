"""promote: the Staging version (or one a person picked) through the acceptance checks to Production.

Downloads the version, records the digest of that copy and serves the copy with a real ``mlflow
models serve`` on 127.0.0.1 in an allow-listed environment (no tracking, cloud or token
credentials: the version's own code runs there), or checks a server already running at
``--url``. Runs ``skyprophet.ops.acceptance``'s smoke, contract and load checks against it and the quality
check (candidate and current Production scored here, isolated, on the gate's holdout period), and
writes each result to the version (tag ``acceptance.<check>`` = ``passed`` / ``failed: <reason>``,
``acceptance.artifact_digest``, then ``acceptance.verdict``, a block in its description). Only when
every check passed does it move the alias ``production`` (what serves), then the stage
``Production`` (a follower, the previous version archived), then record the history (tags
``promotion.*``, the model's ``promotion.history``). A failed check changes nothing in Production,
says which check failed and why, and exits 1. Everything runs under the promotion lock (the
registered model ``<name>.promotion-lock``): a second promote or rollback exits 3 naming the first.

``promote``: ``auto`` (the gate must have passed the version), ``force`` (the gate's quality
comparison may have lost; smoke, contract and load must still pass: a forced version is still a
served one), ``never`` (checks and records, moves nothing).

``--rollback`` moves ``production`` back to the version it replaced (``make rollback``).
"""

from __future__ import annotations

import logging
import sys

from skyprophet import config
from skyprophet import params as step_params
from skyprophet.config import PROMOTE_CHOICES
from skyprophet.lifecycle.acceptance_record import AcceptanceFailed
from skyprophet.lifecycle.promotion import NothingToPromote, PromoteResult, promote, rollback
from skyprophet.mlops import tracking
from skyprophet.mlops.promotion_lock import PromotionInProgress
from skyprophet.mlops.registry import PRODUCTION_ALIAS

__all__ = [
    "AcceptanceFailed",
    "NothingToPromote",
    "PromoteResult",
    "PromotionInProgress",
    "main",
    "promote",
    "rollback",
]
logger = logging.getLogger("skyprophet.promote")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.promote [--version N] [--promote auto|force|never]`` or ``--rollback``."""
    parser = config.argument_parser("promote", __doc__)
    parser.add_argument("--url", default="", help="check a server already running there instead of starting one")
    parser.add_argument("--id-token", default="", help="Bearer token for --url (a private Cloud Run service)")
    parser.add_argument("--rollback", action="store_true", help="move production back to the previous version")
    args = parser.parse_args(argv)
    tracking.setup_logging()
    if args.promote not in PROMOTE_CHOICES:
        parser.error(f"--promote: choose one of {', '.join(PROMOTE_CHOICES)}")
    options = vars(args)
    url, id_token, roll_back = options.pop("url"), options.pop("id_token"), options.pop("rollback")
    params = step_params.parse("promote", options)
    out, err_out = sys.stdout.write, sys.stderr.write
    try:
        if roll_back:
            result = rollback(params.model_name)
            out(f"rollback: {PRODUCTION_ALIAS} is version {result.version} again (was {result.previous_version})\n")
            return 0
        result = promote(params, url, id_token)
    except NothingToPromote as err:
        err_out(f"promote: {err}\n")
        return 2
    except PromotionInProgress as err:
        err_out(f"promote: {err}\n")
        return 3
    except AcceptanceFailed as err:
        for check in err.results:
            err_out(f"acceptance {check.line()}\n")
        err_out(f"promote: {err}\n")
        return 1
    for check in result.results:
        out(f"acceptance {check.line()}\n")
    if result.promoted:
        previous = result.previous_version or "none"
        out(f"promote: version {result.version} is Production (previous: {previous}); undo with `make rollback`\n")
    else:
        out(f"promote: version {result.version} passed every check; promote=never, Production untouched\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
