"""The ingress in front of `mlflow models serve`: limits a request meets before MLflow parses its body.

MLflow's scoring server reads the whole body and decodes it into a DataFrame before the model sees
a row (a 100 KB zstd Parquet body of 4,000,000 identical rows took a worker from 400 MB to 990 MB
RSS, kept, before the model's 100,000-flight limit refused it). ``mlflow models serve`` runs a fixed
ASGI app (``mlflow.pyfunc.scoring_server.app:app``), so the limits live in a small ASGI app in
its own process on the public port, forwarding what passes to the model server on a private
loopback port. Checked here, in this order, each refusal naming its variable:

- the path: one of the model server's own (``FORWARDED_PATHS``) exactly as sent, never a
  spelling a URL library would normalise into one (``/./invocations``) (404); redirects are not followed;
- the content type: one of the three forms MLflow 3.17 decodes, one header only, ``charset`` utf-8
  if any, no other parameter and no ``Content-Encoding`` (415; forwarded in its canonical spelling);
- the body size, from ``Content-Length`` before reading, and counted while reading a chunked body (413);
- the rows of a columnar body from its own metadata: a Parquet footer's ``num_rows`` and
  uncompressed size (read with ``pyarrow.parquet.read_metadata`` on the bytes, nothing decoded),
  a CSV body's line count (an upper bound on its rows) (413);
- a JSON body: UTF-8 (400), nested at most ``MAX_JSON_DEPTH`` deep and with no run of more than
  ``MAX_DIGITS`` digits (Python's own limits on reading JSON, which MLflow answers with a 500) (400);
- and on the way back, an error answer's message is cut to ``SKYPROPHET_MAX_ERROR_BYTES``:
  MLflow's 400s echo the rows they failed on.

A JSON body's rows are the values of its longest list (``dataframe_records``, ``dataframe_split``'s
``data``, ``inputs`` in either form): a body with fewer commas than the limit has no list that long
(one byte count); past that, the lists are measured on the body's skeleton (strings left out, then
only brackets and commas kept) with numpy, nothing parsed into Python objects. Standalone (standard
library, numpy, pyarrow, aiohttp, uvicorn: what the model image already has); no project import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
# mlflow/pyfunc/scoring_server/__init__.py CONTENT_TYPES (a test checks they agree).
CONTENT_TYPES = (JSON, CSV, PARQUET)
SCORED_PATH = "/invocations"
# The model server's routes (mlflow/pyfunc/scoring_server/__init__.py init), compared with the path as sent.
FORWARDED_PATHS = ("/invocations", "/ping", "/health", "/version")
# Headers that belong to one connection, not to the request (RFC 9110 7.6.1), and the length we recompute.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"content-length",
    b"host",
}
# What the model server's answer carries that this server sets itself (the body's length is kept).
NOT_PASSED_BACK = (HOP_BY_HOP - {b"content-length"}) | {b"date", b"server"}


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, its default and what it counts."""

    env: str
    default: int
    unit: str

    def value(self, environ: dict[str, str] | None = None) -> int:
        """The limit from the environment (a positive whole number), else the default."""
        raw = (os.environ if environ is None else environ).get(self.env)
        if raw is None or raw == "":
            return self.default
        try:
            value = int(raw.replace("_", "").replace(",", ""))
        except ValueError:
            raise SystemExit(f"ingress: {self.env}={raw!r} is not a whole number of {self.unit}") from None
        if value <= 0:
            raise SystemExit(f"ingress: {self.env}={raw!r} must be positive")
        return value


# 100,000 flights (the model's own batch limit) as dataframe_records JSON are about 15 MB.
MAX_BODY_BYTES = Limit("SKYPROPHET_MAX_BODY_BYTES", 20_000_000, "bytes")
# The model's MAX_BATCH_ROWS (pyfunc/schema.py; a test checks they agree), enforced before decoding.
MAX_ROWS = Limit("SKYPROPHET_MAX_ROWS", 100_000, "rows")
# Uncompressed bytes a Parquet body's footer declares (100,000 real flights: about 4 MB).
MAX_DECODED_BYTES = Limit("SKYPROPHET_MAX_DECODED_BYTES", 200_000_000, "bytes")
# Bytes of an error answer's message passed back to the client; the rest is cut.
MAX_ERROR_BYTES = Limit("SKYPROPHET_MAX_ERROR_BYTES", 2_000, "bytes")
LIMITS = (MAX_BODY_BYTES, MAX_ROWS, MAX_DECODED_BYTES, MAX_ERROR_BYTES)


