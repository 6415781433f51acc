"""The sidecar beside the model server: ``GET /ping`` (liveness) and ``GET /health`` (readiness).

``mlflow models serve`` (and the ``build-docker`` image) answers ``/ping`` as soon as its
workers run, even if the model cannot score. Readiness here means more: the model server
answers *and* a canary prediction on the model's own serving input example succeeds. A
background thread checks every ``SIDECAR_POLL_SECONDS`` (1 s), so a dead model server shows as
503 within about a second; ``/health`` itself never waits on the model server.

``/health`` also reports the version the alias ``production`` names now (read from the registry
every ``SIDECAR_REGISTRY_POLL_SECONDS``) beside the version this server serves, and
``serves_production: false`` with a ``warning`` when they differ: a server left behind by a
promotion is visible. That alone does not make it 503: a staged Cloud Run revision serves the
candidate before ``production`` moves, and its startup probe is this ``/health``.

Configuration (environment):

==================================  ======================================  =========================================
variable                            default                                 meaning
==================================  ======================================  =========================================
``MODEL_SERVER_URL``                ``http://127.0.0.1:8080``               the model server to check
``MODEL_URI``                       ``models:/flight-delay@production``     the registry URI it serves (for /health)
``MLFLOW_TRACKING_URI``             (MLflow's default)                      registry to read version, run, threshold
``SIDECAR_HOST``                    ``0.0.0.0``                             address the sidecar listens on
``SIDECAR_PORT``                    ``8081``                                port the sidecar listens on
``SIDECAR_POLL_SECONDS``            ``1.0``                                 time between two checks
``SIDECAR_PING_TIMEOUT``            ``1.0``                                 seconds to wait for the model's /ping
``SIDECAR_CANARY_TIMEOUT``          ``5.0``                                 seconds to wait for the canary prediction
``SIDECAR_PRODUCTION_ALIAS``        ``production``                          the alias whose version is compared
``SIDECAR_REGISTRY_POLL_SECONDS``   ``30.0``                                time between two reads of that alias
==================================  ======================================  =========================================
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from sidecar.registry import ModelInfo, alias_version, load_model_info

logger = logging.getLogger("skyprophet.sidecar")


@dataclass(frozen=True)
class Config:
    """The sidecar's settings, all from the environment (see the module docstring)."""

    model_server_url: str = "http://127.0.0.1:8080"
    model_uri: str = "models:/flight-delay@production"
    host: str = "0.0.0.0"  # noqa: S104 - a container's sidecar listens on all interfaces
    port: int = 8081
    poll_seconds: float = 1.0
    ping_timeout: float = 1.0
    canary_timeout: float = 5.0
    production_alias: str = "production"
    registry_poll_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> Config:
        """Read the environment, failing with the variable's name when a number does not parse."""
        env = os.environ
        try:
            return cls(
                model_server_url=env.get("MODEL_SERVER_URL", cls.model_server_url).rstrip("/"),
                model_uri=env.get("MODEL_URI", cls.model_uri),
                host=env.get("SIDECAR_HOST", cls.host),
                port=int(env.get("SIDECAR_PORT", cls.port)),
                poll_seconds=float(env.get("SIDECAR_POLL_SECONDS", cls.poll_seconds)),
                ping_timeout=float(env.get("SIDECAR_PING_TIMEOUT", cls.ping_timeout)),
                canary_timeout=float(env.get("SIDECAR_CANARY_TIMEOUT", cls.canary_timeout)),
                production_alias=env.get("SIDECAR_PRODUCTION_ALIAS", cls.production_alias),
                registry_poll_seconds=float(env.get("SIDECAR_REGISTRY_POLL_SECONDS", cls.registry_poll_seconds)),
            )
        except ValueError as err:
            raise SystemExit(f"sidecar: a SIDECAR_* variable is not a number ({err})") from err


@dataclass(frozen=True)
class Status:
    """The outcome of the last check."""

    ready: bool
    reason: str
    checked_at: float
    canary_ms: float | None = None


