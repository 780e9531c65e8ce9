"""Health rules, and the local HTTP endpoint: /healthz, /offsets, /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily

from agent import log, metrics
from agent.config import HealthConfig
from agent.offsets import FileOffset
from agent.spool import Status


# A client of the endpoint gets this long per read or write, and at most this many are served
# at once; more are closed at once. So slow or idle clients hold a few descriptors and threads,
# never the agent's: 80 idle connections under a low fd limit once made the registry write fail.
CONNECTION_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 8


def problems(cfg: HealthConfig, files: list[FileOffset], refused_since: float | None = None,
             refused_reason: str = "", stuck_for: float = 0.0, now: float | None = None,
             unlisted_dirs: dict[str, str] | None = None, waiting: dict[str, float] | None = None,
             last_error: str = "", spool: Status | None = None) -> list[str]:
    """Why the agent is unhealthy; empty when healthy. Each reason says what to look at."""
    now = time.time() if now is None else now
    out = []
    behind = [f for f in files if f.lag_bytes and f.oldest_unshipped_age_s > cfg.max_lag_age_s]
    if behind:
        worst = max(behind, key=lambda f: f.oldest_unshipped_age_s)
        out.append(f"{len(behind)} file(s) behind by more than {cfg.max_lag_age_s:.0f}s; worst {worst.path}: "
                   f"{worst.lag_bytes} bytes unshipped for {worst.oldest_unshipped_age_s:.0f}s")
    lost = [f for f in files if f.lost_bytes and f.lost_age_s is not None and f.lost_age_s <= cfg.lost_window_s]
    if lost:
        out.append(f"{sum(f.lost_bytes for f in lost)} bytes rotated away unread in the last "
                   f"{cfg.lost_window_s:.0f}s ({', '.join(sorted({f.path for f in lost}))})")
    unreadable = [f for f in files if f.state == "unreadable"]
    if unreadable:
        out.append(f"{len(unreadable)} file(s) cannot be read, retried on every rescan: {unreadable[0].path} "
                   f"({unreadable[0].reason})")
    waited = {p: now - since for p, since in (waiting or {}).items() if now - since > cfg.max_lag_age_s}
    if waited:
        worst = max(waited, key=waited.get)
        out.append(f"{len(waited)} file(s) waiting for a reader slot for more than {cfg.max_lag_age_s:.0f}s "
                   f"(reader.max_open_files); worst {log.shown(worst)}: {waited[worst]:.0f}s")
    if unlisted_dirs:
        first = min(unlisted_dirs)
        out.append(f"{len(unlisted_dirs)} directory(ies) cannot be listed, their files are not shipped: "
                   f"{first} ({unlisted_dirs[first]})")
    if refused_since is not None and now - refused_since > cfg.refused_for_s:
        out.append(f"Elasticsearch has refused writes for {now - refused_since:.0f}s: {refused_reason}")
    if stuck_for > cfg.max_lag_age_s:
        why = f"; last error: {last_error}" if last_error else ""
        out.append(f"no bulk request has succeeded for {stuck_for:.0f}s while documents wait{why}")
    if spool is not None and spool.segments and (spool.full or spool.oldest_age_s > cfg.max_lag_age_s):
        out.append(f"spool {'full' if spool.full else 'holds old data'}: {spool.bytes} of {spool.max_bytes} bytes "
                   f"in {spool.segments} segment(s), oldest {spool.oldest_age_s:.0f}s"
                   + ("; reading has stopped, rotation may now destroy unread logs" if spool.full else ""))
    return out


class _LagCollector:
    """Per-file lag, computed when Prometheus scrapes rather than on every read."""

    def __init__(self) -> None:
        self.files: Callable[[], list[FileOffset]] = list

    def collect(self):
        lag = GaugeMetricFamily("log_shipper_file_lag_bytes", "Bytes not yet acknowledged", labels=["path"])
        age = GaugeMetricFamily("log_shipper_file_oldest_unshipped_seconds", "Age of the oldest unshipped byte",
                                labels=["path"])
        for f in self.files():
            lag.add_metric([f.path], f.lag_bytes)
            age.add_metric([f.path], f.oldest_unshipped_age_s)
        yield lag
        yield age


_LAG = _LagCollector()
metrics.REGISTRY.register(_LAG)


class HealthServer:
    def __init__(self, cfg: HealthConfig, files: Callable[[], list[FileOffset]], reasons: Callable[[], list[str]],
                 spool: Callable[[], Status] | None = None):
        self.cfg = cfg
        self.files = files
        self.reasons = reasons
        self.spool = spool
        _LAG.files = files
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    why = server.reasons()
                    doc = {"healthy": not why, "reasons": why, "lost_bytes": sum(f.lost_bytes for f in server.files())}
                    if server.spool is not None:
                        doc["spool"] = server.spool()
                    body = orjson.dumps(doc)
                    self._send(503 if why else 200, "application/json", body)
                elif path == "/offsets":
                    self._send(200, "application/json", orjson.dumps([f.as_dict() for f in server.files()]))
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.REGISTRY))
                else:
                    self._send(404, "text/plain", b"try /healthz, /offsets or /metrics\n")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the agent's log for operators' events
                pass

        self.httpd = _CappedServer((cfg.host, cfg.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _CappedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; the rest are closed unserved."""

    daemon_threads = True

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.warned = False

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            if not self.warned:
                log.warn("health_busy", "health endpoint at its connection limit; closing new connections unserved",
                         limit=MAX_CONNECTIONS, hint="a local client holds connections open; find it with ss -tnp")
                self.warned = True
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
