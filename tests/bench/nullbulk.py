"""A null `_bulk` endpoint of the benchmark's own: as fast as a Python server can be, so the
agent's cost is what is measured, not Elasticsearch's.

HTTP/1.1 keep-alive, one thread per connection, bodies read with recv_into a reused buffer and
counted (NDJSON lines / 2 = documents). Every `_bulk` is answered as the real node answers the
agent's filtered request when all is well: `{"errors":false,"items":[...]}` with one
`{"create":{"status":201}}` per document (the agent checks there is one item per document and
parses them, so that cost is measured). The template install the agent
does at start gets plausible answers: no ILM (404), no template yet (404), PUT acknowledged.
"""

from __future__ import annotations

import functools
import socket
import threading
import time

_HEADERS = b"HTTP/1.1 %d %s\r\nX-Elastic-Product: Elasticsearch\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
_CREATED = b'{"create":{"status":201}}'
_NOT_FOUND = b'{"error":{"root_cause":[],"type":"resource_not_found_exception","reason":"not found"},"status":404}'
_ACK = b'{"acknowledged":true}'


def _response(status: int, body: bytes, head: bool = False) -> bytes:
    reason = {200: b"OK", 404: b"Not Found"}[status]
    return (_HEADERS % (status, reason, len(body))) + (b"" if head else body)


@functools.lru_cache(maxsize=64)  # batches cut by max_docs or max_bytes repeat the same few sizes
def bulk_response(docs: int) -> bytes:
    return _response(200, b'{"errors":false,"items":[' + b",".join([_CREATED] * docs) + b"]}")


class NullBulk:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.url = "http://%s:%d" % self.sock.getsockname()
        self.docs = 0
        self.bytes = 0
        self.requests = 0
        self.first_bulk_at: float | None = None
        self.last_bulk_at: float | None = None
        self.timeline: list[tuple[float, int]] = []  # (monotonic time, documents so far) per bulk
        self.other: list[str] = []  # non-bulk requests, for the report
        self._lock = threading.Lock()
        self._stop = False

    def start(self) -> NullBulk:
        threading.Thread(target=self._accept, name="nullbulk-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        with self._lock:
            self.docs = self.bytes = self.requests = 0
            self.first_bulk_at = self.last_bulk_at = None
            self.timeline = []

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), name="nullbulk-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray(8 * 1024 * 1024)
        view = memoryview(buf)
        pending = b""
        try:
            while True:
                # Headers: read until the blank line; what follows is the start of the body.
                while b"\r\n\r\n" not in pending:
                    got = conn.recv(65536)
                    if not got:
                        return
                    pending += got
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = 0
                for h in lines[1:]:
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                # The body: what came with the headers, then straight into the reused buffer.
                have = min(len(pending), length)
                if length > len(buf):
                    buf = bytearray(length)
                    view = memoryview(buf)
                view[:have] = pending[:have]
                pending = pending[have:]
                while have < length:
                    n = conn.recv_into(view[have:length])
                    if not n:
                        return
                    have += n
                conn.sendall(self._answer(method, path, buf, length))
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, method: bytes, path: bytes, buf: bytearray, length: int) -> bytes:
        p = path.split(b"?", 1)[0]
        if p.endswith(b"/_bulk"):
            n = buf.count(b"\n", 0, length) // 2
            now = time.monotonic()
            with self._lock:
                self.docs += n
                self.bytes += length
                self.requests += 1
                if self.first_bulk_at is None:
                    self.first_bulk_at = now
                self.last_bulk_at = now
                self.timeline.append((now, self.docs))
            return bulk_response(n)
        self.other.append(f"{method.decode()} {p.decode()}")
        head = method == b"HEAD"
        if p.startswith(b"/_ilm") or (method in (b"GET", b"HEAD") and p.startswith(b"/_index_template")):
            return _response(404, _NOT_FOUND, head)
        if method in (b"PUT", b"POST"):
            return _response(200, _ACK)
        if head:  # index exists? no
            return _response(404, _NOT_FOUND, True)
        return _response(200, b"{}")