@dataclass(frozen=True)
class Limits:
    """The values in force (read once at start)."""

    body_bytes: int
    rows: int
    decoded_bytes: int
    error_bytes: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """Every limit from the environment or its default; a bad value stops the start."""
        return cls(*(limit.value(environ) for limit in LIMITS))


class Refused(Exception):
    """A request over a limit: its status and a message naming the limit's variable."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json`` (lower case, no parameters)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """The request's media type if MLflow decodes it, else 415 listing the ones it does.

    Parameters as MLflow reads them: ``charset`` (utf-8 only, any case, quoted or not) and nothing
    else. The caller forwards the media type in the spelling MLflow compares with.
    """
    kind = media_type(content_type)
    got = repr(content_type[:100]) if content_type else "none"
    if kind not in CONTENT_TYPES:
        raise Refused(415, f"content type {got} is not one of {', '.join(CONTENT_TYPES)} (accepted content types)")
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = (part.strip().lower() for part in parameter.partition("="))
        if name != "charset" or value.strip('"') != "utf-8":
            raise Refused(415, f"content type {got}: the only parameter accepted is charset=utf-8")
    return kind


def check_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's one Content-Type (None without it); 415 for any Content-Encoding, or a second Content-Type.

    With two, this server and MLflow's could each read another.
    """
    types = [value for name, value in headers if name == b"content-type"]
    if len(types) > 1:
        raise Refused(415, f"{len(types)} Content-Type headers: send one")
    encodings = [v for k, v in headers if k == b"content-encoding" and v.strip().lower() != b"identity"]
    if encodings:
        raise Refused(
            415, f"Content-Encoding {encodings[0][:50].decode('latin-1')!r} is not accepted: send the body as it is"
        )
    return (types[0].decode("latin-1") or None) if types else None


def check_body_size(size: int, limits: Limits, declared: bool) -> None:
    """413 when a body (declared in Content-Length, or read so far) exceeds SKYPROPHET_MAX_BODY_BYTES."""
    if size > limits.body_bytes:
        what = f"body of {size:,} bytes" if declared else f"body of more than {limits.body_bytes:,} bytes"
        raise Refused(413, f"{what} exceeds the limit of {limits.body_bytes:,} ({MAX_BODY_BYTES.env})")


def check_rows(kind: str, body: bytes, limits: Limits) -> None:
    """413 when a columnar body holds more rows (or Parquet more uncompressed bytes) than allowed.

    Parquet: the footer's ``num_rows`` and the row groups' uncompressed sizes, read from the bytes
    without decoding a page. CSV: the line count, an upper bound on the rows (a quoted field with a
    line break counts twice), found by a C-speed byte count. JSON: the values of its longest list
    (``json_rows``), measured only when the body has at least as many commas as the limit.
    """
    if kind == PARQUET:
        try:
            metadata = pq.read_metadata(pa.BufferReader(body))
        except (pa.ArrowException, OSError) as err:
            raise Refused(400, f"body is not a Parquet file ({PARQUET}): {str(err)[:200]}") from None
        groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
        # The footer's total and each row group's count are written apart: a forged total must not hide rows.
        # A list column holds many values in one row: its values count (a flight's columns hold one each).
        values = [sum(g.column(c).num_values for g in groups) for c in range(metadata.num_columns)]
        rows = max(metadata.num_rows, sum(group.num_rows for group in groups), *values)
        decoded = sum(
            max(group.total_byte_size, sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)))
            for group in groups
        )
        if rows > limits.rows:
            what = f"Parquet body of {rows:,} rows (or values of one column)"
            raise Refused(413, f"{what} exceeds the limit of {limits.rows:,} ({MAX_ROWS.env})")
        if decoded > limits.decoded_bytes:
            raise Refused(
                413,
                f"Parquet body of {decoded:,} uncompressed bytes exceeds the limit of {limits.decoded_bytes:,} "
                f"({MAX_DECODED_BYTES.env})",
            )
    elif kind == CSV:
        # pandas ends a line at \n, \r or \r\n: a body of bare \r has no \n at all.
        breaks = body.count(b"\n") + body.count(b"\r") - body.count(b"\r\n")
        lines = breaks + (0 if body.endswith((b"\n", b"\r")) else 1)
        rows = max(lines - 1, 0)  # the header line
        if rows > limits.rows:
            raise Refused(413, f"CSV body of {rows:,} rows exceeds the limit of {limits.rows:,} ({MAX_ROWS.env})")
    elif kind == JSON:
        check_json_text(body)
        many = body.count(b",") + 1 > limits.rows  # fewer commas: no list of more values
        small = len(body) <= SMALL_BODY_BYTES  # a bigger body has more brackets anyway: not counted
        if not many and small and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:  # none deeper
            return
        skeleton = json_skeleton(body)
        depth = json_depth(skeleton)
        if depth > MAX_JSON_DEPTH:
            raise Refused(
                400, f"JSON nested {depth:,} levels deep exceeds the limit of MAX_JSON_DEPTH={MAX_JSON_DEPTH} levels"
            )
        rows = json_rows(body, skeleton) if many else 0
        if rows > limits.rows:
            what = f"JSON body of {rows:,} rows (its longest list)"
            raise Refused(413, f"{what} exceeds the limit of {limits.rows:,} ({MAX_ROWS.env})")


