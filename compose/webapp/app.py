"""The demo web node: what the original lab's Express app answered, in stdlib Python.

`GET /` answers 200 JSON {"hello", "ip", "host", "tag", "id"} and an `x-backend-ip`
header (fields whose value is unset are absent, as in the original). `GET /healthz` is the
cheap path for probes. `POST /delay {"delay": ms}` slows every later request down.
`POST /orders` counts an order (a side effect, for load tests of non-idempotent requests)
and answers 201 with this node's count. `--fail-check-first SECONDS`: on SIGTERM, answer
404 to `/healthz` for that long while serving as usual, then stop as usual (the other
way to leave a load balancer, measured against the default in bench/drain.py).
No session store: probing this node costs it nothing. SIGTERM stops it gracefully.

Usage: python app.py [--bind ADDR] [--port 3000] [--tag T] [--id ID] [--status CODE] [--flap]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Node:
    def __init__(
        self, tag: str | None, node_id: str | None, host: str, status: int, flap: bool
    ) -> None:
        self.tag = tag
        self.node_id = node_id
        self.host = host
        self._status = status
        self.flap = flap
        self.answers = 0
        self.orders = 0
        self.leaving = False  # SIGTERM seen, with --fail-check-first: /healthz answers 404
        self.delay_seconds = 0.0
        self.lock = threading.Lock()

    @property
    def status(self) -> int:
        """The configured status; with --flap, every other answer is a 500."""
        with self.lock:
            self.answers += 1
            failing = self.flap and self.answers % 2 == 0
        return 500 if failing else self._status


def make_handler(node: Node) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "poller-demo-webapp"
        # Keep idle connections longer than HAProxy keeps its idle ones (pool-purge-delay
        # 5s), so the server never closes one HAProxy is about to reuse.
        timeout = IDLE_SECONDS

        def setup(self) -> None:
            super().setup()
            with CONNECTIONS_LOCK:
                CONNECTIONS[self.connection] = False  # idle

        def finish(self) -> None:
            with CONNECTIONS_LOCK:
                CONNECTIONS.pop(self.connection, None)
            super().finish()

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            finally:
                with CONNECTIONS_LOCK:
                    if self.connection in CONNECTIONS:
                        CONNECTIONS[self.connection] = False

        def parse_request(self) -> bool:
            with CONNECTIONS_LOCK:
                CONNECTIONS[self.connection] = True  # busy from here to the response
            return super().parse_request()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would drown the demo's output

        def _send(self, status: int, payload: dict[str, object]) -> None:
            body = json.dumps(payload).encode() + b"\n"
            ip = self.connection.getsockname()[0]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-backend-ip", ip)
            # Headers and body leave in one write: a health checker that reads the status
            # line and resets the connection then never interrupts a half-sent response.
            if self.command != "HEAD":
                self._headers_buffer.append(b"\r\n" + body)
                self.flush_headers()
            else:
                self.end_headers()

        def do_GET(self) -> None:
            if node.delay_seconds:
                time.sleep(node.delay_seconds)
            status = node.status
            if self.path == "/healthz":
                if node.leaving:
                    status = 404
                self._send(status, {"status": "ok" if status < 400 else "failing"})
                return
            payload: dict[str, object] = {"hello": "world!", "ip": self.connection.getsockname()[0]}
            payload["host"] = node.host
            if node.tag:
                payload["tag"] = node.tag
            if node.node_id:
                payload["id"] = node.node_id
            self._send(status, payload)

        do_HEAD = do_GET

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, 4096))
            if self.path == "/orders":
                with node.lock:
                    node.orders += 1
                    count = node.orders
                self._send(201, {"orders": count, "host": node.host})
                return
            if self.path != "/delay":
                self._send(404, {"error": "not found"})
                return
            try:
                node.delay_seconds = max(0.0, float(json.loads(raw)["delay"]) / 1000.0)
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": 'expected {"delay": ms}'})
                return
            self._send(200, {"delay": node.delay_seconds * 1000.0})

    return Handler


IDLE_SECONDS = 30.0
# After SIGTERM the listener is closed at once; idle keep-alive connections are closed only
# after this grace, by when the load balancer's checks have taken the node out of rotation.
CLOSE_IDLE_AFTER_SECONDS = 1.5
STOP_DEADLINE_SECONDS = 10.0
CONNECTIONS: dict[socket.socket, bool] = {}  # open connection -> busy with a request
CONNECTIONS_LOCK = threading.Lock()


def close_idle_connections() -> None:
    with CONNECTIONS_LOCK:
        idle = [conn for conn, busy in CONNECTIONS.items() if not busy]
    for conn in idle:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


class Server(ThreadingHTTPServer):
    # A graceful stop: requests in flight are finished (server_close joins their threads).
    daemon_threads = False
    block_on_close = True
    # socketserver listens with a backlog of 5: a burst of connects (HAProxy under load, or
    # one process serving many addresses) would see SYNs dropped and retried after 1 s.
    # Node's (Express's) default is 511.
    request_queue_size = 511

    def handle_error(self, request: object, client_address: object) -> None:
        # Health checkers (HAProxy's included) close with a reset once they have the
        # status: that is not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=os.environ.get("BIND", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--tag", default=os.environ.get("TAG"))
    parser.add_argument("--id", dest="node_id", default=os.environ.get("NODE_ID"))
    parser.add_argument("--host", default=os.environ.get("HOSTNAME", socket.gethostname()))
    parser.add_argument("--status", type=int, default=200, help="status every GET answers")
    parser.add_argument("--flap", action="store_true", help="answer 500 to every other GET")
    parser.add_argument(
        "--fail-check-first",
        type=float,
        default=float(os.environ.get("FAIL_CHECK_FIRST", "0")),
        metavar="SECONDS",
        help="on SIGTERM, answer 404 to /healthz this long before stopping",
    )
    args = parser.parse_args()
    node = Node(args.tag, args.node_id, args.host, args.status, args.flap)
    server = Server((args.bind, args.port), make_handler(node))

    def stop(signum: int, frame: object) -> None:
        if args.fail_check_first and not node.leaving:
            node.leaving = True  # the check fails now; the listener closes later
            threading.Timer(args.fail_check_first, stop, (signum, frame)).start()
            return
        # Stop accepting at once (new connections are refused, so a load balancer retries
        # elsewhere), keep serving open connections for a grace, then close them as they
        # fall idle. (Answering `Connection: close` instead cost client errors through
        # HAProxy under load.)
        with contextlib.suppress(OSError):
            # Refuse new connections now, not when the serving loop next looks up: a
            # busy node would otherwise keep accepting for a while.
            server.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {args.bind}:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.socket.close()  # refuse new connections from now on
    if CONNECTIONS:
        time.sleep(CLOSE_IDLE_AFTER_SECONDS)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
        while CONNECTIONS and time.monotonic() < deadline:
            close_idle_connections()  # requests in flight finish first
            time.sleep(0.05)
    server.server_close()


if __name__ == "__main__":
    main()
