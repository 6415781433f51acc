r"""acceptance: the checks a model version passes before it may serve traffic, against any URL.

One program for both places: ``steps.promote`` runs it against the ``mlflow models serve`` it
starts on 127.0.0.1, Cloud Build against the Cloud Run revision tagged ``staging``::

    python -m skyprophet.ops.acceptance --url https://staging---skyprophet-….run.app \\
        --id-token "$(gcloud auth print-identity-token)" --model-uri models:/flight-delay/7

The checks (each a ``CheckResult``; the CLI prints one line per check, exit 1 when any failed):

1. ``smoke``: real flights (the version's input example, plus any ``--flights``) score, one
   probability in [0, 1] per flight;
2. ``contract``: a suite of bad requests each get a 4xx whose message names the field, and a good
   request still scores after them;
3. ``load``: a short headless locust run (``--users``, ``--duration``) with no failed request and a
   95th percentile under ``--p95-ms``;
4. ``quality`` (registry only, not against a URL): ``promote`` scores the candidate and the
   current Production itself on the gate's holdout period (isolated, no credentials); the
   candidate's ROC AUC is at least Production's, or the promotion is forced. The pipeline's
   ``gate.*`` tags are only a hint;
5. ``health`` (only with ``--health-url``): the sidecar's ``/health`` answers 200.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from skyprophet import config
from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import BIN, process_env

logger = logging.getLogger("skyprophet.acceptance")

URL_CHECKS = ("smoke", "contract", "load")
CHECKS = (*URL_CHECKS, "quality")
LOCUSTFILE = Path(__file__).with_name("acceptance_locust.py")
REQUEST_TIMEOUT = 60
DEFAULT_LOAD = config.LOAD_CHECK


@dataclass
class CheckResult:
    """One acceptance check's outcome: ``reason`` says why it failed (or what it measured)."""

    name: str
    passed: bool
    reason: str = ""

    @property
    def tag(self) -> str:
        """The version tag's value: ``passed`` or ``failed: <reason>``."""
        return "passed" if self.passed else f"failed: {self.reason}"

    def line(self) -> str:
        """What a person reads: ``smoke: passed (20 flights)`` / ``load: failed: …``."""
        if self.passed:
            return f"{self.name}: passed" + (f" ({self.reason})" if self.reason else "")
        return f"{self.name}: failed: {self.reason}"


class Endpoint:
    """The model server's base URL and, for a private Cloud Run service, the caller's ID token."""

    def __init__(self, url: str, id_token: str = "") -> None:
        self.url = url.rstrip("/")
        self.id_token = id_token

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        """JSON content type, plus ``Authorization: Bearer`` when there is a token."""
        headers = {"Content-Type": content_type}
        if self.id_token:
            headers["Authorization"] = f"Bearer {self.id_token}"
        return headers

    def invoke(self, body: str) -> requests.Response:
        """POST ``body`` to ``/invocations``."""
        return requests.post(
            f"{self.url}/invocations", data=body.encode(), headers=self.headers(), timeout=REQUEST_TIMEOUT
        )


def records_body(records: list[dict]) -> str:
    """A ``dataframe_records`` request body."""
    return json.dumps({"dataframe_records": records})


class ScoringError(RuntimeError):
    """The served model did not score flights it was sent (the message has its HTTP status and answer)."""


SCORE_CHUNK_ROWS = 5000  # flights per request when a whole holdout is scored through a served model


