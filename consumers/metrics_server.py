"""The service's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/metrics``: Prometheus text exposition of :class:`stream.metrics.ServiceMetrics`.
- ``/healthz``: 200 while the processing loop is alive (it ticked within
  ``stall_after_s``) and every registered health check passes (the consumer-group
  watchdog: a loop that ticks outside its group is not healthy), 503 with the reason
  otherwise. A liveness probe restarts a stuck process.
- ``/readyz``: 200 once state is loaded and partitions are assigned, 503 before
  (and while shutting down). A readiness probe keeps traffic and rollouts waiting.

It runs in a daemon thread so a slow scrape never blocks the processing loop.

Example:

>>> from stream.metrics import ServiceMetrics
>>> server = MetricsServer(ServiceMetrics(), host="127.0.0.1", port=0)
>>> server.start()
>>> import urllib.request
>>> urllib.request.urlopen(server.url + "/healthz").status
200
>>> server.stop()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from stream.metrics import ServiceMetrics


class MetricsServer:
    """Serves metrics and health probes for one service process."""

    def __init__(self, metrics: ServiceMetrics, *, host: str = "0.0.0.0", port: int = 9108,
                 stall_after_s: float = 120.0) -> None:
        self.metrics = metrics
        self.stall_after_s = stall_after_s
        self.ready = False
        self._last_tick = time.monotonic()
        self._checks: list[Callable[[], str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, server.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    problem = server.problem()
                    self._reply(503 if problem else 200, f"{problem}\n".encode() if problem else b"ok\n")
                elif path == "/readyz":
                    self._reply(200 if server.ready else 503, b"ready\n" if server.ready else b"not ready\n")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz, /readyz\n")

            def _reply(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence access logs
                return

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def tick(self) -> None:
        """Called by the processing loop on every iteration (liveness)."""
        self._last_tick = time.monotonic()

    def add_health_check(self, check: Callable[[], str | None]) -> None:
        """Register ``check() -> None`` (healthy) or a reason string (``/healthz`` then answers 503)."""
        self._checks.append(check)

    def problem(self) -> str | None:
        """Why the process is not healthy, or None."""
        if time.monotonic() - self._last_tick >= self.stall_after_s:
            return "stalled: the processing loop has not ticked for %.0f s" % (time.monotonic() - self._last_tick)
        for check in self._checks:
            reason = check()
            if reason:
                return reason
        return None

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
