"""Issue 25: logrotate's steps played one at a time, the agent killed with SIGKILL and
started again between every pair of them; every line indexed exactly once, by the real node.

Each step is one of the system calls logrotate makes (BOSH stanza: copytruncate or
rename + create, then compress): the shift of older generations, a copy half written and
then complete, the truncate, a `.gz` half written and then complete, the plain copy
deleted. Lines of every file begin with the same bytes, as JSON logs do, and the files
differ in how their first line compares with the fingerprint's head (shorter, equal,
longer) and in how many bytes generations share (fewer and more than the head). Every
generation also begins with a part of a line shorter than the shared bytes, completed one
step later: a live file shorter than its first line.

`down`: each step happens while the agent is stopped, so every start finds a new state.
`live`: each step happens while the agent runs, then it is killed once it has caught up.
"""

from __future__ import annotations

import gzip
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent import identity
from tests.support.agentproc import AgentProcess, all_messages, count, registry_entries, write_config

TOKEN = re.compile(rb"<([a-z0-9-]+):(\d+)>")
PARTIAL = 30  # bytes of a generation's first line written one step before the rest
LINES_PER_WRITE = 4


@dataclass
class Variant:
    name: str
    prefix_len: int  # bytes every line of every generation shares
    line_len: int


VARIANTS = [
    Variant("short", 48, 60),  # a lager-like opening; a first line shorter than the head
    Variant("equal", 200, identity.HEAD_BYTES),
    Variant("long", 300, 400),  # generations share more than the head
]
PREFIX = b'{"source":"gorouter","log_level":1,"data":{"line":"'


@dataclass
class LogFile:
    """One file's writes: line n is `prefix <name:n> filler`, the same bytes every time."""

    path: Path
    variant: Variant
    next: int = 0
    pending: bytes = b""  # the rest of a line whose first bytes were written
    written: set[int] = field(default_factory=set)

    def line(self, n: int) -> bytes:
        v = self.variant
        prefix = (PREFIX * 10)[: v.prefix_len]
        body = prefix + f"<{self.path.parent.name}:{n}>".encode()
        return body + b"x" * (v.line_len - len(body) - 1) + b"\n"

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)

    def write_lines(self, k: int) -> None:
        data = self.pending + b"".join(self.line(n) for n in range(self.next, self.next + k))
        self.written.update(range(self.next, self.next + k))
        self.next += k
        self.pending = b""
        self.append(data)

    def start_line(self) -> None:
        """The first PARTIAL bytes of the next line (fewer than the shared prefix)."""
        ln = self.line(self.next)
        self.append(ln[:PARTIAL])
        self.pending = ln[PARTIAL:]
        self.written.add(self.next)
        self.next += 1


def copy_of(path: Path, n: int, gz: bool = False) -> Path:
    return path.with_name(f"{path.name}.{n}" + (".gz" if gz else ""))


# -- logrotate's steps, one system call (or two) each -------------------------------------

def shift(f: LogFile) -> None:
    """x.log.N.gz -> x.log.N+1.gz, oldest first, as logrotate does before it copies."""
    n = max((int(p.name.split(".")[-2]) for p in f.path.parent.glob(f.path.name + ".*.gz")), default=0)
    for i in range(n, 0, -1):
        os.rename(copy_of(f.path, i, gz=True), copy_of(f.path, i + 1, gz=True))


