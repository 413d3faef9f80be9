"""The demo web node: what the original lab's Express app answered, in stdlib Python.

`GET /` answers 200 JSON {"hello", "ip", "host", "tag", "id"} and an `x-backend-ip`
header (fields whose value is unset are absent, as in the original). `GET /healthz` is the
cheap path for probes. `POST /delay {"delay": ms}` slows every later request down.
No session store: probing this node costs it nothing. SIGTERM stops it gracefully.

Usage: python app.py [--bind ADDR] [--port 3000] [--tag T] [--id ID] [--status CODE] [--flap]
"""

from __future__ import annotations

import argparse
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


class Server(ThreadingHTTPServer):
    daemon_threads = True

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
    args = parser.parse_args()
    node = Node(args.tag, args.node_id, args.host, args.status, args.flap)
    server = Server((args.bind, args.port), make_handler(node))

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {args.bind}:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