def score_flights(endpoint: Endpoint, flights: pd.DataFrame) -> np.ndarray:
    """Delay probabilities of ``flights`` from the served model, NaN where it names an unknown field.

    What ``isolated_scoring`` computes in a process of its own (``unknown_categories=score``), here
    from a server already running the model: promote's quality check scores its served copy.
    """
    scores = []
    for start in range(0, len(flights), SCORE_CHUNK_ROWS):
        records = json_records(flights.iloc[start : start + SCORE_CHUNK_ROWS])
        body = json.dumps({"dataframe_records": records, "params": {"unknown_categories": "score"}})
        answer = endpoint.invoke(body)
        if answer.status_code != 200:
            raise ScoringError(f"HTTP {answer.status_code} for {len(records)} flights: {error_message(answer)[:300]}")
        predictions = answer.json().get("predictions", [])
        if len(predictions) != len(records):
            raise ScoringError(f"{len(predictions)} predictions for {len(records)} flights")
        chunk = np.array([float(p.get("delay_probability", np.nan)) for p in predictions])
        chunk[[bool(p.get("unknown_fields")) for p in predictions]] = np.nan
        scores.append(chunk)
    return np.concatenate(scores) if scores else np.array([])


def error_message(answer: requests.Response) -> str:
    """MLflow's ``message`` of an error answer, else its text."""
    try:
        return str(answer.json().get("message", answer.text))
    except ValueError:
        return answer.text


def smoke(endpoint: Endpoint, flights: list[dict]) -> CheckResult:
    """Real flights score: HTTP 200, one prediction per flight, probabilities in [0, 1]."""
    try:
        answer = endpoint.invoke(records_body(flights))
    except requests.RequestException as err:
        return CheckResult("smoke", False, f"no answer from {endpoint.url}/invocations ({err.__class__.__name__})")
    if answer.status_code != 200:
        return CheckResult(
            "smoke", False, f"HTTP {answer.status_code} for {len(flights)} valid flights: {error_message(answer)[:300]}"
        )
    predictions = answer.json().get("predictions", [])
    if len(predictions) != len(flights):
        return CheckResult("smoke", False, f"{len(predictions)} predictions for {len(flights)} flights")
    bad = [p for p in predictions if not 0.0 <= float(p.get("delay_probability", -1)) <= 1.0]
    if bad:
        return CheckResult("smoke", False, f"{len(bad)} probabilities outside [0, 1], e.g. {bad[0]}")
    return CheckResult("smoke", True, f"{len(flights)} flights")


def contract_suite(good: dict) -> list[tuple[str, str, str]]:
    """(case, body, word the 4xx message must contain: the field) built around one valid flight."""

    def changed(**changes: object) -> str:
        return records_body([{**good, **changes}])

    def without(column: str) -> str:
        return records_body([{k: v for k, v in good.items() if k != column}])

    suite = [
        ("body not JSON", "this is not json", "JSON"),
        ("records not a list", json.dumps({"dataframe_records": good}), "records"),
        ("airline as a number", changed(OPERA=5), "OPERA"),
        ("flight type as a boolean", changed(TIPOVUELO=True), "TIPOVUELO"),
        ("fractional flight number", changed(**{"Vlo-I": 226.5}), "Vlo-I"),
        ("unparsable Fecha-I", changed(**{"Fecha-I": "14/07/2017"}), "Fecha-I"),
        ("null Fecha-I", changed(**{"Fecha-I": None}), "Fecha-I"),
        ("unknown destination", changed(**{"Des-I": "QQQQ-NEVER-SEEN"}), "Des-I"),
        ("unknown airline", changed(OPERA="Zeta Air Never Seen"), "OPERA"),
        ("one bad flight in a batch", records_body([good, {**good, "SIGLADES": ""}]), "SIGLADES"),
    ]
    from pyfunc.schema import REQUIRED_COLUMNS

    suite += [(f"{column} missing", without(column), column) for column in REQUIRED_COLUMNS if column in good]
    return suite


