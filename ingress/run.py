"""``python -m ingress.run``: the limits (``ingress.limits``) on the public port, in front of a model server.

Two ways, one module:

- ``make serve`` (``steps.serve``) starts ``mlflow models serve`` on a private loopback port itself
  and this with ``--upstream`` pointing at it;
- the model image runs MLflow's own entrypoint under this (``-- python -c ...``): the model server
  is started as a child in its own process group, and stopped (the whole group, within
  ``--stop-seconds``) when this stops, or this stops when it exits.

Stopping must stop: a worker busy with a long request keeps running past SIGTERM (uvicorn waits
for it, and Python joins the request's thread at exit), so ``stop_groups`` waits for every process
of a group to be gone, not just its leader, and SIGKILLs what is left at the bound.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from ingress.limits import Ingress, Limits

STOP_SECONDS = 10.0


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(processes: list[subprocess.Popen], bound: float = STOP_SECONDS) -> None:
    """SIGTERM the process groups these leaders head; SIGKILL whatever of them is alive after ``bound`` s.

    Returns once no process of any group is alive (a leader that exits early no longer counts as
    done while its workers still hold the port).
    """
    for process in processes:
        _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for process in processes:
            process.poll()  # reap our own child so it does not linger as a zombie
        if not any(group_members(process.pid) for process in processes):
            return
        time.sleep(0.05)
    left = [pid for process in processes for pid in group_members(process.pid)]
    sys.stderr.write(f"stop: SIGKILL to {len(left)} process(es) still running after {bound:g} s: {left}\n")
    for process in processes:
        _signal_group(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait()
    deadline = time.monotonic() + 5
    while any(group_members(process.pid) for process in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for process in processes for pid in group_members(process.pid)]
    sys.stderr.write(f"stop: done {time.monotonic() - deadline + 5:.1f} s after SIGKILL; still there: {left}\n")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def server(upstream: str, host: str, port: int, limits: Limits) -> uvicorn.Server:
    """The ingress's uvicorn server: one process (the work is I/O), loop and parser picked by uvicorn."""
    config = uvicorn.Config(
        Ingress(upstream, limits),
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=2,
        server_header=False,  # the model server's own Server and Date headers are passed back
        date_header=False,
    )
    return uvicorn.Server(config)


def main(argv: list[str] | None = None) -> None:
    """Serve the ingress until SIGTERM/SIGINT (or, with a command, until the model server exits)."""
    parser = argparse.ArgumentParser(prog="python -m ingress.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="where clients connect")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--upstream", default="http://127.0.0.1:8000", help="the model server's URL")
    parser.add_argument("--stop-seconds", type=float, default=STOP_SECONDS, help="SIGKILL the model server after")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the model server's command (the image)")
    args = parser.parse_args(argv)
    limits = Limits.from_env()  # a bad value stops here, before anything starts
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    ingress = server(args.upstream, args.host, args.port, limits)
    upstream = subprocess.Popen(command, start_new_session=True) if command else None
    if upstream is not None:

        def watch() -> None:
            upstream.wait()
            ingress.should_exit = True  # the model server is gone: so is the ingress

        threading.Thread(target=watch, daemon=True).start()
    # uvicorn restores the handlers it found and raises the stop signal again once it has shut down:
    # ours turn that into an exception, so that the model server is stopped below before this exits.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _raise_stop)
    try:
        ingress.run()
    except Stopped:
        pass
    finally:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)  # a second signal must not cut the stop short
        if upstream is not None:
            stop_groups([upstream], args.stop_seconds)
    if upstream is not None and upstream.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
        raise SystemExit(upstream.returncode)


if __name__ == "__main__":
    main()