def copy_half(f: LogFile) -> None:
    data = f.path.read_bytes()
    copy_of(f.path, 1).write_bytes(data[: len(data) // 2])


def copy_rest(f: LogFile) -> None:
    data = f.path.read_bytes()
    with open(copy_of(f.path, 1), "ab") as out:
        out.write(data[copy_of(f.path, 1).stat().st_size:])


def truncate(f: LogFile) -> None:
    os.truncate(f.path, 0)
    f.start_line()


def rename(f: LogFile) -> None:
    os.rename(f.path, copy_of(f.path, 1))


def create(f: LogFile) -> None:
    f.path.write_bytes(b"")
    f.start_line()


def write(f: LogFile) -> None:
    f.write_lines(LINES_PER_WRITE)


def gz_half(f: LogFile) -> None:
    data = gzip.compress(copy_of(f.path, 1).read_bytes())
    copy_of(f.path, 1, gz=True).write_bytes(data[: len(data) // 2])


def gz_rest(f: LogFile) -> None:
    data = gzip.compress(copy_of(f.path, 1).read_bytes())
    copy_of(f.path, 1, gz=True).write_bytes(data)


def unlink_plain(f: LogFile) -> None:
    os.unlink(copy_of(f.path, 1))


CYCLE = {
    "copytruncate": [write, shift, copy_half, copy_rest, truncate, write, gz_half, gz_rest, unlink_plain],
    "rename": [write, shift, rename, create, write, gz_half, gz_rest, unlink_plain],
}
CYCLES = 2


# -- what is on disk, what is indexed -----------------------------------------------------

def complete_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def readable_lines(d: Path) -> set[tuple[str, int]]:
    """Lines in a live file or a copy, whole: a half-written `.gz` holds none yet."""
    found = set()
    for p in d.iterdir():
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError):
                continue
        for ln in complete_lines(data):
            m = TOKEN.search(ln)
            if m:
                found.add((m.group(1).decode(), int(m.group(2))))
    return found


class Run:
    def __init__(self, tmp: Path, es, es_url: str, index: str, method: str):
        self.tmp, self.es, self.index = tmp, es, index
        self.root = tmp / "sys" / "log"
        self.files = []
        for v in VARIANTS:
            d = self.root / f"{method[:2]}-{v.name}"
            d.mkdir(parents=True)
            self.files.append(LogFile(d / "app.log", v))
        self.state = tmp / "state"
        # Partial lines stay partial for the whole test: a step completes them, never a timer.
        self.config = write_config(tmp / "config.json", es_url, self.root, self.state, index,
                                   formats=[{"glob": "**", "format": "raw"}],
                                   reader={"idle_flush_s": 60.0, "close_removed_after_s": 60.0,
                                           "rescan_interval_s": 1.0})
        self.agent: AgentProcess | None = None
        self.history: list[str] = []

    def start(self) -> None:
        self.agent = AgentProcess(self.config, self.tmp / "agent.log").start()
        self.agent.wait_started()

    def kill(self) -> None:
        self.agent.kill()

    def available(self) -> set[tuple[str, int]]:
        return set().union(*(readable_lines(f.path.parent) for f in self.files))

    def indexed(self) -> Counter:
        seen: Counter = Counter()
        if count(self.es, self.index) == 0:
            return seen
        for doc in all_messages(self.es, self.index, ["message"]):
            m = TOKEN.search(doc["message"].encode())
            assert m, f"a document that is no whole line: {doc['message'][:120]!r} after {self.history}"
            seen[(m.group(1).decode(), int(m.group(2)))] += 1
        return seen

    def settled(self) -> bool:
        """Every whole line of every live file acknowledged in the registry."""
        want = {str(f.path): f.path.read_bytes().rfind(b"\n") + 1 for f in self.files if f.path.exists()}
        got: dict[str, int] = {}
        for e in registry_entries(self.state):
            if not e["gone"] and e["path"] in want:
                got[e["path"]] = max(got.get(e["path"], 0), e["offset"])
        return all(got.get(p, 0) >= n for p, n in want.items())

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until every line readable on disk is indexed and the live files' offsets are saved;
        a line indexed twice fails at once, naming the steps that led there."""
        want = self.available()
        deadline = time.monotonic() + timeout
        while True:
            seen = self.indexed()
            dup = sorted(k for k, n in seen.items() if n > 1)
            assert not dup, f"indexed twice: {dup[:5]} after {self.history}\n{self.log_tail()}"
            missing = sorted(want - set(seen))
            if not missing and self.settled():
                return
            assert self.agent.alive(), f"the agent exited after {self.history}\n{self.log_tail()}"
            assert time.monotonic() < deadline, (f"not indexed: {missing[:5]} ({len(missing)}) after "
                                                 f"{self.history}\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        return self.agent.log()[-4000:] if self.agent else ""


@pytest.mark.parametrize("mode", ["down", "live"])
@pytest.mark.parametrize("method", ["copytruncate", "rename"])
def test_each_step_of_rotation_with_a_kill_between_every_two(es, es_node, index_name, tmp_path, method, mode):
    run = Run(tmp_path, es, es_node.url, index_name, method)
    for f in run.files:
        f.write_lines(LINES_PER_WRITE)
    run.start()
    run.wait_caught_up()
    for cycle in range(CYCLES):
        for step in CYCLE[method]:
            run.history.append(f"{cycle}:{step.__name__}")
            if mode == "down":
                run.kill()
                for f in run.files:
                    step(f)
                run.start()
            else:
                for f in run.files:
                    step(f)
                run.wait_caught_up()
                run.kill()
                run.start()
            run.wait_caught_up()
    for f in run.files:
        if f.pending:
            f.write_lines(0)  # the last partial line, completed
    run.wait_caught_up()
    assert run.agent.stop() == 0
    seen = run.indexed()
    written = {(f.path.parent.name, n) for f in run.files for n in f.written}
    assert set(seen) == written, (sorted(written - set(seen))[:10], run.log_tail())
    assert max(seen.values()) == 1
    log = run.agent.log()
    assert '"bytes_lost"' not in log and "Traceback" not in log, log[-4000:]
