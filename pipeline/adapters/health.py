"""The charging worker's HTTP endpoints: /metrics, liveness and readiness.

* `/livez`: the process answers and its charging loop is alive (a thread that died means a
  restart helps). Redis or the broker being away does not fail it: a restart would not
  bring them back, and the worker waits them out.
* `/readyz` (and `/health`): Redis answers a ping and the broker answers a metadata request,
  each within 2 s; 503 with what is wrong otherwise. The answer is kept for one second so a
  probe storm does not become a Redis or broker storm.
* anything else: the JSON error of the API, `{"error": ..., "status": ...}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
KEEP_ANSWER_S = 1.0

Check = Callable[[], object]  # raises (any exception) when the dependency cannot be used


class Readiness:
    """Named dependency checks, run together at most once per KEEP_ANSWER_S."""

    def __init__(self, checks: dict[str, Check]):
        self.checks = checks
        self._lock = threading.Lock()
        self._at = 0.0
        self._answer: dict[str, str] = {}

    def answer(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._at > KEEP_ANSWER_S:
                out = {}
                for name, check in self.checks.items():
                    try:
                        check()
                        out[name] = "ok"
                    except Exception as exc:  # any failure is the answer, not a crash
                        out[name] = f"{type(exc).__name__}: {exc}"[:300]
                self._answer, self._at = out, time.monotonic()
            return dict(self._answer)


def serve_worker(
    registry: CollectorRegistry,
    port: int,
    host: str,
    readiness: Readiness,
    alive: Callable[[], bool],
) -> ThreadingHTTPServer | None:
    """Serve /metrics, /livez, /readyz and /health on `host:port` from a daemon thread."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                ok = alive()
                self._json(200 if ok else 503, {"status": "ok" if ok else "dead", "charging_loop": ok})
            elif path in ("/readyz", "/health"):
                checks = readiness.answer()
                ok = all(v == "ok" for v in checks.values())
                self._json(200 if ok else 503, {"status": "ok" if ok else "unavailable", **checks})
            else:
                self._json(404, {"error": f"no such path: {path}", "status": 404})

        def do_POST(self) -> None:
            self._json(405, {"error": f"{self.command} is not allowed here", "status": 405})

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds are not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
