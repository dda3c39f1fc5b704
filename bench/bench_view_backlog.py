"""`sari-data view` under many simultaneous connections: listen backlog 5 (the stdlib default) vs ours.

    PYTHONPATH=. python bench/bench_view_backlog.py [--clients 200] [--repeats 3]

A small workspace, one viewer per backlog on 127.0.0.1; `--clients` threads each open a new
connection at the same moment and fetch the page (/). A connection that finds the listen queue full
has its SYN dropped and retried by the kernel a second later, which is what the p90 shows. Prints
p50 / p90 / max seconds per request for both backlogs and the p90 ratio, over `--repeats` rounds.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
from pathlib import Path

from corpus.store import Workspace
from corpus.testing import dummy_item
from sari_data.view.server import ViewServer


def round_trip_times(server: ViewServer, clients: int) -> list[float]:
    host, port = server.server_address[:2]
    start = threading.Barrier(clients)
    times: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        start.wait()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
        conn.getresponse().read()
        conn.close()
        with lock:
            times.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def measure(root: Path, backlog: int, clients: int, repeats: int) -> list[float]:
    server = type("Viewer", (ViewServer,), {"request_queue_size": backlog})(root, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return [t for _ in range(repeats) for t in round_trip_times(server, clients)]
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with Workspace(tmp, create=True) as ws:
            ws.upsert([dummy_item(i) for i in range(200)])
        rows = {}
        for backlog in (5, ViewServer.request_queue_size):
            times = sorted(measure(Path(tmp), backlog, args.clients, args.repeats))
            rows[backlog] = (statistics.median(times), times[int(0.9 * (len(times) - 1))], times[-1])
    print(f"{args.clients} simultaneous connections x {args.repeats} rounds, seconds per request")
    print(f"{'backlog':>8} {'p50':>7} {'p90':>7} {'max':>7}")
    for backlog, (p50, p90, worst) in rows.items():
        print(f"{backlog:>8} {p50:7.3f} {p90:7.3f} {worst:7.3f}")
    (slow, fast) = rows.values()
    print(f"p90 ratio (backlog 5 / {ViewServer.request_queue_size}): {slow[1] / fast[1]:.1f}x")


if __name__ == "__main__":
    main()
