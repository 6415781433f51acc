"""A model scored in a fresh interpreter: the gate and the acceptance quality check run a candidate's own code there.

Isolation is the point: ``-P`` keeps the checkout off ``sys.path`` (the model runs the ``pyfunc``
code it was logged with), and ``promote`` passes ``processes.isolated_env`` so the candidate's code
sees no credential.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

# Scores one model in a fresh interpreter (``-P``: the checkout is not on sys.path), so the model
# runs the ``pyfunc`` code it was logged with, not whatever this checkout or another model loaded.
# Writes the delay probability per holdout flight, NaN where the model says it cannot score the
# flight (``unknown_categories=score`` names the fields it never saw in ``unknown_fields``).
_SCORE_SCRIPT = """
import sys
import numpy as np, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
flights = pd.read_parquet(sys.argv[2])
schema = model.metadata.get_input_schema()  # None since the flights' contract is the model's own
inputs = [c for c in schema.input_names() if c in flights.columns] if schema else list(flights.columns)
answer = model.predict(flights[inputs], params={"unknown_categories": "score"})
scores = np.array(answer["delay_probability"], dtype=float)
scores[np.asarray(answer["unknown_fields"]) != ""] = np.nan
pd.DataFrame({"delay_probability": scores}).to_parquet(sys.argv[3])
"""


def score_isolated(model_uri: str, holdout_path: Path, env: dict[str, str] | None = None) -> np.ndarray:
    """Delay probabilities of ``model_uri`` on the holdout, NaN for flights it cannot score.

    ``env``: the whole environment of the scoring process (``promote`` scores a local copy with
    ``processes.isolated_env``); by default ours, with the tracking URI, minus PYTHONPATH.
    """
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "scores.parquet"
        if env is None:
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
            env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        done = subprocess.run(
            [sys.executable, "-P", "-c", _SCORE_SCRIPT, model_uri, str(holdout_path), str(output)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scoring {model_uri} on the holdout failed:\n{done.stderr[-3000:]}")
        return pd.read_parquet(output)["delay_probability"].to_numpy()
