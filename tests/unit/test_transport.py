"""BoundedNode against a loopback HTTP server that answers in scripted ways: answers are capped,
every request has a total deadline, good answers pass and keep their connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import NodeConfig

from agent.transport import MAX_ANSWER_BYTES, AnswerTooLarge, BoundedNode, DeadlinePassed

Script = Callable[[socket.socket, threading.Event], None]


def _head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % length


class Server:
    """Answers each request on a connection with `script`; counts connections."""

    def __init__(self, script: Script):
        self.script = script
        self.connections = 0
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while not self.stop.is_set():
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line:
                    return
                f.read(length)
                self.script(conn, self.stop)
        except OSError:
            return
        finally:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Server]]:
    servers: list[Server] = []

    def start(script: Script) -> Server:
        servers.append(Server(script))
        return servers[-1]

    yield start
    for s in servers:
        s.stop.set()
        s.sock.close()


def node(server: Server, timeout: float = 1.0) -> BoundedNode:
    return BoundedNode(NodeConfig("http", "127.0.0.1", server.port, request_timeout=timeout))


def small(conn: socket.socket, stop: threading.Event) -> None:
    body = b'{"errors":false,"items":[]}'
    conn.sendall(_head(len(body)) + body)


def test_a_normal_answer_passes_and_its_connection_is_reused(serve):
    srv = serve(small)
    n = node(srv)
    for _ in range(3):
        resp = n.perform_request("POST", "/_bulk", body=b"{}\n")
        assert resp.meta.status == 200 and resp.body == b'{"errors":false,"items":[]}'
    assert srv.connections == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_past_the_cap_is_not_read_to_the_end(serve, chunked):
    sent = []

    def huge(conn: socket.socket, stop: threading.Event) -> None:
        total = 400 * 1024 * 1024
        if chunked:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        else:
            conn.sendall(_head(total))
        chunk = b" " * 65536
        for _ in range(total // len(chunk)):
            conn.sendall(b"10000\r\n" + chunk + b"\r\n" if chunked else chunk)
            sent.append(len(chunk))

    srv = serve(huge)
    with pytest.raises(TransportConnectionError) as e:
        node(srv, timeout=30).perform_request("POST", "/_bulk", body=b"{}\n")
    assert isinstance(e.value.errors[0], AnswerTooLarge)
    assert sum(sent) < 64 * 1024 * 1024  # it stopped reading: far less than the 400 MB left the server
    assert MAX_ANSWER_BYTES <= 8 * 1024 * 1024


@pytest.mark.parametrize("head_first", [True, False], ids=["body-trickled", "headers-trickled"])
def test_a_trickling_answer_is_cut_at_the_deadline(serve, head_first):
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        body = b'{"errors":false,"items":[]}' * 100
        out = _head(len(body)) + body
        if head_first:
            conn.sendall(out[:len(_head(len(body)))])
            out = body
        for i in range(len(out)):
            conn.sendall(out[i:i + 1])
            if stop.wait(0.1):  # each byte well within the per-read timeout
                return

    srv = serve(trickle)
    with pytest.raises(TransportConnectionError) as e:
        node(srv, timeout=1.0).perform_request("POST", "/_bulk", body=b"{}\n")
    assert isinstance(e.value.errors[0], DeadlinePassed)
    assert "1s" in str(e.value.errors[0])


def test_a_deadline_that_did_not_pass_does_not_cut_the_next_request(serve):
    srv = serve(small)
    n = node(srv, timeout=0.3)
    n.perform_request("POST", "/_bulk", body=b"{}\n")
    threading.Event().wait(0.6)  # the first request's timer would have fired by now
    assert n.perform_request("POST", "/_bulk", body=b"{}\n").meta.status == 200
    assert srv.connections == 1


def test_deadlines_share_one_thread_however_many_requests(serve):
    srv = serve(small)
    n = node(srv)
    n.perform_request("POST", "/_bulk", body=b"{}\n")
    before = threading.active_count()
    for _ in range(50):
        n.perform_request("POST", "/_bulk", body=b"{}\n")
    assert threading.active_count() == before  # a Timer per request would have left ~50 waiting
    assert [t.name for t in threading.enumerate()].count("request-deadlines") == 1


def test_a_short_deadline_behind_a_long_one_still_cuts_in_time(serve):
    """The watchdog sleeps until its earliest deadline: a new, earlier one must wake it."""
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(_head(1000))
        while not stop.wait(0.1):
            conn.sendall(b" ")

    srv = serve(trickle)
    slow = threading.Thread(target=lambda: pytest.raises(TransportConnectionError,
                                                         node(srv, timeout=20).perform_request, "POST", "/_bulk", body=b"{}\n"),
                            daemon=True)
    slow.start()
    threading.Event().wait(0.2)
    t0 = time.monotonic()
    with pytest.raises(TransportConnectionError) as e:
        node(srv, timeout=0.5).perform_request("POST", "/_bulk", body=b"{}\n")
    assert isinstance(e.value.errors[0], DeadlinePassed)
    assert time.monotonic() - t0 < 5  # not the 20 s of the request ahead of it
