"""An HTTP node for the Elasticsearch client whose answers are size-capped and whose requests
have a total deadline.

The stock node reads a whole answer into memory however large (a 400 MB answer took the agent
to 1.27 GB), and its timeout bounds each socket read, not the request: a server that trickles
one byte per second holds a request forever. Here every request gets a watchdog that cuts its
socket once `request_timeout` has passed since the request began, and an answer is read up to
MAX_ANSWER_BYTES only. Both end as a ConnectionError naming the cause, which the sender retries.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

from elastic_transport import NodeConfig, Urllib3HttpNode

# `_bulk` answers are filtered to per-item status and error (send.BULK_PARAMS): ~25 bytes an
# item when indexed (200 KB for 8,000), ~300 with an error. A larger answer costs a split of the
# batch (send._no_answer), not a document; two senders each holding a capped answer is the bound.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
_CAP = f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """The answer went past MAX_ANSWER_BYTES; the rest was not read."""


class DeadlinePassed(Exception):
    """The request (connect, send, answer) took longer than its total deadline."""


class _Watch:
    """A request's deadline: when it passes first, the connection's socket is shut down, which
    wakes whatever read or write is blocked on it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.conn = None  # the urllib3 connection, set when the request goes out on it
        self.fired = False
        self.finished = False
        self._lock = threading.Lock()
        _WATCHDOG.add(self)

    def cut(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.fired = True
            sock = getattr(self.conn, "sock", None)
            if sock is not None:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd, under TLS too
                except OSError:
                    pass

    def done(self) -> None:
        with self._lock:
            self.finished = True


class _Watchdog:
    """One thread for the deadlines of all requests (a Timer each started a thread per `_bulk`).
    Finished watches leave the heap when they reach its top: deadlines are mostly equal, so the
    top is the oldest request, usually finished long ago."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._cond:
            self._drop_finished()
            heapq.heappush(self._heap, (watch.deadline, next(self._seq), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is watch:
                self._cond.notify()

    def _drop_finished(self) -> None:
        while self._heap and self._heap[0][2].finished:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._drop_finished()
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                watch = heapq.heappop(self._heap)[2]
            watch.cut()


_WATCHDOG = _Watchdog()


_current = threading.local()  # the watch of the request this thread is making


class _Tracked:
    """Mixed into the pool's connection class: tells the current watch which socket to cut."""

    def request(self, *args, **kwargs):
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _Answer:
    """What Urllib3HttpNode.perform_request reads of a urllib3 response, read within bounds."""

    def __init__(self, status: int, headers, data: bytes):
        self.status = status
        self.headers = headers
        self.data = data


class _BoundedPool:
    def __init__(self, pool, deadline_s: float):
        self.pool = pool
        self.deadline_s = deadline_s
        pool.ConnectionCls = type(f"Tracked{pool.ConnectionCls.__name__}", (_Tracked, pool.ConnectionCls), {})

    def urlopen(self, method: str, url: str, **kw) -> _Answer:
        timeout = kw.get("timeout")  # a per-request timeout, when the caller gave one
        watch = _Watch(timeout if isinstance(timeout, (int, float)) else self.deadline_s)
        _current.watch = watch
        try:
            resp = self.pool.urlopen(method, url, preload_content=False, **kw)
            try:
                return _Answer(resp.status, resp.headers, _read(resp))
            except BaseException:
                resp.close()  # unread data: this connection cannot be reused
                raise
            finally:
                resp.release_conn()
        except Exception as e:
            if watch.fired:
                raise DeadlinePassed(f"no complete answer within the request deadline of {watch.seconds:g}s "
                                     f"(elasticsearch.request_timeout_s)") from e
            raise
        finally:
            watch.done()
            _current.watch = None

    def close(self) -> None:
        self.pool.close()


def _read(resp) -> bytes:
    length = resp.headers.get("content-length")
    if length is not None and not resp.headers.get("content-encoding"):
        if int(length) > MAX_ANSWER_BYTES:  # said up front: not one byte of it is read
            raise AnswerTooLarge(f"answer of {length} bytes announced, more than {_CAP}; not read")
        return resp.read()
    chunks, size = [], 0  # chunked or compressed: capped as it arrives, decoded
    for chunk in resp.stream(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(f"answer larger than {_CAP}; not read further")
    return b"".join(chunks)


class BoundedNode(Urllib3HttpNode):
    def __init__(self, config: NodeConfig):
        super().__init__(config)
        self.pool = _BoundedPool(self.pool, config.request_timeout or 30.0)
