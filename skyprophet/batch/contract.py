"""What batch scoring reads and writes: columns, the model's batch parameters, its two refusals.

The flight columns, the score and reject columns, the model's parameters for a batch, and the two
refusals (an unusable input or output, too many rejects). Imported by the Spark workers too
(through ``tally``): pyarrow and ``pyfunc.schema`` only.
"""

from __future__ import annotations

import pyarrow as pa

from pyfunc.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, UNKNOWN_FIELDS

# The flight columns kept from the input (and handed to the model, in its signature's order).
FLIGHT_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
AIRLINE = "Emp-I"
SCORE_COLUMNS = ("delay_probability", "delay", UNKNOWN_FIELDS)
SCORE_TYPES = {"delay_probability": pa.float64(), "delay": pa.int64(), UNKNOWN_FIELDS: pa.string()}
SPARK_RESULT_TYPE = "delay_probability double, delay long, unknown_fields string"
REJECT_REASON, REJECT_DETAIL = "reject_reason", "reject_detail"
# Calendar day of each valid flight (for the summary); never written to the output.
DAY = "_day"
MODEL_PARAMS = {"unknown_categories": "score"}
# pyfunc.model's XGBoost threads for a batch (not imported: importing the model file registers it).
BATCH_NTHREAD_ENV = "SKYPROPHET_BATCH_NTHREAD"


class ScoreInputError(ValueError):
    """The schedule or the output location cannot be used as given; the message names the file."""


class TooManyRejectsError(ValueError):
    """More rows than ``max_reject_fraction`` are not valid flights."""
