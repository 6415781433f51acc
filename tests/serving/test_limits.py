"""Hostile requests cost a 4xx naming the limit, not the server: the ingress of `make serve` and the image.

A real ``python -m steps.serve`` (what ``make serve`` runs: the ingress on the public port,
`mlflow models serve` behind it) gets the hostile list; each answer names its limit, the model
workers' resident memory stays bounded, and a good flight still scores after. A SIGTERM to its
process group while an explained request is being worked on stops every process and frees the ports.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from mlflow.pyfunc import scoring_server

from ingress import limits
from ingress.run import group_members
from pyfunc.explain import MAX_EXPLAIN_FLIGHTS, MAX_EXPLAIN_FLIGHTS_ENV, max_explain_flights
from pyfunc.fields import REQUIRED_COLUMNS
from pyfunc.schema import MAX_BATCH_ROWS
from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import (
    free_port,
    ingress_command,
    process_env,
    start_logged,
    stop_process_group,
    wait_for_http,
)
from tests.factory import make_flights
from tests.serving.test_image import instructions, stages

GOOD = {
    "Fecha-I": "2017-07-14 19:30:00",
    "Vlo-I": "226",
    "Des-I": "ZZAA",
    "Emp-I": "AAA",
    "TIPOVUELO": "N",
    "OPERA": "Alpha Air",
    "SIGLADES": "Aurora",
}
DEFAULTS = limits.Limits.from_env({})


# --- The limits alone (no server) ---


def test_the_ingress_accepts_what_mlflow_decodes_and_counts_what_the_model_allows():
    assert set(limits.CONTENT_TYPES) == set(scoring_server.CONTENT_TYPES), "the forms MLflow 3.17 decodes"
    assert limits.MAX_ROWS.default == MAX_BATCH_ROWS, "the ingress refuses before decoding what the model refuses"
    assert DEFAULTS.body_bytes > len(json.dumps({"dataframe_records": [GOOD] * MAX_BATCH_ROWS})), (
        "a full batch of flights as JSON records fits the body limit"
    )


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    return sink.getvalue()


def test_a_parquet_body_is_counted_from_its_footer_and_a_csv_body_by_its_lines():
    small = limits.Limits(body_bytes=10**9, rows=10, decoded_bytes=10**9, error_bytes=100)
    limits.check_rows(limits.PARQUET, parquet_bytes(pd.DataFrame([GOOD] * 10)), small)
    with pytest.raises(
        limits.Refused, match=r"11 rows \(or values of one column\) exceeds the limit of 10 \(SKYP"
    ) as refused:
        limits.check_rows(limits.PARQUET, parquet_bytes(pd.DataFrame([GOOD] * 11)), small)
    assert refused.value.status == 413
    tight = limits.Limits(body_bytes=10**9, rows=10**6, decoded_bytes=1_000, error_bytes=100)
    with pytest.raises(limits.Refused, match="uncompressed bytes exceeds the limit of 1,000 .SKYPROPHET_MAX_DECODED"):
        distinct = pd.DataFrame([{**GOOD, "OPERA": f"Airline number {i}"} for i in range(1_000)])
        limits.check_rows(limits.PARQUET, parquet_bytes(distinct), tight)
    with pytest.raises(limits.Refused, match="not a Parquet file") as refused:
        limits.check_rows(limits.PARQUET, b"PAR1 but not really", small)
    assert refused.value.status == 400
    csv = pd.DataFrame([GOOD] * 10).to_csv(index=False).encode()
    limits.check_rows(limits.CSV, csv, small)
    limits.check_rows(limits.CSV, csv.rstrip(b"\n"), small)  # no final line break: the same 10 rows
    with pytest.raises(limits.Refused, match="CSV body of 11 rows"):
        limits.check_rows(limits.CSV, csv + csv.splitlines(keepends=True)[1], small)


def test_a_json_body_is_counted_by_its_longest_list_in_every_form_mlflow_reads():
    small = limits.Limits(body_bytes=10**9, rows=10, decoded_bytes=10**9, error_bytes=100)
    tricky = {**GOOD, "OPERA": 'Alpha, [Air] {"x": [1, 2]} \\', "SIGLADES": 'Au"ro,ra\\" [,'}  # JSON in strings

    def forms(n: int) -> dict[str, bytes]:
        return {
            name: json.dumps(body).encode()
            for name, body in {
                "records": {"dataframe_records": [tricky] * n, "params": {"explain": False}},
                "split": {"dataframe_split": {"columns": list(tricky), "data": [list(tricky.values())] * n}},
                "inputs as records": {"inputs": [tricky] * n},
                "inputs as columns": {"inputs": {k: [v] * n for k, v in tricky.items()}},
            }.items()
        }

    for n in (1, 9, 10, 11, 500):
        for name, body in forms(n).items():
            assert limits.json_rows(body) == max(n, len(tricky) if name == "split" else 1), (name, n)
            if n <= small.rows:
                limits.check_rows(limits.JSON, body, small)
            else:
                words = rf"JSON body of {n:,} rows .* 10 \(SKYPROPHET_MAX_ROWS\)"
                with pytest.raises(limits.Refused, match=words) as no:
                    limits.check_rows(limits.JSON, body, small)
                assert no.value.status == 413, name
    hostile = b'{"dataframe_records": [' + b",".join([b"{}"] * 20) + b"]}"  # rows of nothing, 3 bytes each
    with pytest.raises(limits.Refused, match="JSON body of 20 rows"):
        limits.check_rows(limits.JSON, hostile, small)
    limits.check_rows(limits.JSON, b'{"dataframe_records": [' + b"1," * 5, small)  # not JSON: MLflow's to refuse
    with pytest.raises(limits.Refused, match="JSON body of 31 rows"):  # truncated: what is there is counted
        limits.check_rows(limits.JSON, b'{"dataframe_records": [' + b"1," * 30, small)


def _skeleton_by_hand(body: bytes) -> bytes:
    """The reference: a byte-by-byte JSON string scanner (slow, obviously right)."""
    kept, in_string, escaped = bytearray(), False, False
    for byte in body:
        if in_string:
            in_string, escaped = (escaped or byte != ord('"')), (not escaped and byte == ord("\\"))
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[]{},":
            kept.append(byte)
    return bytes(kept)


def test_the_json_skeleton_matches_a_byte_by_byte_scanner_on_escapes_and_long_bodies():
    rng = random.Random(7)
    pieces = ["a", ",", "[", "]", "{", "}", '"', "\\", "\n", "é", "\u00e9", " ", ":"]
    no_quote = [p for p in pieces if p not in ('"', "\\")]  # escapes (\n, \u00e9) but none before a quote
    for case in range(200):
        chosen = no_quote if case % 2 else pieces
        values = ["".join(rng.choice(chosen) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 60))]
        body = json.dumps({"dataframe_records": [{"k": v, "n": [1, 2]} for v in values]}).encode()
        if case % 2:
            assert b"\\" in body and b'\\"' not in body  # the path that skips the replacements
        assert limits.json_skeleton(body).tobytes() == _skeleton_by_hand(body), body[:200]
    many = json.dumps([{"a": "x", "b": "y,["} for _ in range(300)]).encode()  # 2,400 quotes: past 256
    assert limits.json_skeleton(many).tobytes() == _skeleton_by_hand(many)


def test_content_types_and_sizes_are_refused_naming_the_limit():
    assert limits.check_content_type("application/json; charset=utf-8") == limits.JSON
    assert limits.check_content_type("Text/CSV") == limits.CSV
    for bad in (None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        with pytest.raises(limits.Refused, match="accepted content types") as refused:
            limits.check_content_type(bad)
        assert refused.value.status == 415
    limits.check_body_size(DEFAULTS.body_bytes, DEFAULTS, declared=True)
    with pytest.raises(limits.Refused, match=r"body of 20,000,001 bytes exceeds the limit of 20,000,000 \(SKYPRO"):
        limits.check_body_size(20_000_001, DEFAULTS, declared=True)


def test_content_type_parameters_headers_and_json_text_are_checked_as_mlflow_would_read_them():
    assert limits.check_content_type('Application/JSON; Charset="UTF-8"') == limits.JSON
    for bad in ("application/json; charset=latin-1", "application/json; foo=bar", "text/csv; charset=utf-8; x=1"):
        with pytest.raises(limits.Refused, match="only parameter accepted is charset=utf-8") as refused:
            limits.check_content_type(bad)
        assert refused.value.status == 415
    limits.check_headers([(b"content-type", b"application/json"), (b"content-encoding", b"identity")])
    with pytest.raises(limits.Refused, match="2 Content-Type headers"):
        limits.check_headers([(b"content-type", limits.PARQUET.encode()), (b"content-type", b"application/json")])
    with pytest.raises(limits.Refused, match="Content-Encoding 'gzip' is not accepted"):
        limits.check_headers([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])

    good = json.dumps({"dataframe_split": {"columns": list(GOOD), "data": [list(GOOD.values())] * 50}}).encode()
    limits.check_rows(limits.JSON, good, DEFAULTS)  # 4 levels deep, more brackets than MAX_JSON_DEPTH
    for encoding in ("utf-16-le", "utf-16-be", "utf-32"):
        with pytest.raises(limits.Refused, match=f"the JSON body is {encoding}.*: send it as UTF-8") as refused:
            limits.check_rows(limits.JSON, json.dumps({"dataframe_records": [GOOD]}).encode(encoding), DEFAULTS)
        assert refused.value.status == 400
    limits.check_rows(limits.JSON, b"\xef\xbb\xbf" + good, DEFAULTS)  # UTF-8 with a BOM: json.loads reads it
    deep = limits.MAX_JSON_DEPTH + 1
    hidden = b'{"inputs": ' + b'["]",' * (deep - 1) + b"[1" + b"]" * deep + b"}"  # a "]" in strings hides nothing
    with pytest.raises(limits.Refused, match=f"nested {deep + 1} levels deep .* MAX_JSON_DEPTH=32"):
        limits.check_rows(limits.JSON, hidden, DEFAULTS)
    assert limits.json_depth(limits.json_skeleton(good)) == 4
    digits = limits.MAX_DIGITS
    limits.check_rows(limits.JSON, b'{"inputs": [' + b"9" * digits + b"]}", DEFAULTS)
    with pytest.raises(limits.Refused, match=f"run of more than MAX_DIGITS={digits:,} digits"):
        limits.check_rows(limits.JSON, b'{"inputs": [' + b"9" * (digits + 1) + b"]}", DEFAULTS)


def test_the_digit_run_check_looking_at_one_byte_in_the_limit_matches_a_full_scan():
    rng = random.Random(5)
    for _ in range(3_000):
        limit = rng.choice([5, 10, 43, 100])
        pieces = []
        while sum(map(len, pieces)) < 600:
            run = rng.choice([1, 2, limit - 1, limit, limit + 1, 2 * limit, rng.randint(1, 3 * limit)])
            pieces.append(b"7" * run if rng.random() < 0.6 else rng.choice([b"a", b" ,", b'"x"', b"[]", b"{", b"x"]))
        body = b"".join(pieces)[: rng.randint(0, 600)]
        longest = max((len(run) for run in re.split(rb"[^0-9]", body)), default=0)
        assert limits._digit_run(body, limit) == (longest > limit), (limit, body)


def forged_num_rows(parquet: bytes, rows: int) -> bytes:
    """The Parquet file with its footer's total ``num_rows`` (FileMetaData field 3) set to ``rows``; row groups kept.

    The footer is Thrift's compact protocol: field headers carry a delta, integers are zigzag varints.
    """

    def varint(data: bytes, i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            value |= (data[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not data[i - 1] & 0x80:
                return value, i

    def encode(value: int) -> bytes:
        value, out = (value << 1) ^ (value >> 63), bytearray()
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        return bytes(out + bytes([value]))

    def skip(data: bytes, i: int, kind: int) -> int:
        if kind in (1, 2):
            return i
        if kind == 3:
            return i + 1
        if kind in (4, 5, 6):
            return varint(data, i)[1]
        if kind == 7:
            return i + 8
        if kind == 8:
            size, i = varint(data, i)
            return i + size
        if kind in (9, 10):
            count, element, i = data[i] >> 4, data[i] & 15, i + 1
            if count == 15:
                count, i = varint(data, i)
            for _ in range(count):
                i = i + 1 if element in (1, 2) else skip(data, i, element)
            return i
        if kind == 12:
            while data[i]:
                delta, field_kind, i = data[i] >> 4, data[i] & 15, i + 1
                i = skip(data, varint(data, i)[1] if delta == 0 else i, field_kind)
            return i + 1
        raise ValueError(f"Thrift type {kind}")

    length = int.from_bytes(parquet[-8:-4], "little")
    start = len(parquet) - 8 - length
    footer, i, field = parquet[start:-8], 0, 0
    while footer[i]:
        delta, kind, i = footer[i] >> 4, footer[i] & 15, i + 1
        field = field + delta if delta else varint(footer, i)[0]
        i = i if delta else varint(footer, i)[1]
        if field == 3:
            forged = footer[:i] + encode(rows) + footer[varint(footer, i)[1] :]
            return parquet[:start] + forged + len(forged).to_bytes(4, "little") + b"PAR1"
        i = skip(footer, i, kind)
    raise ValueError("no num_rows in the footer")


def test_a_list_column_and_bare_carriage_returns_count_as_what_pandas_reads():
    small = limits.Limits(body_bytes=10**9, rows=10, decoded_bytes=10**9, error_bytes=100)
    listed = parquet_bytes(pd.DataFrame({"Vlo-I": [list(range(50))]}))  # one row, 50 values: a tiny body
    assert pq.read_metadata(pa.BufferReader(listed)).num_rows == 1
    with pytest.raises(limits.Refused, match=r"Parquet body of 50 rows \(or values of one column\)"):
        limits.check_rows(limits.PARQUET, listed, small)
    for end in (b"\r", b"\n", b"\r\n"):
        body = b"a,b" + end + (b"1,2" + end) * 11
        assert len(pd.read_csv(io.BytesIO(body))) == 11
        with pytest.raises(limits.Refused, match="CSV body of 11 rows"):
            limits.check_rows(limits.CSV, body, small)
        limits.check_rows(limits.CSV, b"a,b" + end + (b"1,2" + end) * 10, small)


def test_a_forged_parquet_total_does_not_hide_the_row_groups_rows():
    small = limits.Limits(body_bytes=10**9, rows=10, decoded_bytes=10**9, error_bytes=100)
    honest = parquet_bytes(pd.DataFrame([GOOD] * 50))
    forged = forged_num_rows(honest, 1)
    assert pq.read_metadata(pa.BufferReader(forged)).num_rows == 1
    assert pq.read_table(pa.BufferReader(forged)).num_rows == 50, "what pyarrow (and MLflow) decodes"
    with pytest.raises(
        limits.Refused, match=r"Parquet body of 50 rows \(or values of one column\) exceeds the limit of 10"
    ):
        limits.check_rows(limits.PARQUET, forged, small)


def test_an_error_answer_is_cut_to_its_limit_and_stays_json():
    small = limits.Limits(body_bytes=1, rows=1, decoded_bytes=1, error_bytes=100)
    long = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "Field 'OPERA': " + "é" * 50_000}).encode()
    cut = json.loads(limits.cut_error(long, small))
    assert cut["error_code"] == "INVALID_PARAMETER_VALUE" and cut["message"].startswith("Field 'OPERA': ")
    assert len(cut["message"].encode()) < 300 and "SKYPROPHET_MAX_ERROR_BYTES=100" in cut["message"]
    rows = "     Fecha-I Vlo-I\n0  2017-07-14 19:30:00   226\n" * 200
    echoed = json.dumps({"message": f"Failed to predict data '{rows}'. \nError: Field 'explain': 5,001 flights"})
    roomier = limits.Limits(body_bytes=1, rows=1, decoded_bytes=1, error_bytes=200)
    message = json.loads(limits.cut_error(echoed.encode(), roomier))["message"]
    assert message.startswith("Failed to predict the request's data (") and "echo left out" in message, message
    assert message.endswith("Error: Field 'explain': 5,001 flights"), "the model's own message is kept whole"
    short = json.dumps({"error_code": "X", "message": "short"}).encode()
    assert limits.cut_error(short, small) == short
    assert b"SKYPROPHET_MAX_ERROR_BYTES" in limits.cut_error(b"x" * 5_000, small), "text errors are cut too"


def test_a_bad_limit_value_stops_the_start_naming_the_variable():
    with pytest.raises(SystemExit, match="SKYPROPHET_MAX_BODY_BYTES='lots'"):
        limits.Limits.from_env({"SKYPROPHET_MAX_BODY_BYTES": "lots"})
    with pytest.raises(SystemExit, match="SKYPROPHET_MAX_ROWS='0' must be positive"):
        limits.Limits.from_env({"SKYPROPHET_MAX_ROWS": "0"})
    assert limits.Limits.from_env({"SKYPROPHET_MAX_ROWS": "1_000"}).rows == 1_000


def test_the_explain_cap_comes_from_its_variable_or_stops_the_load_naming_it(monkeypatch):
    monkeypatch.delenv(MAX_EXPLAIN_FLIGHTS_ENV, raising=False)
    assert max_explain_flights() == MAX_EXPLAIN_FLIGHTS
    monkeypatch.setenv(MAX_EXPLAIN_FLIGHTS_ENV, "20")
    assert max_explain_flights() == 20
    for bad in ("0", "-5", "many"):
        monkeypatch.setenv(MAX_EXPLAIN_FLIGHTS_ENV, bad)
        with pytest.raises(ValueError, match=MAX_EXPLAIN_FLIGHTS_ENV):
            max_explain_flights()


# --- A real `make serve` (python -m steps.serve) ---


def tree(root: int) -> list[int]:
    """``root`` and every live process descending from it (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid in parents:
            found.append(pid)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return found


def rss_mib(pids: list[int]) -> float:
    """The summed VmRSS of ``pids`` (those still alive), in MiB."""
    total = 0
    for pid in pids:
        try:
            match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        total += int(match.group(1)) if match else 0
    return total / 1024


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def port_is_free(port: int) -> bool:
    """A new server could listen on ``port`` (SO_REUSEADDR, as uvicorn binds: closed connections may linger)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Serve:
    """``python -m steps.serve`` in its own process group (as ``make serve`` is), on a free port."""

    def __init__(self, registered_model: dict, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "steps.serve", "--model-uri", registered_model["model_uri"]]
        command += ["--port", str(self.port), "--workers", "1"]
        self.log = log
        with open(log, "w") as handle:
            self.process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=process_env({**registered_model["env"], **(extra_env or {})}),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_http(f"{self.url}/ping", timeout=120, process=self.process)

    def model_server_pids(self) -> list[int]:
        """The `mlflow models serve` processes (CLI, uvicorn, workers) under steps.serve."""
        return [pid for pid in tree(self.process.pid) if "ingress.run" not in cmdline(pid)][1:]

    def post(
        self, body: bytes, content_type: str = "application/json", headers: dict | None = None, **kwargs
    ) -> requests.Response:
        headers = ({"Content-Type": content_type} if content_type else {}) | (headers or {})
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=120, **kwargs)

    def good(self) -> requests.Response:
        return self.post(json.dumps({"dataframe_records": [GOOD]}).encode())


@pytest.fixture(scope="module")
def serve(registered_model, tmp_path_factory):
    started = Serve(registered_model, tmp_path_factory.mktemp("limits") / "serve.log")
    yield started
    stop_process_group(started.process)


def message(answer: requests.Response) -> str:
    assert answer.headers["content-type"].startswith("application/json"), answer.text[:300]
    return answer.json()["message"]


def flights(n: int) -> list[dict]:
    frame = make_flights(days=max(1, n // 40 + 1), seed=3)[list(REQUIRED_COLUMNS)].head(n)
    return json.loads(frame.to_json(orient="records"))


@pytest.mark.slow
def test_the_hostile_list_gets_4xx_naming_each_limit_with_bounded_worker_memory(serve):
    assert serve.good().status_code == 200, "warm: the model's first request loads what it loads once"
    workers = serve.model_server_pids()
    assert workers, "the model server runs under steps.serve"
    before = rss_mib(workers)

    bomb = parquet_bytes(pd.DataFrame([GOOD] * 4_000_000))  # identical rows: zstd makes them ~100 KB
    assert len(bomb) < 200_000, len(bomb)
    answer = serve.post(bomb, limits.PARQUET)
    assert answer.status_code == 413 and "4,000,000 rows" in message(answer), answer.text[:300]
    assert "SKYPROPHET_MAX_ROWS" in message(answer)

    oversize = json.dumps({"dataframe_records": [GOOD] * 150_000}).encode()
    assert len(oversize) > DEFAULTS.body_bytes
    answer = serve.post(oversize)
    assert answer.status_code == 413, answer.text[:300]
    assert f"body of {len(oversize):,} bytes exceeds the limit of 20,000,000" in message(answer)
    assert "SKYPROPHET_MAX_BODY_BYTES" in message(answer)

    chunks = (oversize[i : i + (1 << 20)] for i in range(0, len(oversize), 1 << 20))  # chunked: no Content-Length
    answer = serve.post(chunks)
    assert answer.status_code == 413 and "SKYPROPHET_MAX_BODY_BYTES" in message(answer), answer.text[:300]

    rows_of_nothing = b'{"dataframe_records": [' + b",".join([b"{}"] * 2_000_000) + b"]}"  # 6 MB, 2,000,000 rows
    answer = serve.post(rows_of_nothing)
    assert answer.status_code == 413 and "JSON body of 2,000,000 rows" in message(answer), answer.text[:300]
    assert "SKYPROPHET_MAX_ROWS" in message(answer)

    csv = ("\n".join(["a,b"] + ["1,2"] * 200_000) + "\n").encode()
    answer = serve.post(csv, "text/csv")
    assert answer.status_code == 413 and "CSV body of 200,000 rows" in message(answer), answer.text[:300]

    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        answer = serve.post(json.dumps({"dataframe_records": [GOOD]}).encode(), content_type)
        assert answer.status_code == 415 and "accepted content types" in message(answer), answer.text[:300]
        assert "application/vnd.apache.parquet" in message(answer)

    explain = {"dataframe_records": flights(MAX_EXPLAIN_FLIGHTS + 1), "params": {"explain": True}}
    answer = serve.post(json.dumps(explain).encode())
    assert answer.status_code == 400, answer.text[:300]
    assert f"{MAX_EXPLAIN_FLIGHTS + 1:,} flights exceed the limit of {MAX_EXPLAIN_FLIGHTS:,}" in message(answer)
    assert MAX_EXPLAIN_FLIGHTS_ENV in message(answer)

    echoed = serve.post(json.dumps({"dataframe_records": [{**GOOD, "OPERA": "Z" * 200_000}]}).encode())
    assert echoed.status_code == 400 and "Field 'OPERA'" in message(echoed), echoed.text[:300]
    assert len(echoed.content) < DEFAULTS.error_bytes + 500, f"an error echoes {len(echoed.content):,} bytes"

    grown = rss_mib(workers) - before
    assert grown < 100, f"the model server's processes grew by {grown:.0f} MiB under the hostile list"
    assert serve.good().status_code == 200, "still serving after the hostile list"
    explained = serve.post(json.dumps({"dataframe_records": flights(20), "params": {"explain": True}}).encode())
    assert explained.status_code == 200 and len(explained.json()["predictions"]) == 20


def raw_post(port: int, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """A POST with the path and headers exactly as given (no client normalises or merges them)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_the_requests_that_went_around_the_limits_get_4xx_too(serve):
    """Each of these took a 4,000,000-row body (or a 500) past the ingress before it checked them."""
    assert serve.good().status_code == 200
    workers = serve.model_server_pids()
    before = rss_mib(workers)
    bomb = parquet_bytes(pd.DataFrame([GOOD] * 4_000_000))
    parquet = [("Content-Type", limits.PARQUET)]
    for path in ("/./invocations", "/x/../invocations", "/%2E/invocations", "/invocations/", "//invocations"):
        status, body = raw_post(serve.port, path, bomb, parquet)
        assert status == 404 and "no path" in json.loads(body)["message"], (path, status, body[:300])
    status, body = raw_post(serve.port, "/invocations", bomb, [*parquet, ("Content-Type", "application/json")])
    assert status == 415 and "2 Content-Type headers" in json.loads(body)["message"], body[:300]
    answer = serve.post(forged_num_rows(bomb, 1), limits.PARQUET)
    assert answer.status_code == 413 and "4,000,000 rows" in message(answer), answer.text[:300]
    utf16 = json.dumps({"dataframe_records": [GOOD]}).encode("utf-16-le")
    answer = serve.post(utf16)
    assert answer.status_code == 400 and "send it as UTF-8" in message(answer), answer.text[:300]
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # Python's parser: RecursionError, a 500
    answer = serve.post(deep)
    assert answer.status_code == 400 and "MAX_JSON_DEPTH" in message(answer), answer.text[:300]
    huge = json.dumps({"dataframe_records": [{**GOOD, "Vlo-I": 1}]}).replace(": 1,", ": " + "9" * 5_000 + ",")
    assert "9" * 5_000 in huge
    huge = huge.encode()
    answer = serve.post(huge)  # Python's parser: ValueError (int_max_str_digits), a 500
    assert answer.status_code == 400 and "MAX_DIGITS" in message(answer), answer.text[:300]
    good = json.dumps({"dataframe_records": [GOOD]}).encode()
    answer = serve.post(gzip.compress(good), headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 415 and "Content-Encoding 'gzip'" in message(answer), answer.text[:300]
    answer = serve.post(good, 'Application/JSON; Charset="UTF-8"')  # MLflow compares the spelling: sent canonical
    assert answer.status_code == 200, answer.text[:300]
    answer = serve.post(good, "application/json; foo=bar")
    assert answer.status_code == 415 and "charset=utf-8" in message(answer), answer.text[:300]
    grown = rss_mib(workers) - before
    assert grown < 100, f"the model server's processes grew by {grown:.0f} MiB"
    assert serve.good().status_code == 200


class ClosingUpstream(socketserver.ThreadingTCPServer):
    """A model server stand-in that answers the first request of a connection and drops the connection at the next.

    As uvicorn does after a 500 (without ``Connection: close``): the ingress's kept-alive connection
    then fails before any answer.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                first = True
                while True:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        byte = self.rfile.read(1)
                        if not byte:
                            return
                        head += byte
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    self.rfile.read(int(length.group(1)) if length else 0)
                    if not first:
                        return  # closed, no answer
                    first = False
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                    )
                    self.wfile.flush()

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.slow
def test_a_connection_the_model_server_dropped_is_retried_once_not_answered_502(tmp_path):
    upstream = ClosingUpstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    command = ingress_command("127.0.0.1", port, f"http://127.0.0.1:{upstream.server_address[1]}")
    ingress = start_logged(command, {}, tmp_path / "ingress.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=60, process=ingress)
        json_type = {"Content-Type": "application/json"}
        with requests.Session() as client:
            url = f"http://127.0.0.1:{port}/invocations"
            statuses = [client.post(url, data=b"{}", timeout=30, headers=json_type).status_code for _ in range(10)]
        assert statuses == [200] * 10, statuses
    finally:
        stop_process_group(ingress)
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.slow
def test_every_form_mlflow_decodes_still_scores_through_the_ingress(serve):
    frame = pd.DataFrame(flights(50))
    by_json = serve.post(json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode())
    by_csv = serve.post(frame.to_csv(index=False).encode(), "text/csv")
    by_parquet = serve.post(parquet_bytes(frame), limits.PARQUET)
    for answer in (by_json, by_csv, by_parquet):
        assert answer.status_code == 200, answer.text[:300]
    probabilities = [[row["delay_probability"] for row in a.json()["predictions"]] for a in (by_json, by_parquet)]
    assert probabilities[0] == probabilities[1] and len(probabilities[0]) == 50
    assert len(by_csv.json()["predictions"]) == 50
    assert requests.get(f"{serve.url}/version", timeout=10).status_code == 200, "other paths pass through"


@pytest.mark.slow
def test_sigterm_to_the_serve_group_during_a_long_explained_request_stops_everything(registered_model, tmp_path):
    """The reported failure: SIGTERM while explaining many flights left the model server answering.

    The explain cap is lifted for this server so that one request keeps a worker busy for
    seconds; the group gets SIGTERM while it runs (as ``make serve``'s group does from a
    supervisor). Every process of the tree must be gone and both ports free once steps.serve exits.
    """
    many = flights(1_000) * (MAX_BATCH_ROWS // 1_000)  # explaining identical flights costs the same
    served = Serve(registered_model, tmp_path / "serve.log", {MAX_EXPLAIN_FLIGHTS_ENV: str(len(many))})
    pids = tree(served.process.pid)
    ports = [served.port] + [int(p) for pid in pids for p in re.findall(r" -p (\d+)", cmdline(pid))]
    assert len(ports) >= 2, f"the public port and the model server's: {ports}"
    body = json.dumps({"dataframe_records": many, "params": {"explain": True}}).encode()
    outcome: dict = {}

    def explain() -> None:
        try:
            outcome["answer"] = served.post(body)
        except requests.RequestException as err:
            outcome["error"] = err

    request = threading.Thread(target=explain, daemon=True)
    request.start()
    model_server = served.model_server_pids()
    start_ticks = cpu_ticks(model_server)
    deadline = time.monotonic() + 60
    while cpu_ticks(model_server) - start_ticks < 300 and time.monotonic() < deadline:  # 3 s of CPU on it
        time.sleep(0.1)
    assert request.is_alive(), "the explained request must still be running when the stop signal arrives"
    try:
        os.killpg(served.process.pid, signal.SIGTERM)
        served.process.wait(timeout=60)
        alive = [pid for pid in pids if is_alive(pid)]
        assert not alive, f"still running after steps.serve exited: {[cmdline(p) for p in alive]}"
        assert not group_members(served.process.pid)
        for port in ports:
            assert port_is_free(port), f"port {port} still held after the stop"
        assert "Stopped." in served.log.read_text()
    finally:
        stop_process_group(served.process)
    request.join(timeout=60)
    assert "answer" not in outcome or outcome["answer"].status_code != 200, "the stopped request was not answered"


def cpu_ticks(pids: list[int]) -> int:
    """User + system CPU ticks of the live ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def is_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_the_model_image_entrypoint_puts_the_ingress_in_front_and_stops_whole(registered_model, tmp_path):
    """The Dockerfile's ``model`` stage, run outside Docker: its ENTRYPOINT and ENV against the model directory.

    Rebound as in test_image: the model path and MLflow's inference port; and here the ingress's
    public port (8080 in the image) and PYTHONPATH (/opt/skyprophet in the image: the checkout).
    A SIGTERM to the entrypoint alone (what ``docker stop`` sends) stops MLflow's processes too.
    """
    stage = dict(stages(instructions(PROJECT_ROOT / "Dockerfile"))["model"])
    entrypoint = json.loads(stage["ENTRYPOINT"])
    image_env = dict(re.findall(r"(\w+)=(\S+)", stage["ENV"]))
    assert image_env["DISABLE_NGINX"] == "true" and image_env["UVICORN_HOST"] == "127.0.0.1", image_env
    assert stage["COPY"] == "ingress/ /opt/skyprophet/ingress/" and image_env["PYTHONPATH"] == "/opt/skyprophet"
    assert entrypoint[:3] == ["python", "-m", "ingress.run"] and "C._serve(" in entrypoint[-1], entrypoint
    model_dir = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "artifacts", "download", "-u", registered_model["model_uri"]]
        + ["-d", str(model_dir)],
        env=process_env(registered_model["env"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    port, inference_port = free_port(), free_port()
    command = [part.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{inference_port}") for part in entrypoint]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[-1] = command[-1].replace(
        "C._serve(",
        f"C.MODEL_PATH = {str(model_dir)!r}; C.DEFAULT_INFERENCE_SERVER_PORT = {inference_port}; C._serve(",
    )
    command[0] = command[command.index("--") + 1] = sys.executable
    env = {**image_env, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_ENV_CREATION": "True"}
    env["MLFLOW_MODELS_WORKERS"] = "1"
    with open(tmp_path / "entrypoint.log", "w") as log:
        process = subprocess.Popen(
            command, env=process_env(env), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", timeout=120, process=process)
        pids = tree(process.pid)
        bomb = parquet_bytes(pd.DataFrame([GOOD] * 200_000))
        answer = requests.post(f"{url}/invocations", data=bomb, headers={"Content-Type": limits.PARQUET}, timeout=60)
        assert answer.status_code == 413 and "SKYPROPHET_MAX_ROWS" in answer.json()["message"], answer.text[:300]
        good = json.dumps({"dataframe_records": [GOOD]})
        answer = requests.post(f"{url}/invocations", data=good, headers={"Content-Type": limits.JSON}, timeout=60)
        assert answer.status_code == 200, answer.text[:300]
        process.send_signal(signal.SIGTERM)  # the entrypoint alone, as `docker stop` does
        process.wait(timeout=60)
        alive = [pid for pid in pids if is_alive(pid)]
        assert not alive, f"still running after the entrypoint exited: {[cmdline(p) for p in alive]}"
        assert port_is_free(port) and port_is_free(inference_port)
    finally:
        stop_process_group(process)