class Monitor:
    """Checks the model server in a background thread and keeps the last outcome."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.info: ModelInfo | None = None
        self.registry_error = "reading the model version from the registry"
        self.status = Status(False, f"starting: reading {config.model_uri} from the registry", time.time())
        self.was_ready = False
        self.stop = threading.Event()
        self.session = requests.Session()
        self.production: dict = {"alias": config.production_alias, "version": None, "checked_at": None}
        self.production_read_at = 0.0

    def read_production(self, now: float) -> None:
        """Which version the alias names now (every ``registry_poll_seconds``); a failure is reported, not fatal."""
        if self.info is None or now - self.production_read_at < self.config.registry_poll_seconds:
            return
        self.production_read_at = now
        entry = {"alias": self.config.production_alias, "version": None, "checked_at": iso(now)}
        try:
            entry["version"] = alias_version(self.info.name, self.config.production_alias)
        except Exception as err:  # noqa: BLE001 - the registry may be down or the alias unset: say so in /health
            entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        if entry["version"] != self.production.get("version"):
            logger.info("alias %s names version %s (serving %s)", entry["alias"], entry["version"], self.info.version)
        self.production = entry

    def load_registry(self) -> bool:
        """Read the model's registry information; on failure keep the reason and try again later."""
        try:
            self.info = load_model_info(self.config.model_uri)
        except Exception as err:  # noqa: BLE001 - any registry failure is reported in /health, then retried
            self.registry_error = f"registry lookup of {self.config.model_uri} failed: {type(err).__name__}: {err}"
            logger.warning(self.registry_error)
            return False
        logger.info("model %s version %s (run %s)", self.info.name, self.info.version, self.info.run_id)
        return True

    def check(self) -> Status:
        """One check: the model server's /ping, then the canary prediction."""
        now, url = time.time(), self.config.model_server_url
        if self.info is None and not self.load_registry():
            return Status(False, self.registry_error, now)
        self.read_production(now)
        not_up = "down" if self.was_ready else "starting"
        try:
            ping = self.session.get(f"{url}/ping", timeout=self.config.ping_timeout)
        except requests.RequestException as err:
            return Status(False, f"model server {not_up}: {url}/ping does not answer ({type(err).__name__})", now)
        if ping.status_code != 200:
            return Status(False, f"model server {not_up}: {url}/ping answered {ping.status_code}", now)
        started = time.perf_counter()
        try:
            answer = self.session.post(f"{url}/invocations", json=self.info.canary, timeout=self.config.canary_timeout)
        except requests.RequestException as err:
            return Status(False, f"canary prediction failed: no answer ({type(err).__name__})", now)
        elapsed = round(1000 * (time.perf_counter() - started), 1)
        if answer.status_code != 200:
            return Status(False, f"canary prediction failed: HTTP {answer.status_code}: {error_message(answer)}", now)
        problem = canary_problem(answer, self.info.canary_rows)
        if problem:
            return Status(False, f"canary prediction failed: {problem}", now)
        return Status(True, "ready: model server answers and the canary prediction succeeds", now, elapsed)

    def run(self) -> None:
        """Check at once, then every ``poll_seconds`` until stopped."""
        while not self.stop.is_set():
            try:
                status = self.check()
            except Exception as err:  # noqa: BLE001 - a bug in one check must not end the monitoring
                status = Status(False, f"health check error: {type(err).__name__}: {err}", time.time())
            if status.ready != self.status.ready or status.reason.split(":")[0] != self.status.reason.split(":")[0]:
                logger.info("health: %s", status.reason)
            self.was_ready = self.was_ready or status.ready
            self.status = status
            self.stop.wait(self.config.poll_seconds)

    def health(self) -> tuple[int, dict]:
        """HTTP status and body of ``/health``: 200 only when the last, recent check succeeded."""
        status = self.status
        age = time.time() - status.checked_at
        stale_after = 3 * self.config.poll_seconds + self.config.ping_timeout + self.config.canary_timeout
        ready, reason = status.ready, status.reason
        if ready and age > stale_after:
            ready, reason = False, f"no successful check for {age:.1f} s"
        body = {
            "status": "ready" if ready else "unavailable",
            "reason": reason,
            "model_server": self.config.model_server_url,
            "checked_at": iso(status.checked_at),
            "canary_ms": status.canary_ms,
            "model": self.info.report() if self.info else {"model_uri": self.config.model_uri},
            "production": dict(self.production),
            "serves_production": None,
        }
        production = self.production.get("version")
        if self.info is not None and (production is not None or "error" in self.production):
            body["serves_production"] = production == self.info.version
            if production is None:
                body["warning"] = f"cannot tell which version {self.production['alias']} names"
            elif production != self.info.version:
                body["warning"] = (
                    f"serving version {self.info.version} but {self.production['alias']} names version "
                    f"{production}: this server is stale (or a staged candidate not promoted yet)"
                )
        return (200 if ready else 503), body


def iso(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def error_message(answer: requests.Response) -> str:
    """The useful end of a scoring server error: its message after the echoed input data."""
    try:
        message = str(answer.json()["message"])
    except (ValueError, KeyError, TypeError):
        message = answer.text
    return message.rsplit("Error: ", 1)[-1].strip()[:300]


def canary_problem(answer: requests.Response, rows: int) -> str | None:
    """What is wrong with a 200 answer to the canary, or None: one probability in [0, 1] per flight."""
    try:
        predictions = answer.json()["predictions"]
    except (ValueError, KeyError, TypeError):
        return f"answer is not {{'predictions': [...]}}: {answer.text[:200]}"
    if len(predictions) != rows:
        return f"{len(predictions)} predictions for {rows} flights"
    try:
        bad = [p for p in predictions if not 0.0 <= float(p["delay_probability"]) <= 1.0]
    except (KeyError, TypeError, ValueError):
        return f"predictions without delay_probability: {str(predictions[:2])[:200]}"
    return f"delay_probability outside [0, 1]: {bad[:3]}" if bad else None


def make_handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to ``monitor``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "skyprophet-sidecar"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            path = self.path.split("?", 1)[0]
            if path == "/ping":
                self.reply(200, {"status": "alive"})
            elif path == "/health":
                self.reply(*monitor.health())
            else:
                self.reply(404, {"error": f"no route {path}; try /ping or /health"})

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler


def main() -> None:
    """Serve /ping and /health until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = Config.from_env()
    monitor = Monitor(config)
    server = ThreadingHTTPServer((config.host, config.port), make_handler(monitor))
    server.daemon_threads = True
    threading.Thread(target=monitor.run, name="health-monitor", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    logger.info(
        "sidecar on %s:%d checking %s (%s)", config.host, server.server_port, config.model_server_url, config.model_uri
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop.set()
        server.server_close()


if __name__ == "__main__":
    main()