def contract(endpoint: Endpoint, good: dict) -> CheckResult:
    """Each bad request gets a 4xx naming the field; then a good request still scores."""
    problems = []
    suite = contract_suite(good)
    for case, body, field in suite:
        try:
            answer = endpoint.invoke(body)
        except requests.RequestException as err:
            problems.append(f"{case}: no answer ({err.__class__.__name__})")
            continue
        message = error_message(answer)
        if not 400 <= answer.status_code < 500:
            problems.append(f"{case}: HTTP {answer.status_code}, expected a 4xx")
        elif field not in message:
            problems.append(f"{case}: the 4xx does not name {field!r} ({message[:120]})")
    try:
        after = endpoint.invoke(records_body([good]))
        if after.status_code != 200:
            problems.append(f"a good flight after the suite: HTTP {after.status_code} {error_message(after)[:120]}")
    except requests.RequestException as err:
        problems.append(f"a good flight after the suite: no answer ({err.__class__.__name__})")
    if problems:
        wrong = f"{len(problems)} of {len(suite) + 1} requests wrong: "
        return CheckResult("contract", False, wrong + "; ".join(problems))
    return CheckResult("contract", True, f"{len(suite)} bad requests refused, each naming its field")


def load(
    endpoint: Endpoint,
    flights: list[dict],
    users: int = DEFAULT_LOAD["users"],
    spawn_rate: float = DEFAULT_LOAD["spawn_rate"],
    duration: str = DEFAULT_LOAD["duration"],
    p95_ms: float = DEFAULT_LOAD["p95_ms"],
) -> CheckResult:
    """A short headless locust run: no failed request and the 95th percentile under ``p95_ms``."""
    with tempfile.TemporaryDirectory(prefix="acceptance-load-") as tmp:
        flights_file = Path(tmp) / "flights.json"
        flights_file.write_text(json.dumps(flights), encoding="utf-8")
        prefix = Path(tmp) / "stats"
        command = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(spawn_rate)]
        command += ["-t", duration, "-H", endpoint.url, "--csv", str(prefix), "--only-summary", "--stop-timeout", "5"]
        env = {"ACCEPTANCE_FLIGHTS": str(flights_file), "ACCEPTANCE_ID_TOKEN": endpoint.id_token}
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=process_env(env), capture_output=True, text=True)
        stats = Path(f"{prefix}_stats.csv")
        if not stats.is_file():
            return CheckResult("load", False, f"locust exited {done.returncode} without stats: {done.stderr[-300:]}")
        with stats.open() as file:
            total = next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")
        requests_made, failures = int(total["Request Count"]), int(total["Failure Count"])
        if requests_made == 0:  # locust then writes "N/A" for the percentiles
            return CheckResult("load", False, f"no request completed in {duration}")
        p95 = float(total["95%"] or 0)
        summary = f"{requests_made} requests by {users} users in {duration}, p95 {p95:.0f} ms"
        if failures:
            errors = Path(f"{prefix}_failures.csv")
            first = ""
            if errors.is_file():
                rows = list(csv.DictReader(errors.open()))
                first = f"; e.g. {rows[0]['Error'][:200]}" if rows else ""
            return CheckResult("load", False, f"{failures} of {requests_made} requests failed{first}")
        if p95 > p95_ms:
            bound = f"95th percentile {p95:.0f} ms above the bound {p95_ms:.0f} ms"
            return CheckResult("load", False, f"{bound} ({summary})")
        return CheckResult("load", True, summary)


def quality(
    figures: dict[str, dict[str, float]], period: str, production: str, mode: str, gate_hint: str = ""
) -> CheckResult:
    """The candidate against Production on the holdout period, as ``promote`` scored them itself.

    ``figures``: ``register.gate_metrics`` of ``candidate`` (and ``production`` when there is one,
    labelled ``production``, e.g. ``v3``). The pipeline's ``gate.decision`` tag is only a hint
    shown in the reason (``gate_hint``); it decides nothing. ``force`` passes a candidate that lost.
    """
    candidate = figures["candidate"]["roc_auc"]
    hint = f"; the gate recorded: {gate_hint}" if gate_hint else ""
    if "production" not in figures:
        return CheckResult("quality", True, f"ROC AUC {candidate:.4f} on {period}, no Production to beat{hint}")
    current = figures["production"]["roc_auc"]
    compared = f"ROC AUC {candidate:.4f} vs Production {production} {current:.4f} on {period}{hint}"
    if candidate >= current:
        return CheckResult("quality", True, compared)
    if mode == "force":
        return CheckResult("quality", True, f"lost ({compared}), promotion forced (promote=force)")
    return CheckResult("quality", False, f"below Production ({compared})")