# Python reads no deeper JSON (a RecursionError near 1,000 levels, a 500 from MLflow); flights need 4 levels.
MAX_JSON_DEPTH = 32
# Python reads no longer integer (sys.get_int_max_str_digits: a ValueError, a 500 from MLflow); no field is as long.
MAX_DIGITS = 4_300
_DIGITS = b"0123456789"
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))  # digits -> "0", the rest -> "x"
# Below this a body's brackets are counted before its depth is measured (a few microseconds).
SMALL_BODY_BYTES = 64 << 10


def check_json_text(body: bytes) -> None:
    """400 unless the body is UTF-8 (what the row count reads) with no digit run longer than Python reads."""
    encoding = json.detect_encoding(body[:4])
    if not encoding.startswith("utf-8"):
        raise Refused(400, f"the JSON body is {encoding}: send it as UTF-8")
    if _digit_run(body, MAX_DIGITS):
        raise Refused(400, f"the JSON body has a run of more than MAX_DIGITS={MAX_DIGITS:,} digits")


def _digit_run(body: bytes, limit: int) -> bool:
    """Whether ``body`` holds more than ``limit`` digits in a row, looking at one byte in ``limit``.

    A run of more than ``limit`` bytes covers a multiple of ``limit``, and reaches at least half its
    length to one side of it: a digit there whose halves both hold another byte is no such run.
    """
    half = limit // 2 + 1
    for at in range(0, len(body), limit):
        if body[at] not in _DIGITS:
            continue
        after, before = body[at : at + half], body[max(0, at - half + 1) : at + 1]
        if after.translate(None, _DIGITS) and before.translate(None, _DIGITS):
            continue  # another byte on each side within half the limit: the run through here is shorter
        window = body[max(0, at - limit) : at + limit + 1].translate(_DIGITS_AS_ZERO)
        if max(map(len, window.split(b"x"))) > limit:
            return True
    return False


def _nesting(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which bytes of a skeleton (``json_skeleton``) open a list or an object, and the depth after each byte."""
    opens = (skeleton == ord("[")) | (skeleton == ord("{"))
    closes = (skeleton == ord("]")) | (skeleton == ord("}"))
    return opens, np.cumsum(opens.astype(np.int32) - closes, dtype=np.int32)


def json_depth(skeleton: np.ndarray) -> int:
    """How deep the lists and objects of a JSON body's skeleton (``json_skeleton``) nest."""
    return int(_nesting(skeleton)[1].max(initial=0))


# Every byte but a list's or an object's brackets and the commas between values; the same and quotes.
_STRUCTURE = b"[]{},"
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(_STRUCTURE)))
_NOT_STRUCTURE_OR_QUOTE = bytes(sorted(set(range(256)) - set(_STRUCTURE + b'"')))


