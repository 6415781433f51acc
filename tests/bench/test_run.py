"""The bench's connection-split row counts real sockets of a real child process group."""

import socket
import subprocess
import sys
import time

from bench.run import connections_per_process
from skyprophet.ops.processes import free_port, stop_process_group

HOLDER = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
held = [server.accept()[0] for _ in range(3)]
time.sleep(60)
"""


def test_connections_per_process_counts_what_a_server_process_holds():
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(port)], start_new_session=True)
    clients = []
    try:
        deadline = time.monotonic() + 10
        while len(clients) < 3 and time.monotonic() < deadline:
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                time.sleep(0.05)
        counts = []
        while counts != [3] and time.monotonic() < deadline:  # until the holder has accepted all three
            counts = connections_per_process(holder.pid, port)
            time.sleep(0.05)
        assert counts == [3]
        assert connections_per_process(holder.pid, free_port()) == [], "other ports are not counted"
    finally:
        for client in clients:
            client.close()
        stop_process_group(holder)