def health(url: str, id_token: str = "") -> CheckResult:
    """The sidecar's ``/health``: 200 means the model server answers and the canary scores."""
    try:
        answer = requests.get(url, headers=Endpoint(url, id_token).headers(), timeout=REQUEST_TIMEOUT)
    except requests.RequestException as err:
        return CheckResult("health", False, f"no answer from {url} ({err.__class__.__name__})")
    if answer.status_code != 200:
        return CheckResult("health", False, f"HTTP {answer.status_code} from {url}: {answer.text[:200]}")
    return CheckResult("health", True)


def run_url_checks(
    endpoint: Endpoint, flights: list[dict], checks: tuple[str, ...] = URL_CHECKS, **load_options: object
) -> list[CheckResult]:
    """The checks that need only the URL, in order; every one runs whatever the others gave."""
    results = []
    for name in checks:
        logger.info("acceptance: %s against %s", name, endpoint.url)
        if name == "smoke":
            results.append(smoke(endpoint, flights))
        elif name == "contract":
            results.append(contract(endpoint, flights[0]))
        elif name == "load":
            results.append(load(endpoint, flights, **load_options))
        else:
            raise ValueError(f"unknown URL check {name!r}; choose from {URL_CHECKS}")
    return results


def json_records(frame: pd.DataFrame) -> list[dict]:
    """Flights as a JSON client sends them (timestamps as text, missing values as null)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def model_flights(model_uri: str, extra: list[dict] | None = None) -> list[dict]:
    """The version's own input example (real training flights) plus ``extra`` flights.

    A version logged without an input example and given no flights gets plausible ones drawn from
    its own vocabulary (``bench.flights``), so the checks still have something valid to send.
    """
    import mlflow
    from mlflow.models import Model

    from bench.flights import load_spec, sample_flights

    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    example = Model.load(local).load_input_example(local)
    flights = (json_records(example) if example is not None else []) + list(extra or [])
    return flights or json_records(sample_flights(load_spec(local), 50, seed=0))


def read_flights(path: Path) -> list[dict]:
    """Flight records from a JSON list, a CSV or a Parquet file."""
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    return json_records(frame)


def main(argv: list[str] | None = None) -> int:
    """CLI: the URL checks against ``--url``; one line per check, exit 1 when any failed."""
    parser = config.argument_parser("acceptance", __doc__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.url:
        parser.error("--url is required: the model server's base URL (…/invocations is POSTed)")
    more = read_flights(Path(args.flights)) if args.flights else None
    if args.model_uri:
        flights = model_flights(args.model_uri, more)
    elif more is not None:
        flights = more
    else:
        parser.error("give --model-uri (its input example is scored) or --flights")
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    endpoint = Endpoint(args.url, args.id_token or os.environ.get("ACCEPTANCE_ID_TOKEN", ""))
    load_options = {"users": args.users, "spawn_rate": args.spawn_rate, "duration": args.duration}
    results = run_url_checks(endpoint, flights, checks, **load_options, p95_ms=args.p95_ms)
    if args.health_url:
        results.append(health(args.health_url, endpoint.id_token))
    for result in results:
        sys.stdout.write(f"acceptance {result.line()}\n")
    failed = [r.name for r in results if not r.passed]
    verdict = "FAILED: " + ", ".join(failed) if failed else "all passed"
    sys.stdout.write(f"acceptance: {verdict} ({endpoint.url})\n")
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