def json_skeleton(body: bytes) -> np.ndarray:
    """The brackets and commas of a JSON body that are not inside a string, in order, as bytes.

    Where a backslash comes right before a quote, escaped backslashes, then escaped quotes, are
    dropped first (``bytes.replace`` reads pairs left to right, as JSON does), so every quote left
    opens or closes a string. One ``bytes.translate`` keeps only quotes and structural bytes, and
    two quotes side by side are dropped (no byte is between them, so every other byte keeps the
    parity of the quotes before it): the strings without a bracket or comma in them are gone. If
    quotes are left, a structural byte is in a string when an odd number of them comes before it.
    """
    if b'"' not in body:
        return np.frombuffer(body.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    if b"\\" in body and _quote_after_backslash(body):
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marked = body.translate(None, _NOT_STRUCTURE_OR_QUOTE).replace(b'""', b"")
    if b'"' not in marked:
        return np.frombuffer(marked, dtype=np.uint8)
    kept = np.frombuffer(marked, dtype=np.uint8)
    quotes = kept == ord('"')
    quotes_before = np.cumsum(quotes.view(np.uint8), dtype=np.uint8)  # modulo 256: the parity is kept
    return kept[((quotes_before & 1) == 0) & ~quotes]


def _quote_after_backslash(body: bytes) -> bool:
    """Whether a quote follows a backslash anywhere in ``body`` (boolean arrays: faster than the pair search)."""
    data = np.frombuffer(body, dtype=np.uint8)
    return bool(((data[:-1] == ord("\\")) & (data[1:] == ord('"'))).any())


def json_rows(body: bytes, skeleton: np.ndarray | None = None) -> int:
    """The most values in any one list of a JSON body, at any depth: the rows of every form.

    On the skeleton (``json_skeleton``, made here unless given): each level's containers are told
    apart by their opening brackets, and the commas directly inside each are the level's commas
    between its opener and the next one.
    """
    skeleton = json_skeleton(body) if skeleton is None else skeleton
    opens, depth = _nesting(skeleton)
    commas = skeleton == ord(",")
    most = 0
    for level in range(1, int(depth.max(initial=0)) + 1):
        at_level = depth == level
        openers = np.flatnonzero(opens & at_level)
        if len(openers) == 0:
            break
        lists = skeleton[openers] == ord("[")
        if not lists.any():
            continue
        level_commas = np.flatnonzero(commas & at_level)
        ends = np.r_[openers[1:], len(skeleton)]
        counts = np.searchsorted(level_commas, ends) - np.searchsorted(level_commas, openers)
        most = max(most, int(counts[lists].max()) + 1)
    return most


def error_body(message: str) -> bytes:
    """The JSON error MLflow's scoring server answers with."""
    return json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()


# How MLflow's scoring server wraps a model's error: the rows it failed on (a DataFrame's repr), then the error.
MLFLOW_ECHO = ("Failed to predict data '", "'. \nError: ")


def cut_error(body: bytes, limits: Limits) -> bytes:
    """An error answer of at most about SKYPROPHET_MAX_ERROR_BYTES of message (MLflow echoes the rows it failed on).

    Over the limit, MLflow's echo of the rows is left out first (the model's own message, which
    names the field, comes after it), then the rest is cut, saying so.
    """
    if len(body) <= limits.error_bytes:
        return body
    try:
        data = json.loads(body)
        message = str(data["message"])
    except (ValueError, KeyError, TypeError):
        data, message = None, body.decode("utf-8", errors="replace")
    echo, marker, error = message.partition(MLFLOW_ECHO[1])
    if marker and echo.startswith(MLFLOW_ECHO[0]):
        message = f"Failed to predict the request's data ({len(echo):,} bytes of its echo left out). Error: {error}"
    if len(message.encode()) > limits.error_bytes:
        note = f" ... [cut: {len(body):,} bytes of error; {MAX_ERROR_BYTES.env}={limits.error_bytes:,}]"
        message = message.encode()[: limits.error_bytes].decode("utf-8", errors="ignore") + note
    if isinstance(data, dict):
        return json.dumps({**data, "message": message}).encode()
    return message.encode()


Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ConnectionLost(Exception):
    """The connection to the model server dropped before any of its answer was passed back."""


class Ingress:
    """ASGI app: refuse over the limits, forward the rest to ``upstream`` (the model server) over keep-alive."""

    def __init__(self, upstream: str, limits: Limits | None = None, timeout: float = 120) -> None:
        self.upstream = upstream.rstrip("/")
        self.limits = limits or Limits.from_env()
        self.timeout = timeout
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        """ASGI entry: lifespan opens and closes the upstream session; HTTP requests are checked and forwarded."""
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                await self.forward(scope, receive, send)
            except Refused as refusal:
                await respond(send, refusal.status, error_body(refusal.message))

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """One connection pool to the model server for the process's life."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    auto_decompress=False,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def read_body(self, scope: dict, receive: Receive) -> bytes:
        """The whole body, refused as soon as Content-Length or the bytes read so far pass the size limit."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            check_body_size(int(declared), self.limits, declared=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client closed the connection before the body ended")
            chunk = message.get("body", b"")
            size += len(chunk)
            check_body_size(size, self.limits, declared=False)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def forward(self, scope: dict, receive: Receive, send: Send) -> None:
        """Check the request, send it on, pass the answer back (an error's message cut to size)."""
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if path not in FORWARDED_PATHS:  # as sent: "/./invocations" would reach /invocations unchecked
            raise Refused(404, f"no path {path[:100]!r} here: the model server answers {', '.join(FORWARDED_PATHS)}")
        outgoing = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        if scope["method"] == "POST" and path == SCORED_PATH:
            kind = check_content_type(check_headers(scope["headers"]))
            outgoing = [(k, kind if k == "content-type" else v) for k, v in outgoing]  # the spelling MLflow reads
            body = await self.read_body(scope, receive)
            check_rows(kind, body, self.limits)
        else:
            body = await self.read_body(scope, receive)
        url = self.upstream + path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            await self.relay(self.session, scope["method"], url, body, outgoing, send)
            return
        except ConnectionLost:
            pass
        # A kept-alive connection the model server closed (it does after a 500) fails before any answer:
        # one retry, on a connection of its own (the pool may hold more closed ones). Scoring changes
        # nothing, so a request the server did receive is only scored twice.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=False,
        ) as fresh:
            try:
                await self.relay(fresh, scope["method"], url, body, outgoing, send)
            except ConnectionLost as lost:
                await respond(send, 502, self.unanswered(str(lost)))

    def unanswered(self, why: str) -> bytes:
        """The 502 body when the model server cannot be reached or does not answer."""
        return error_body(f"model server at {self.upstream} did not answer: {why}"[:500])

    async def relay(
        self, session: aiohttp.ClientSession, method: str, url: str, body: bytes, headers: list, send: Send
    ) -> None:
        """One request to the model server, its answer passed back; 502 when it cannot be reached or times out."""
        started = False
        try:
            async with session.request(method, url, data=body, headers=headers, allow_redirects=False) as answer:
                passed = [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in answer.headers.items()
                    if k.lower().encode("latin-1") not in NOT_PASSED_BACK
                ]
                if answer.status >= 400:
                    passed = [(k, v) for k, v in passed if k != b"content-length"]
                    await respond(send, answer.status, cut_error(await answer.read(), self.limits), passed)
                    return
                await send({"type": "http.response.start", "status": answer.status, "headers": passed})
                started = True
                async for chunk in answer.content.iter_chunked(1 << 16):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
            if started:  # the answer is half sent: all we can do is end it
                raise
            raise ConnectionLost(repr(err)) from err  # nothing passed back yet: ``forward`` may retry
        except (TimeoutError, aiohttp.ClientError) as err:
            if started:
                raise
            await respond(send, 502, self.unanswered(repr(err)))


async def respond(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    """A whole answer at once (JSON unless ``headers`` say otherwise)."""
    headers = [(k, v) for k, v in (headers or []) if k != b"content-type"] or []
    kind = b"application/json" if body[:1] == b"{" else b"text/plain; charset=utf-8"
    headers += [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
