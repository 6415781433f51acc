"""Receiver of the MLflow registry webhook: a move of ``production`` starts the deployment of that version.

MLflow 3 (``MlflowClient().create_webhook``) POSTs ``model_version_alias.created`` to this
receiver whenever an alias is set, by any route (UI, REST, ``steps.promote``). The call is signed
the Standard Webhooks way: ``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of
"<delivery id>.<timestamp>.<body>">`` with the webhook's secret, ``X-MLflow-Timestamp`` (Unix
seconds) and ``X-MLflow-Delivery-Id``. The receiver answers

- 401 when a signature header is missing (unsigned) or the timestamp is outside the window
  (``WEBHOOK_MAX_AGE_SECONDS``: replay protection), 403 when the signature does not match,
  409 when the same delivery id was already handled, 411/413 without a length or over
  ``WEBHOOK_MAX_BODY_BYTES``, 400 naming the field when the signed body is not what MLflow sends;
- 200 ``ignored`` for any other event, model or alias (``WEBHOOK_MODEL_NAME``, ``WEBHOOK_ALIAS``);
- 202 after it ran ``WEBHOOK_DEPLOY_COMMAND`` for the version (in production: start the Cloud
  Build trigger with ``_MODEL_VERSION={version}``), 502 naming the exit code when the command
  failed (MLflow retries 5xx answers with the same delivery id, which is then run again).

The command is split like a shell line (``shlex``) and ``{name}`` / ``{version}`` are replaced
inside the arguments; no shell runs it, the version must be digits, and the command's environment
does not contain the webhook secret. Standard library only, so the file runs as is on the Cloud SDK
image (``python3 sidecar/webhook.py``) where ``gcloud`` is.

Configuration (environment):

============================  ===================  ==================================================
variable                      default              meaning
============================  ===================  ==================================================
``WEBHOOK_SECRET``            (required)           the secret given to ``create_webhook``
``WEBHOOK_DEPLOY_COMMAND``    (required)           what starts the deployment of ``{version}``
``WEBHOOK_MODEL_NAME``        ``flight-delay``     the registered model whose moves deploy
``WEBHOOK_ALIAS``             ``production``       the alias whose moves deploy
``WEBHOOK_MAX_AGE_SECONDS``   ``300``              accepted distance of X-MLflow-Timestamp from now
``WEBHOOK_MAX_BODY_BYTES``    ``65536``            largest body read
``WEBHOOK_COMMAND_TIMEOUT``   ``25``               seconds the command may take (MLflow waits 30)
``WEBHOOK_HOST``              ``0.0.0.0``          address to listen on
``WEBHOOK_PORT``              ``8082``             port to listen on
============================  ===================  ==================================================
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("skyprophet.webhook")

# mlflow/webhooks/constants.py
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
EVENT = ("model_version_alias", "created")
# Delivery ids remembered against replays (older ones are outside the timestamp window anyway).
REMEMBERED_DELIVERIES = 10_000


class WebhookConfigError(SystemExit):
    """A required variable is missing or does not parse; the message names it."""


@dataclass(frozen=True)
class Config:
    """The receiver's settings, all from the environment (see the module docstring)."""

    secret: str
    command: tuple[str, ...]
    model_name: str = "flight-delay"
    alias: str = "production"
    max_age_seconds: float = 300.0
    max_body_bytes: int = 65536
    command_timeout: float = 25.0
    host: str = "0.0.0.0"  # noqa: S104 - a container's receiver listens on all interfaces
    port: int = 8082

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        """Read the environment, refusing to start without a secret or a command."""
        env = dict(os.environ if env is None else env)
        secret, command = env.get("WEBHOOK_SECRET", ""), env.get("WEBHOOK_DEPLOY_COMMAND", "")
        if not secret:
            raise WebhookConfigError("webhook: WEBHOOK_SECRET is required (the secret given to create_webhook)")
        if not command.strip():
            raise WebhookConfigError("webhook: WEBHOOK_DEPLOY_COMMAND is required (what deploys {version})")
        numbers = {}
        for name, variable, kind in (
            ("max_age_seconds", "WEBHOOK_MAX_AGE_SECONDS", float),
            ("max_body_bytes", "WEBHOOK_MAX_BODY_BYTES", int),
            ("command_timeout", "WEBHOOK_COMMAND_TIMEOUT", float),
            ("port", "WEBHOOK_PORT", int),
        ):
            if variable in env:
                try:
                    numbers[name] = kind(env[variable])
                except ValueError:
                    raise WebhookConfigError(f"webhook: {variable} is not a number: {env[variable]!r}") from None
        return cls(
            secret=secret,
            command=tuple(shlex.split(command)),
            model_name=env.get("WEBHOOK_MODEL_NAME", cls.model_name),
            alias=env.get("WEBHOOK_ALIAS", cls.alias),
            host=env.get("WEBHOOK_HOST", cls.host),
            **numbers,
        )


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """What MLflow sends in X-MLflow-Signature for this delivery (mlflow/webhooks/delivery.py)."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


class Rejected(Exception):
    """A request answered with ``code`` and ``message`` (nothing run)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Receiver:
    """Verifies deliveries and runs the deploy command, once per delivery id."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.handled: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()  # one deployment started at a time, each delivery once

    def verify(self, headers: dict[str, str], body: bytes, now: float | None = None) -> str:
        """The delivery id of a correctly signed, fresh delivery; else Rejected (401 / 403)."""
        headers = {k.lower(): v for k, v in headers.items()}  # proxies (HTTP/2) lowercase header names
        wanted = (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER)
        missing = [h for h in wanted if not headers.get(h.lower())]
        if missing:
            raise Rejected(401, f"unsigned call: missing {', '.join(missing)}")
        delivery_id, timestamp = headers[DELIVERY_ID_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()]
        try:
            age = (time.time() if now is None else now) - int(timestamp)
        except ValueError:
            raise Rejected(401, f"{TIMESTAMP_HEADER} is not Unix seconds: {timestamp[:40]!r}") from None
        if abs(age) > self.config.max_age_seconds:
            raise Rejected(
                401,
                f"{TIMESTAMP_HEADER} is {age:.0f} s from now, outside WEBHOOK_MAX_AGE_SECONDS="
                f"{self.config.max_age_seconds:g} (a replayed or delayed call)",
            )
        expected = signature(self.config.secret, delivery_id, timestamp, body)
        given = headers[SIGNATURE_HEADER.lower()].split()  # several "v1,..." may be sent
        if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in given):
            raise Rejected(403, f"{SIGNATURE_HEADER} does not match this delivery signed with the webhook's secret")
        return delivery_id

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        """The answer to one POST: verify, then deploy the version or ignore the event."""
        delivery_id = self.verify(headers, body)
        try:
            message = json.loads(body)
            entity, action, data = message["entity"], message["action"], message["data"]
        except (ValueError, KeyError, TypeError):
            raise Rejected(400, "body: expected MLflow's {entity, action, timestamp, data} JSON") from None
        if (entity, action) != EVENT:
            return 200, {"status": "ignored", "reason": f"event {entity}.{action} does not deploy"}
        if not isinstance(data, dict):
            raise Rejected(400, "data: expected an object with name, alias and version")
        name, alias, version = (str(data.get(key, "")) for key in ("name", "alias", "version"))
        if (name, alias) != (self.config.model_name, self.config.alias):
            return 200, {"status": "ignored", "reason": f"alias {alias!r} of {name!r} does not deploy"}
        if not re.fullmatch(r"[1-9][0-9]{0,8}", version):
            raise Rejected(400, f"data.version: expected a version number, got {version[:40]!r}")
        with self.lock:
            if delivery_id in self.handled:
                raise Rejected(409, f"delivery {delivery_id} was already handled")
            self.deploy(name, version)
            self.handled[delivery_id] = time.time()
            while len(self.handled) > REMEMBERED_DELIVERIES:
                self.handled.popitem(last=False)
        return 202, {"status": "deploying", "name": name, "version": version, "delivery_id": delivery_id}

    def deploy(self, name: str, version: str) -> None:
        """Run the deploy command for ``version``; Rejected(502) naming the exit code when it fails."""
        command = [part.replace("{name}", name).replace("{version}", version) for part in self.config.command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
        logger.info("%s moved to version %s of %s: running %s", self.config.alias, version, name, command[0])
        try:
            done = subprocess.run(  # noqa: S603 - no shell; the version is digits only
                command, env=env, capture_output=True, text=True, timeout=self.config.command_timeout
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise Rejected(502, f"deploy command {command[0]} failed: {type(err).__name__}: {err}") from None
        if done.returncode != 0:
            raise Rejected(502, f"deploy command {command[0]} exited {done.returncode}: {done.stderr.strip()[-300:]}")
        logger.info("deployment of version %s started: %s", version, done.stdout.strip()[-300:])


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to ``receiver``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "skyprophet-webhook"

        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            if self.path.split("?", 1)[0] != "/webhook":
                self.reply(404, {"error": f"no route {self.path}; POST /webhook"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.reply(411, {"error": "Content-Length: required"})
                return
            if int(length) > receiver.config.max_body_bytes:
                limit = receiver.config.max_body_bytes
                self.reply(413, {"error": f"body: {length} bytes, over WEBHOOK_MAX_BODY_BYTES={limit}"})
                return
            body = self.rfile.read(int(length))
            try:
                code, answer = receiver.handle(dict(self.headers.items()), body)
            except Rejected as err:
                logger.warning("rejected %s: %d %s", self.address_string(), err.code, err.message)
                code, answer = err.code, {"error": err.message}
            else:
                logger.info("%d %s", code, answer)
            self.reply(code, answer)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] == "/ping":
                self.reply(200, {"status": "alive"})
            else:
                self.reply(404, {"error": f"no route {self.path}; POST /webhook"})

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
    """Serve POST /webhook (and GET /ping) until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = Config.from_env()
    server = ThreadingHTTPServer((config.host, config.port), make_handler(Receiver(config)))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    logger.info(
        "webhook receiver on %s:%d: alias %s of %s runs %s",
        config.host,
        server.server_port,
        config.alias,
        config.model_name,
        config.command[0],
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
