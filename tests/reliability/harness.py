"""Shared scenario harness for the reliability tests: real logrotate, real node, agent subprocess.

A `Scenario` owns a BOSH-shaped log root (`<root>/<job>/<job>.log`), a writer thread that
appends numbered lines to every job's file, a rotator thread that runs the real
`logrotate -s <state> <conf>` in a loop the way cron does (size-triggered), and the agent
process. `tally()` then compares what is on disk (live files and every rotated copy,
decompressed) with what Elasticsearch holds:

    written     lines the writer appended
    on_disk     lines still present in a live file or a rotated copy (plus lines of files the
                writer deleted while the agent was reading them: the agent owed those too)
    indexed     distinct lines in Elasticsearch
    lost        on disk but not indexed            (target: 0)
    duplicated  indexed more than once             (target: 0)
    rotate_lost written but not on disk: logrotate's own loss between copy and truncate
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.agentproc import AgentProcess, all_messages, count, registry_entries, wait_caught_up, write_config

LOGROTATE = "/usr/sbin/logrotate"
LINE_RE = re.compile(rb"([a-z_]+) seq=(\d{9}) ")  # searched: a JSON-shaped line holds it after its opening
FILLER = "x" * 70

JOBS = ("gorouter", "cloud_controller_ng", "uaa")


def line(job: str, n: int, varied: bool = False, json_shaped: bool = False) -> bytes:
    """Line `n` of `job`, the same bytes every time it is asked for.

    json_shaped: the line opens as gorouter's and lager's JSON do, so every line (and every
    generation's first line) shares its first ~70 bytes.

    varied: lines of 80 B to 2 KB with one of 20 KB in every 997 (issue 12's load), of hex,
    which compresses only ~2x (real logs compress better), so a spool fills no slower than it would."""
    if json_shaped:
        return f'{{"source":"{job}","log_level":1,"data":{{"line":"{job} seq={n:09d} {FILLER}"}}}}\n'.encode()
    if not varied:
        return f"{job} seq={n:09d} {FILLER}\n".encode()
    rnd = random.Random(zlib.crc32(job.encode()) * 1_000_003 + n)
    size = 20_000 if n % 997 == 996 else rnd.randrange(60, 2000)
    return f"{job} seq={n:09d} ".encode() + rnd.randbytes(size // 2).hex().encode() + b"\n"


def logrotate_conf(root: Path, *, copytruncate: bool = True, size: str = "20k", rotate: int = 1000,
                   archive: Path | None = None) -> str:
    """The stemcell's stanza for job logs, with a small size so rotation happens often.

    `archive`: postrotate (after the copy and truncate, before compress) keeps a copy of each
    new generation there, so with few kept generations the test still knows what logrotate's
    copies held: lines in none of them are logrotate's own copytruncate race."""
    method = "copytruncate" if copytruncate else "create 0644 root root"
    keep = (f"""  postrotate
    cp "$1.1" "{archive}/$(basename "$1").$(date +%s%N)"
  endscript
""" if archive else "")
    return f"""{root}/*/*.log {{
  missingok
  rotate {rotate}
  {method}
  compress
  notifempty
  size {size}
{keep}}}
"""


@dataclass
class Stats:
    name: str
    written: int = 0
    on_disk: int = 0
    indexed: int = 0
    lost: int = 0
    duplicated: int = 0
    rotate_lost: int = 0
    indexed_not_on_disk: int = 0
    garbled: int = 0
    extra: dict = field(default_factory=dict)

    def row(self) -> str:
        return (f"{self.name:<28} written={self.written:>6} on_disk={self.on_disk:>6} indexed={self.indexed:>6} "
                f"lost={self.lost} duplicated={self.duplicated} rotate_lost={self.rotate_lost} "
                f"indexed_not_on_disk={self.indexed_not_on_disk} garbled={self.garbled}"
                + (f" {self.extra}" if self.extra else ""))


class Writer(threading.Thread):
    """Appends numbered lines to every job's log at a steady rate.

    keep_open: like a daemon with its log open in append mode (copytruncate's case);
    otherwise open-append-close per small batch, so it follows the path after a rename
    (logrotate `create`) or a deletion.
    """

    def __init__(self, files: dict[str, Path], lines_per_s: int, keep_open: bool, delete_every_s: float = 0.0,
                 varied: bool = False, json_jobs: frozenset[str] = frozenset()):
        super().__init__(daemon=True)
        self.files = files
        self.varied = varied
        self.json_jobs = json_jobs
        self.lines_per_s = lines_per_s
        self.keep_open = keep_open
        self.delete_every_s = delete_every_s
        self.next = {job: 0 for job in files}
        self.deleted: set[tuple[str, int]] = set()  # lines of files deleted under the agent
        self._generation: dict[str, list[int]] = {job: [] for job in files}
        self._fds: dict[str, int] = {}
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self.error:
            raise self.error

    def write(self, job: str, n: int) -> None:
        shaped = job in self.json_jobs
        data = b"".join(line(job, i, self.varied, shaped) for i in range(self.next[job], self.next[job] + n))
        if self.keep_open:
            fd = self._fds.get(job)
            if fd is None:
                fd = self._fds[job] = os.open(self.files[job], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, data)
        else:
            fd = os.open(self.files[job], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        self._generation[job] += range(self.next[job], self.next[job] + n)
        self.next[job] += n

    def delete(self, job: str) -> None:
        os.unlink(self.files[job])
        self.deleted.update((job, i) for i in self._generation[job])
        self._generation[job] = []

    def run(self) -> None:
        try:
            tick = 0.02
            start = time.monotonic()
            next_delete = start + self.delete_every_s
            done = 0
            while not self._halt.is_set():
                t0 = time.monotonic()
                # Lines owed by the clock, not by the ticks: a tick that comes late on a busy machine
                # writes what it missed, so the load is the rate asked for (a test's claim rests on it).
                due = round(self.lines_per_s * (t0 - start)) - done
                for job in self.files if due else ():  # no empty write: it would recreate a deleted file
                    self.write(job, due)
                done += due
                if self.delete_every_s and t0 >= next_delete:
                    job = random.choice(list(self.files))
                    self.delete(job)
                    next_delete = t0 + self.delete_every_s
                self._halt.wait(max(0.0, tick - (time.monotonic() - t0)))
        except BaseException as e:  # pragma: no cover - surfaced by stop()
            self.error = e

    def written(self) -> set[tuple[str, int]]:
        return {(job, i) for job, n in self.next.items() for i in range(n)}


class Rotator(threading.Thread):
    """`logrotate -s state conf` every `interval` seconds, as cron would (size-triggered)."""

    def __init__(self, conf: Path, state: Path, interval: float = 0.3):
        super().__init__(daemon=True)
        self.conf, self.state, self.interval = conf, state, interval
        self.runs = 0
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run_once(self) -> None:
        r = subprocess.run([LOGROTATE, "-s", str(self.state), str(self.conf)], capture_output=True, text=True)
        self.runs += 1
        if r.returncode != 0:
            self.failures.append(r.stderr.strip()[-500:])

    def run(self) -> None:
        while not self._halt.is_set():
            self.run_once()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


class Scenario:
    def __init__(self, name: str, es, es_url: str, index: str, tmp: Path, *, jobs=JOBS, varied: bool = False,
                 json_jobs: frozenset[str] = frozenset(), **agent_overrides):
        self.name, self.es, self.index, self.tmp = name, es, index, tmp
        self.varied = varied
        self.json_jobs = json_jobs
        self.root = tmp / "sys" / "log"
        self.files = {}
        for job in jobs:
            (self.root / job).mkdir(parents=True)
            self.files[job] = self.root / job / f"{job}.log"
        self.state = tmp / "state"
        self.config = write_config(tmp / "config.json", es_url, self.root, self.state, index,
                                   formats=[{"glob": "**", "format": "raw"}], **agent_overrides)
        self.agent: AgentProcess | None = None
        self.writer: Writer | None = None
        self.rotator: Rotator | None = None
        self.kills = 0

    # -- moving parts -----------------------------------------------------------------

    def start_agent(self) -> AgentProcess:
        self.agent = AgentProcess(self.config, self.tmp / "agent.log").start()
        return self.agent

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.kill()
        self.kills += 1

    def start_writer(self, lines_per_s: int = 400, keep_open: bool = True, delete_every_s: float = 0.0) -> Writer:
        self.writer = Writer(self.files, lines_per_s, keep_open, delete_every_s, self.varied, self.json_jobs)
        # A first few lines, shipped before the load starts: the agent is up and reading every
        # file. (Content rotated away before the agent's very first start is not its to ship.)
        for job in self.files:
            self.writer.write(job, 10)
        if self.agent is not None:
            wait_caught_up(self.state, list(self.files.values()), timeout=30)
        self.writer.start()
        return self.writer

    def start_rotator(self, interval: float = 0.3, **conf) -> Rotator:
        if conf.get("archive"):
            conf["archive"].mkdir(exist_ok=True)
        path = self.tmp / "logrotate.conf"
        path.write_text(logrotate_conf(self.root, **conf))
        os.chmod(path, 0o644)
        self.rotator = Rotator(path, self.tmp / "logrotate.state", interval)
        self.rotator.start()
        return self.rotator

    def stop_load(self) -> None:
        """Writer first, then one last rotation pass, then the rotator."""
        if self.writer:
            self.writer.stop()
        if self.rotator:
            self.rotator.stop()
            self.rotator.run_once()

    # -- checking ---------------------------------------------------------------------

    def line(self, job: str, n: int) -> bytes:
        return line(job, n, self.varied, job in self.json_jobs)

    def lines_on_disk(self) -> set[tuple[str, int]]:
        found = set()
        for job in self.files:
            for p in (self.root / job).iterdir():
                data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
                for ln in data.split(b"\n")[:-1]:  # a last line without newline is not complete
                    m = LINE_RE.search(ln)
                    if m:
                        found.add((m.group(1).decode(), int(m.group(2))))
        return found

    def lines_archived(self) -> set[tuple[str, int]]:
        """Lines of every generation logrotate copied (see `logrotate_conf(archive=...)`)."""
        found = set()
        archive = self.tmp / "archive"
        for p in archive.iterdir() if archive.is_dir() else ():
            for ln in p.read_bytes().split(b"\n")[:-1]:
                m = LINE_RE.search(ln)
                if m:
                    found.add((m.group(1).decode(), int(m.group(2))))
        return found

    def expected(self) -> set[tuple[str, int]]:
        return self.lines_on_disk() | (self.writer.deleted if self.writer else set())

    def indexed(self) -> tuple[Counter, int]:
        seen: Counter = Counter()
        garbled = 0
        if count(self.es, self.index) == 0:
            return seen, 0
        docs = all_messages(self.es, self.index, ["message", "log.offset", "log.file.path"])
        self.last_docs = docs
        self.garbled_sample = []
        for doc in docs:
            msg = doc["message"].encode()
            m = LINE_RE.search(msg)
            if m and msg + b"\n" == self.line(m.group(1).decode(), int(m.group(2))):
                seen[(m.group(1).decode(), int(m.group(2)))] += 1
            else:
                garbled += 1
                # Which file generation and offset, how long, how it starts: enough to tell a line's
                # head cut by a copy from a read that began mid-line.
                self.garbled_sample.append((doc["_id"], len(msg), msg[:48]))
        return seen, garbled

    def wait_indexed(self, expected: set, timeout: float = 40.0) -> None:
        """Until every expected line is indexed (or timeout), then a little longer for stragglers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count(self.es, self.index) >= len(expected):
                seen, _ = self.indexed()
                if expected <= set(seen):
                    break
            time.sleep(1.0)
        time.sleep(1.5)

    def tally(self, timeout: float = 40.0, stop_agent: bool = True) -> Stats:
        expected = self.expected()
        self.wait_indexed(expected, timeout)
        if stop_agent and self.agent and self.agent.alive():
            self.agent.stop()
        seen, garbled = self.indexed()
        written = self.writer.written() if self.writer else set()
        indexed = set(seen)
        s = Stats(
            self.name,
            written=len(written),
            on_disk=len(expected),
            indexed=len(indexed),
            lost=len(expected - indexed),
            duplicated=sum(1 for n in seen.values() if n > 1),
            rotate_lost=len(written - expected),
            indexed_not_on_disk=len(indexed - expected),
            garbled=garbled,
        )
        if self.rotator:
            s.extra["rotations"] = sum(1 for job in self.files for p in (self.root / job).iterdir()
                                       if p.name.endswith(".gz"))
            s.extra["logrotate_runs"] = self.rotator.runs
        if self.writer and self.writer.deleted:
            s.extra["deleted_lines"] = len(self.writer.deleted)
        if self.kills:
            s.extra["kills"] = self.kills
        lost_bytes = sum(e["lost_bytes"] for e in registry_entries(self.state))
        if lost_bytes:
            s.extra["registry_lost_bytes"] = lost_bytes
        s.extra["lost_sample"] = sorted(expected - indexed)[:5] or None
        s.extra["dup_sample"] = [k for k, n in seen.items() if n > 1][:5] or None
        s.extra = {k: v for k, v in s.extra.items() if v is not None}
        print("\n" + s.row())
        if s.lost or s.duplicated or s.garbled:  # keep the evidence next to the agent's log
            with open(self.tmp / "indexed.jsonl", "w") as f:
                for d in self.last_docs:
                    f.write(json.dumps(d) + "\n")
        report = os.environ.get("RELIABILITY_REPORT")
        if report:
            with open(report, "a") as f:
                f.write(json.dumps({k: v for k, v in vars(s).items()}, default=str) + "\n")
        return s

    def assert_clean(self, s: Stats) -> None:
        log = self.agent.log() if self.agent else ""
        assert s.garbled == 0, s.row()
        assert s.lost == 0, s.row() + f"\nagent log tail:\n{log[-3000:]}"
        assert s.duplicated == 0, s.row() + f"\nagent log tail:\n{log[-3000:]}"
        assert s.indexed_not_on_disk <= s.rotate_lost, s.row()
        assert '"sender_crashed"' not in log and "Traceback" not in log, log[-3000:]
