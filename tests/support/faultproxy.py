"""An HTTP-aware TCP proxy in front of the real Elasticsearch node that injects faults on demand.

Tests switch modes at run time from the test thread; every request is otherwise forwarded to
the real node, so whatever is not faulted really happens (documents really get indexed).

    proxy = FaultProxy(es_node.url).start()
    proxy.status(429, n=2)        # the next two /_bulk requests get a 429, then pass through
    proxy.item_429(every_nth=3)   # every third bulk item is rejected, the rest really indexed
    proxy.refuse()                # connect() fails with ECONNREFUSED until pass_through()

Scripted answers play a hostile (or broken) Elasticsearch on /_bulk:

    proxy.answer(b"<html>...</html>", content_type="text/html")  # answered, not forwarded
    proxy.mangle(lambda result: {**result, "items": []})       # forwarded, then the answer rewritten
    proxy.huge(400 * 1024 * 1024)   # a 400 MB answer, streamed (never held in memory)
    proxy.trickle(1.0)              # the answer one byte per second, headers included
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Headers that describe one hop, not the message: the proxy sets its own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "content-length", "host"}
PRODUCT_HEADERS = [("X-Elastic-Product", "Elasticsearch"), ("content-type", "application/json")]
REJECTED_REASON = ("rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, "
                   "all_bytes=0, coordinating_operation_bytes=1048576, max_coordinating_and_primary_bytes=53687091]")


def _es_error(status: int, type_: str, reason: str, **extra: object) -> dict:
    """The shape Elasticsearch uses for a whole-request failure."""
    cause = {"type": type_, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


# Bodies the real node sends for these statuses (413 comes from the HTTP layer with no body at all).
ERROR_BODIES: dict[int, dict | None] = {
    429: _es_error(429, "es_rejected_execution_exception", REJECTED_REASON),
    401: _es_error(401, "security_exception", "missing authentication credentials for REST request [/_bulk]",
                   header={"WWW-Authenticate": ['Basic realm="security" charset="UTF-8"', "ApiKey"]}),
    403: _es_error(403, "cluster_block_exception", "index [logs] blocked by: [FORBIDDEN/5/index read-only (api)];"),
    413: None,
    503: _es_error(503, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no master];"),
}


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    close_after: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def forward_headers(self, *also_drop: str) -> dict[str, str]:
        drop = HOP_BY_HOP | set(also_drop)
        return {k: v for k, v in self.headers if k.lower() not in drop}


@dataclass
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    head_length: str | None = None  # a HEAD answer announces the length of a body it does not carry

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in HOP_BY_HOP]
        lines.append(f"content-length: {self.head_length if self.head_length is not None else len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class _Fault:
    kind: str  # "drop" | "status" | "item_429" | "answer" | "mangle" | "huge" | "trickle"
    remaining: int | None  # None: until the mode is changed
    paths: tuple[str, ...] | None  # None: every path
    code: int = 0
    body: bytes = b""
    fraction: float | None = None
    every_nth: int | None = None
    index_prefix: str | None = None  # item_403: only items into indices with this prefix
    content_type: str = "application/json"
    transform: Callable[[dict], object] | None = None
    size: int = 0
    interval: float = 0.0

    def matches(self, path: str) -> bool:
        return self.paths is None or any(path == p or path.endswith(p) for p in self.paths)

    def rejects(self, i: int, meta: dict) -> bool:
        if self.index_prefix is not None:
            return str(meta.get("_index", "")).startswith(self.index_prefix)
        if self.every_nth:
            return (i + 1) % self.every_nth == 0
        # Spread floor(len * fraction) rejections evenly and deterministically over the items.
        assert self.fraction is not None
        return int((i + 1) * self.fraction) > int(i * self.fraction)


@dataclass
class FaultProxy:
    upstream_url: str
    port: int = 0
    requests: Counter = field(default_factory=Counter)  # path (no query) -> requests read
    connections: int = 0  # client connections accepted; lets tests see keep-alive at work
    rejected_items: int = 0  # bulk items answered with a spliced-in 429

    def __post_init__(self) -> None:
        u = urllib.parse.urlsplit(self.upstream_url)
        self._upstream_addr = (u.hostname or "127.0.0.1", u.port or 80)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._fault: _Fault | None = None
        self._delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control, called from the test thread ---------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()

    def pass_through(self) -> None:
        """Clear every fault, latency included, and listen again after refuse()."""
        with self._lock:
            self._fault, self._delay = None, 0.0
        if self._listener is None and self.port and not self._stopping.is_set():
            self._listen()

    def refuse(self) -> None:
        """Like a node that is down: new connects get ECONNREFUSED, open connections are cut."""
        self._close_listener()

    def drop(self, n: int | None = None, paths: tuple[str, ...] | None = None) -> None:
        """Read the next n requests (None: all) and close the connection without any response."""
        self._set(_Fault("drop", n, paths))

    def latency(self, seconds: float) -> None:
        """Delay every response; combines with the other faults, cleared by pass_through()."""
        with self._lock:
            self._delay = seconds

    def status(self, code: int, n: int | None = None, body: dict | str | bytes | None = None,
               paths: tuple[str, ...] | None = ("/_bulk",)) -> None:
        """Answer the next n matching requests with `code` and an Elasticsearch error body, unforwarded."""
        if body is None:
            default = ERROR_BODIES.get(code, _es_error(code, "exception", f"injected fault {code}"))
            body = b"" if default is None else json.dumps(default)
        raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self._set(_Fault("status", n, paths, code=code, body=raw))

    def item_429(self, fraction: float | None = None, every_nth: int | None = None, n: int | None = None) -> None:
        """For the next n bulk requests, reject some items with a per-item 429 and index the rest."""
        if (fraction is None) == (every_nth is None):
            raise ValueError("give exactly one of fraction or every_nth")
        self._set(_Fault("item_429", n, ("/_bulk",), fraction=fraction, every_nth=every_nth))

    def item_403(self, index_prefix: str) -> None:
        """Bulk items into indices starting with `index_prefix` get a per-item 403 (an index write
        block, as a full disk sets); items into other indices really get indexed."""
        self._set(_Fault("item_429", None, ("/_bulk",), code=403, index_prefix=index_prefix))

    def answer(self, body: bytes, status: int = 200, content_type: str = "application/json",
               n: int | None = None) -> None:
        """Answer the next n bulk requests with exactly `body` (and the product header), unforwarded."""
        self._set(_Fault("answer", n, ("/_bulk",), code=status, body=body, content_type=content_type))

    def mangle(self, transform: Callable[[dict], object], n: int | None = None) -> None:
        """Forward the next n bulk requests (documents really get indexed), then answer with
        `transform(the node's parsed answer)` as JSON instead of the node's answer."""
        self._set(_Fault("mangle", n, ("/_bulk",), transform=transform))

    def huge(self, size: int, chunked: bool = False, n: int | None = None) -> None:
        """Answer the next n bulk requests with a `size`-byte JSON answer, streamed, unforwarded:
        announced by its content-length, or (chunked) with no length up front."""
        self._set(_Fault("huge_chunked" if chunked else "huge", n, ("/_bulk",), size=size))

    def trickle(self, interval: float, n: int | None = None) -> None:
        """Answer the next n bulk requests one byte every `interval` seconds, unforwarded."""
        self._set(_Fault("trickle", n, ("/_bulk",), interval=interval))

    def seen(self, suffix: str = "/_bulk") -> int:
        """Requests seen on every path ending with `suffix` (any index's _bulk, by default)."""
        with self._lock:
            return sum(c for p, c in self.requests.items() if p.endswith(suffix))

    # --- plumbing ---------------------------------------------------------------------------

    def _set(self, fault: _Fault) -> None:
        with self._lock:
            self._fault = fault

    def _take(self, path: str) -> _Fault | None:
        """The fault to apply to this request, spending one of its n."""
        with self._lock:
            self.requests[path] += 1
            f = self._fault
            if f is None or not f.matches(path) or f.remaining == 0:
                return None
            if f.remaining is not None:
                f.remaining -= 1
            return f

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind the same port after refuse()
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self.port, self._listener = s.getsockname()[1], s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True, name=f"faultproxy-{self.port}").start()

    def _close_listener(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
            except OSError:
                pass
            s.close()
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)  # the serving thread wakes up and closes it
            except OSError:
                pass

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                req = _read_request(rfile)
                if req is None:
                    return
                fault = self._take(req.path)
                if fault is not None and fault.kind == "drop":
                    return  # the request was read; closing now is a mid-request drop
                if fault is not None and fault.kind in ("huge", "huge_chunked", "trickle"):
                    self._stream(conn, fault)
                    return
                if fault is not None and fault.kind == "status":
                    headers = list(PRODUCT_HEADERS)
                    if fault.code == 401:
                        headers.append(("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"'))
                    resp = _Response(fault.code, http.client.responses.get(fault.code, ""), headers, fault.body)
                elif fault is not None and fault.kind == "item_429":
                    resp = self._bulk_with_rejections(req, fault)
                elif fault is not None and fault.kind == "answer":
                    headers = [PRODUCT_HEADERS[0], ("content-type", fault.content_type)]
                    resp = _Response(fault.code, http.client.responses.get(fault.code, ""), headers, fault.body)
                elif fault is not None and fault.kind == "mangle":
                    resp = self._upstream(req.method, req.target, req.forward_headers("accept-encoding"), req.body)
                    if resp.status == 200:
                        assert fault.transform is not None
                        resp.body = json.dumps(fault.transform(json.loads(resp.body))).encode()
                else:
                    resp = self._upstream(req.method, req.target, req.forward_headers(), req.body)
                if self._delay:
                    self._stopping.wait(self._delay)
                conn.sendall(resp.encode())
                if req.close_after:
                    return
        except (OSError, http.client.HTTPException):
            return  # cut by refuse()/stop(), the client went away, or the node is down: close
        finally:
            with self._lock:
                self._clients.discard(conn)
            rfile.close()
            conn.close()

    def _stream(self, conn: socket.socket, fault: _Fault) -> None:
        """A huge answer as fast as the client takes it, or any answer a byte at a time; until the
        client cuts the connection (the send fails) or the proxy stops."""
        if fault.kind in ("huge", "huge_chunked"):
            chunked = fault.kind == "huge_chunked"
            if chunked:
                head = [f"{k}: {v}" for k, v in PRODUCT_HEADERS] + ["transfer-encoding: chunked"]
                conn.sendall(("HTTP/1.1 200 OK\r\n" + "\r\n".join(head) + "\r\n\r\n").encode())
            else:
                conn.sendall(_Response(200, "OK", list(PRODUCT_HEADERS), b"", str(fault.size)).encode())

            def frame(data: bytes) -> bytes:
                return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

            item = b'{"create":{"status":201}},'
            chunk = frame(item * (65536 // len(item)))
            conn.sendall(frame(b'{"errors":false,"items":['))
            for _ in range(fault.size // len(chunk)):
                if self._stopping.is_set():
                    return
                conn.sendall(chunk)
            return
        body = b'{"errors":false,"items":[]}'
        out = _Response(200, "OK", list(PRODUCT_HEADERS), body).encode()
        for i in range(len(out)):
            conn.sendall(out[i:i + 1])
            if self._stopping.wait(fault.interval):
                return

    def _upstream(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        # A fresh upstream connection per request: no stale keep-alive to retry, hence no duplicates.
        up = http.client.HTTPConnection(*self._upstream_addr, timeout=300)
        try:
            up.request(method, target, body=body or None, headers=headers)
            r = up.getresponse()
            data = r.read()  # http.client undoes chunked transfer coding; we re-send with a length
            head_length = r.getheader("content-length") if method == "HEAD" else None
            return _Response(r.status, r.reason, r.getheaders(), data, head_length)
        finally:
            up.close()

    def _bulk_with_rejections(self, req: _Request, fault: _Fault) -> _Response:
        body = req.body
        if req.header("content-encoding").lower() == "gzip":
            body = gzip.decompress(body)  # forwarded uncompressed, so content-encoding is dropped below
        items = _split_bulk(body)
        rejected = {i for i, (_, meta, _) in enumerate(items) if fault.rejects(i, meta)}
        kept = b"".join(raw for i, (_, _, raw) in enumerate(items) if i not in rejected)
        # Merging needs the full item list: no filter_path, and a plain (not gzip) response to parse.
        parts = urllib.parse.urlsplit(req.target)
        query = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "filter_path"])
        target = parts.path + (f"?{query}" if query else "")
        if kept:
            resp = self._upstream(req.method, target, req.forward_headers("content-encoding", "accept-encoding"), kept)
            if resp.status != 200:
                return resp  # the whole request failed: there are no items to splice into
            result = json.loads(resp.body)
        else:
            resp, result = _Response(200, "OK", list(PRODUCT_HEADERS), b""), {"took": 0, "errors": False, "items": []}
        forwarded = iter(result["items"])
        path_index = parts.path.strip("/").split("/")[0] if parts.path.strip("/") != "_bulk" else None
        merged = []
        for i, (op, meta, _) in enumerate(items):
            if i not in rejected:
                merged.append(next(forwarded))
                continue
            code = fault.code or 429
            error = ({"type": "es_rejected_execution_exception", "reason": REJECTED_REASON} if code == 429 else
                     {"type": "cluster_block_exception", "reason": "index blocked by: [FORBIDDEN/8/index write (api)];"})
            merged.append({op: {"_index": meta.get("_index", path_index), "_id": meta.get("_id"),
                                "status": code, "error": error}})
        result["errors"] = bool(result["errors"] or rejected)
        result["items"] = merged
        with self._lock:
            self.rejected_items += len(rejected)
        resp.body = json.dumps(result).encode()
        return resp


def _read_request(rfile) -> _Request | None:
    """One HTTP/1.1 request off a keep-alive connection; None when the client closed it."""
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):  # stray CRLF between requests is allowed
        line = rfile.readline(65537)
    if not line:
        return None
    method, target, version = line.decode("latin-1").split()
    msg = http.client.parse_headers(rfile)
    headers = list(msg.items())
    if msg.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(rfile)
    else:
        length = int(msg.get("content-length", 0))
        body = rfile.read(length)
        if len(body) != length:
            raise ConnectionError("client closed mid-body")
    conn_header = msg.get("connection", "").lower()
    close_after = conn_header == "close" or (version == "HTTP/1.0" and conn_header != "keep-alive")
    return _Request(method, target, headers, body, close_after)


def _read_chunked(rfile) -> bytes:
    body = bytearray()
    while size := int(rfile.readline().split(b";")[0], 16):
        body += rfile.read(size)
        rfile.readline()
    while rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return bytes(body)


def _split_bulk(body: bytes) -> list[tuple[str, dict, bytes]]:
    """NDJSON bulk body -> (op, action metadata, raw lines); delete is the one op without a source line."""
    lines = [line + b"\n" for line in body.split(b"\n") if line.strip()]
    items, i = [], 0
    while i < len(lines):
        ((op, meta),) = json.loads(lines[i]).items()
        width = 1 if op == "delete" else 2
        items.append((op, meta, b"".join(lines[i:i + width])))
        i += width
    return items
