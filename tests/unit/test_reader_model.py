"""Model-based test of reading: the real Reader + Framer + Acker driven like the agent's
loop, on a real directory, against a model of every line written.

The state machine writes lines (random bytes, sometimes a partial line completed later),
rotates like logrotate (rename + create, copytruncate, gzip of the rotated copy, a
second generation that is eventually deleted), deletes files, lets the agent read and
Elasticsearch acknowledge, stops the agent gracefully or by a crash (in-flight batches
lost, possibly indexed without the agent hearing of it) and starts it again from the
registry it saved.

The "index" is a dict keyed by document `_id` with Elasticsearch `create` semantics (a
second create of an `_id` is a no-op). After a final drain (time pushed forward so idle
partial lines are flushed and removed files closed) every stream of content written is
checked against what was indexed:

- every document is a line (or, for content that vanished, a cut line) of exactly one
  stream, at the offset where it was written: nothing merged, nothing invented;
- no line is indexed under two `_id`s;
- every line is indexed, unless the stream's content vanished from disk while the agent
  did not hold it open; then what was indexed is a prefix of it, and if the agent had
  seen bytes it never shipped, its registry entry counts lost bytes.

Every line starts with the same bytes, as JSON logs do (`SHARED`), then a unique token
`L<n>|`, so a document names its stream. A stream whose first line is not complete (up to
identity.MAX_HEAD) is owed nothing: the agent gives a file an identity only once its first
line is whole, since generations that share their first bytes cannot be told apart before.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from watchdog.events import FileModifiedEvent

from agent import identity, pipeline, registry
from agent.config import Config
from agent.send import Health

NAMES = ["a.log", "b.log"]
KEEP = 2  # rotated generations kept: x.log.1[.gz], x.log.2[.gz]
SHARED = b'{"source":"uaa","data":"'  # every line's first bytes: longer than many cuts
TOKEN = re.compile(r"^" + re.escape(SHARED.decode()) + r"L(\d+)\|")


# -- time under test control ------------------------------------------------------------

class Clock:
    """Real monotonic time plus a skew the test pushes forward to make files look idle."""

    def __init__(self) -> None:
        self.skew = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew


# -- Elasticsearch stand-in ---------------------------------------------------------------

class FakeSender:
    """Holds submitted batches until the test lets Elasticsearch answer them."""

    def __init__(self, on_done, index: dict[str, tuple[str, int, str]]):
        self.on_done = on_done
        self.index = index
        self.queue: list = []
        self.in_flight = 0
        self.health = Health()  # never failing: batches wait for the test, nothing is spooled

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, batch) -> None:
        self.queue.append(batch)
        self.in_flight += 1

    def apply(self, batch) -> None:
        """Index a batch's documents with `create` semantics."""
        lines = bytes(batch.body).split(b"\n")
        assert lines[-1] == b""
        lines.pop()
        assert len(lines) % 2 == 0, "body must be action/document pairs"
        for i in range(0, len(lines), 2):
            action = orjson.loads(lines[i])["create"]
            doc = orjson.loads(lines[i + 1])
            _id = action["_id"]
            fid, off = _id.rsplit("-", 1)
            assert int(off) == doc["log.offset"], (_id, doc)
            if _id not in self.index:
                self.index[_id] = (fid, int(off), doc["message"])

    def answer(self, which: int) -> None:
        batch = self.queue.pop(which)
        self.apply(batch)
        self.in_flight -= 1
        self.on_done(batch)

    def answer_all(self) -> None:
        while self.queue:
            self.answer(0)


def new_agent(cfg: Config, index: dict, clock: Clock) -> pipeline.Agent:
    """The real agent with a stand-in sender and the test's clock; no threads, no watchdog."""
    agent = pipeline.Agent(cfg, lambda on_done: FakeSender(on_done, index), clock.monotonic)
    agent.start(watch=False)
    return agent


def step(agent: pipeline.Agent, events: str, touched: set[str], submit: bool, checkpoint: bool) -> bool:
    """One real turn of the loop, with the file events the test chose (as watchdog would
    deliver them); batches go out and offsets are saved when the test says."""
    if events == "rescan":
        agent.discovery.rescan_requested = True
    elif events == "changed":
        for path in sorted(touched):
            agent.discovery.on_any_event(FileModifiedEvent(path))
    progressed = agent.turn()
    if submit and (agent.batch.docs or agent.batch.segments):
        agent.flush_batch()
    if checkpoint:
        agent.acker.checkpoint()
    return progressed


def shutdown_agent(agent: pipeline.Agent) -> None:
    """`Agent.shutdown` with an Elasticsearch that answers everything."""
    if agent.batch.docs or agent.batch.segments:
        agent.flush_batch()
    agent.sender.answer_all()
    agent.close()


def crash_agent(agent: pipeline.Agent, indexed_unacked: int) -> None:
    """kill -9: unacknowledged batches are gone (some may have been indexed), no checkpoint."""
    for batch in agent.sender.queue[:indexed_unacked]:
        agent.sender.apply(batch)
    agent.sender.queue.clear()
    agent.reader.close_all()


# -- the model ----------------------------------------------------------------------------

@dataclass
class Stream:
    """Content written to one file generation, wherever it is now."""

    sid: int
    name: str
    content: bytearray = field(default_factory=bytearray)
    loc: str | None = None  # file name in the directory, None once deleted
    vanished: bool = False  # deleted while the agent did not hold it open
    unseen: bool = False  # left its live name (or the agent forgot it in a crash) before the agent knew it
    devino: tuple[int, int] = (0, 0)  # the file it was written to
    ragged: bool = False  # a crash left lines indexed past the committed offset (batches answered out of order)

    def records(self) -> list[tuple[int, bytes]]:
        """(offset, bytes) of every event the agent should ship: lines, and a last partial
        line (flushed when idle or when the file is a finished copy)."""
        out, off = [], 0
        for piece in bytes(self.content).split(b"\n"):
            out.append((off, piece))
            off += len(piece) + 1
        if out and out[-1][1] == b"":
            out.pop()
        return out

    def identifiable(self) -> bool:
        """Its first line is whole (or MAX_HEAD long): before, the agent does not read it."""
        return b"\n" in self.content[: identity.MAX_HEAD] or len(self.content) >= identity.MAX_HEAD


def as_message(data: bytes) -> str:
    return data.decode(errors="replace").replace("\0", "\ufffd")


payloads = st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"\xc3"))


class ReaderModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="reader-model-")
        self.root = os.path.join(self.tmp, "log")
        self.dir = os.path.join(self.root, "job")
        os.makedirs(self.dir)
        self.clock = Clock()
        self.index: dict[str, tuple[str, int, str]] = {}
        self.streams: list[Stream] = []
        self.at: dict[str, Stream] = {}  # file name -> stream there
        self.pending_rest: dict[str, bytes] = {}  # live name -> rest of a line written in part
        self.copying: dict[str, int] = {}  # live name -> bytes logrotate copied, its truncate still to come
        self.touched: set[str] = set()
        self.seq = 0
        self.agent: pipeline.Agent | None = None
        self.cfg: Config | None = None

    @initialize(chunk=st.sampled_from([5, 16, 64 * 1024]), max_docs=st.sampled_from([1, 3, 1000]))
    def setup(self, chunk, max_docs):
        cfg = Config()
        cfg.inputs.root = self.root
        cfg.state_dir = os.path.join(self.tmp, "state")
        cfg.reader.chunk_bytes = chunk
        cfg.reader.max_line_bytes = 4096
        cfg.batch.max_docs = max_docs
        cfg.health.enabled = cfg.fleet.enabled = False
        # Only the test decides when to rescan, send a partial batch and save offsets.
        cfg.reader.rescan_interval_s = cfg.batch.flush_interval_s = cfg.registry.flush_interval_s = 1e9
        cfg.reader.poll_interval_s = 1e9  # the test's "changed" events say when the agent looks
        self.cfg = cfg
        self.agent = new_agent(cfg, self.index, self.clock)

    def teardown(self):
        try:
            if self.cfg is not None:
                self.final_check()
        finally:
            if self.agent is not None:
                self.agent.reader.close_all()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- file system ----------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _touch(self, name: str) -> None:
        self.touched.add(self._path(name))

    def _held_open(self, path: str) -> bool:
        """Whether the running agent holds this file open (then deleting it loses nothing)."""
        if self.agent is None:
            return False
        st_ = os.stat(path)
        for src in self.agent.reader.sources.values():
            if (src.fd is not None or src.gz is not None) and (src.dev, src.ino) == (st_.st_dev, st_.st_ino):
                return True
        return False

    def _known(self, s: Stream) -> bool:
        """Whether the agent knows this content (a registry entry with its inode and head):
        in memory while it runs, on disk while it is stopped."""
        if not s.content:
            return True  # nothing to miss
        entries = self.agent.entries if self.agent is not None else registry.load(self.cfg.state_dir)
        for e in entries.values():
            if (e.dev, e.ino) == s.devino and e.head_len and identity.digest(bytes(s.content[:e.head_len])) == e.head_hash:
                return True
        return False

    def _left_live(self, s: Stream) -> None:
        """A stream moved away from its live name: the agent can follow it only if it knows it."""
        if not self._known(s):
            s.unseen = True

    def _remove(self, name: str) -> None:
        s = self.at.pop(name)
        if s.loc == s.name:
            self._left_live(s)
        if not self._held_open(self._path(name)):
            s.vanished = True
        s.loc = None
        os.unlink(self._path(name))
        self._touch(name)

    def _move(self, src: str, dst: str) -> None:
        s = self.at.pop(src)
        os.rename(self._path(src), self._path(dst))
        s.loc = dst
        self.at[dst] = s
        self._touch(src)
        self._touch(dst)

    def _shift(self, name: str) -> None:
        """Make room for a new x.log.1: older generations move up, the oldest goes."""
        for n in range(KEEP, 0, -1):
            for ext in ("", ".gz"):
                old = f"{name}.{n}{ext}"
                if old not in self.at:
                    continue
                if n == KEEP:
                    self._remove(old)
                else:
                    self._move(old, f"{name}.{n + 1}{ext}")

    def _append(self, name: str, data: bytes) -> None:
        s = self.at.get(name)
        if s is None:
            s = Stream(len(self.streams), name, loc=name)
            self.streams.append(s)
            self.at[name] = s
        with open(self._path(name), "ab") as f:
            f.write(data)
            if not s.content:
                st_ = os.fstat(f.fileno())
                s.devino = (st_.st_dev, st_.st_ino)
        s.content += data
        self._touch(name)

    @rule(name=st.sampled_from(NAMES), payloads=st.lists(payloads, min_size=1, max_size=4),
          cut=st.none() | st.integers(min_value=1, max_value=40))
    def write(self, name, payloads, cut):
        """Complete lines; with `cut`, the last one is written only in part for now."""
        data = self.pending_rest.pop(name, b"")
        for p in payloads:
            data += SHARED + b"L%d|" % self.seq + p + b"\n"
            self.seq += 1
        if cut is not None:
            last = data.rfind(b"\n", 0, len(data) - 1) + 1
            k = min(last + cut, len(data) - 1)
            data, self.pending_rest[name] = data[:k], data[k:]
        self._append(name, data)

    # Writing and reading are what most steps do: more rules for them than for the rest.
    @rule(name=st.sampled_from(NAMES), payloads=st.lists(payloads, min_size=1, max_size=4),
          cut=st.none() | st.integers(min_value=1, max_value=40))
    def write_more(self, name, payloads, cut):
        self.write(name, payloads, cut)

    def _live(self) -> list[str]:
        return [n for n in NAMES if n in self.at and n not in self.copying]

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def rotate_rename(self, data):
        """logrotate `create`: x.log -> x.log.1, a new empty x.log; the writer reopens."""
        name = data.draw(st.sampled_from(self._live()))
        self._shift(name)
        self._move(name, name + ".1")
        open(self._path(name), "wb").close()
        self._touch(name)
        self._left_live(self.at[name + ".1"])

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def rotate_copytruncate(self, data):
        """logrotate `copytruncate`: copy x.log to x.log.1, truncate x.log; the writer keeps
        appending to x.log (O_APPEND), so a line written in part continues there."""
        name = data.draw(st.sampled_from(self._live()))
        self._shift(name)
        s = self.at.pop(name)
        shutil.copyfile(self._path(name), self._path(name + ".1"))
        os.truncate(self._path(name), 0)
        s.loc = name + ".1"
        self.at[name + ".1"] = s
        fresh = Stream(len(self.streams), name, loc=name)  # what is written to x.log from now on
        self.streams.append(fresh)
        self.at[name] = fresh
        self._touch(name)
        self._touch(name + ".1")
        self._left_live(s)

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def copy_for_copytruncate(self, data):
        """copytruncate's first half: x.log copied to x.log.1; the agent may be killed, started
        and read before the truncate, and the writer may append (in no copy: logrotate's loss)."""
        name = data.draw(st.sampled_from(self._live()))
        self._shift(name)
        shutil.copyfile(self._path(name), self._path(name + ".1"))
        self.copying[name] = len(self.at[name].content)
        self._touch(name + ".1")

    @precondition(lambda self: self.copying)
    @rule(data=st.data())
    def truncate_after_copy(self, data):
        name = data.draw(st.sampled_from(sorted(self.copying)))
        copied = self.copying.pop(name)
        s = self.at.pop(name)
        os.truncate(self._path(name), 0)
        if len(s.content) > copied:
            s.vanished = True  # what was written after the copy is in no file now
        s.loc = name + ".1"
        self.at[name + ".1"] = s
        fresh = Stream(len(self.streams), name, loc=name)
        self.streams.append(fresh)
        self.at[name] = fresh
        self._touch(name)
        self._left_live(s)

    def _plain_copies(self) -> list[str]:
        return [n + ".1" for n in NAMES if n + ".1" in self.at and n + ".1.gz" not in self.at]

    @precondition(lambda self: self._plain_copies())
    @rule(data=st.data())
    def compress(self, data):
        """logrotate `compress` (delaycompress off): x.log.1 -> x.log.1.gz, then remove x.log.1."""
        plain = data.draw(st.sampled_from(self._plain_copies()))
        with open(self._path(plain), "rb") as f, gzip.open(self._path(plain + ".gz"), "wb") as g:
            shutil.copyfileobj(f, g)
        s = self.at.pop(plain)
        self.at[plain + ".gz"] = s
        self._touch(plain + ".gz")
        os.unlink(self._path(plain))
        s.loc = plain + ".gz"
        self._touch(plain)

    @precondition(lambda self: set(self.at) - set(self.copying))
    @rule(data=st.data())
    def delete(self, data):
        name = data.draw(st.sampled_from(sorted(set(self.at) - set(self.copying))))
        if name in NAMES:
            self.pending_rest.pop(name, None)  # the writer starts a fresh file
        self._remove(name)

    # -- the agent and Elasticsearch --------------------------------------------------------

    @precondition(lambda self: self.agent is not None)
    @rule(events=st.sampled_from(["rescan", "changed", "none"]), turns=st.integers(1, 3),
          submit=st.booleans(), answer=st.booleans(), checkpoint=st.booleans())
    def agent_reads(self, events, turns, submit, answer, checkpoint):
        for i in range(turns):
            step(self.agent, events if i == 0 else "none", self.touched, submit, checkpoint)
            if answer:
                self.agent.sender.answer_all()
        self.touched.clear()

    @precondition(lambda self: self.agent is not None)
    @rule(data=st.data())
    def es_answers_one(self, data):
        """Batches may be answered out of order (several senders)."""
        # Neither the rule's precondition nor the draw depends on the queue: how many batches
        # are queued may vary between runs of the same steps (file times are coarse, inode
        # numbers are reused or not), and hypothesis wants the same choices on replay.
        which = data.draw(st.integers(0, 7))
        q = self.agent.sender.queue
        if q:
            self.agent.sender.answer(which % len(q))

    def _closed(self) -> None:
        """The agent's descriptors are gone: deleted content it had not finished is lost."""
        for s in self.streams:
            if s.loc is None:
                s.vanished = True

    @precondition(lambda self: self.agent is not None)
    @rule(events=st.sampled_from(["rescan", "changed", "none"]), turns=st.integers(1, 3),
          submit=st.booleans(), answer=st.booleans(), checkpoint=st.booleans())
    def agent_reads_more(self, events, turns, submit, answer, checkpoint):
        self.agent_reads(events, turns, submit, answer, checkpoint)

    @precondition(lambda self: self.agent is not None)
    @rule(crash=st.booleans(), indexed_unacked=st.integers(0, 2))
    def agent_stops(self, crash, indexed_unacked):
        """A graceful stop (send, wait for acknowledgements, checkpoint), or kill -9: batches
        in flight are lost, perhaps indexed without the agent hearing of it, no checkpoint."""
        if crash:
            crash_agent(self.agent, indexed_unacked)
            self._ragged()
        else:
            shutdown_agent(self.agent)
        self.agent = None
        self._closed()
        for s in self.streams:  # entries not checkpointed are forgotten
            if s.loc != s.name and not s.unseen:
                self._left_live(s)

    def _ragged(self) -> None:
        """After a crash: documents at or past their file's committed offset (a later batch
        indexed before an earlier one) make a gap if the rest of the stream cannot be re-read."""
        saved = registry.load(self.cfg.state_dir)
        owners = self._owners()
        indexed: dict[str, set[int]] = {}
        for fid, off, _msg in self.index.values():
            indexed.setdefault(fid, set()).add(off)
        for fid, offs in indexed.items():
            committed = saved[fid].offset if fid in saved else 0
            s = owners[fid]
            if any(committed <= off < max(offs) and off not in offs for off, _ in s.records()):
                s.ragged = True

    @precondition(lambda self: self.agent is None)
    @rule()
    def agent_starts(self):
        self.agent = new_agent(self.cfg, self.index, self.clock)
        self.touched.clear()

    # -- checks ------------------------------------------------------------------------------

    @invariant()
    def documents_are_written_lines(self):
        """Checked at every step: nothing indexed that was not written, where it was written."""
        if self.cfg is not None:
            self._owners()

    def _owners(self) -> dict[str, Stream]:
        """fid -> the stream its documents come from; fails on a document no stream explains."""
        by_fid: dict[str, list[tuple[int, str]]] = {}
        for fid, off, msg in self.index.values():
            by_fid.setdefault(fid, []).append((off, msg))
        recs_of = [(s, dict(s.records())) for s in self.streams]
        ranked: dict[str, list[tuple[bool, bool, int, Stream]]] = {}
        for fid, docs in by_fid.items():
            candidates = []
            for s, recs in recs_of:
                if all(off in recs and _explains(recs[off], msg, s.vanished) for off, msg in docs):
                    # Documents without a whole token ("L", "L1", a line cut by a rotation) fit
                    # several streams: a stream naming them by token comes first, then one they
                    # match exactly over one where they are only a cut line.
                    tokened = any(_token_in(s, off, msg) for off, msg in docs)
                    exact = all(as_message(recs[off]) == msg for off, msg in docs)
                    candidates.append((not tokened, not exact, s.sid, s))
            assert candidates, f"documents of {fid} match no stream written: {sorted(docs)[:5]}"
            ranked[fid] = sorted(candidates, key=lambda c: c[:3])
        # The least ambiguous fids choose first; a fid that still has a choice takes the stream
        # written to its file's inode, else one no other fid owns (two files' documents are not
        # one stream's unless nothing else fits).
        owners: dict[str, Stream] = {}
        entries = None
        for fid in sorted(ranked, key=lambda f: (len(ranked[f]), f)):
            best = ranked[fid][0][:2]
            tied = [c[3] for c in ranked[fid] if c[:2] == best]
            if len(tied) > 1:
                if entries is None:
                    entries = self.agent.entries if self.agent is not None else registry.load(self.cfg.state_dir)
                e = entries.get(fid)
                if e is not None:  # inode numbers are reused: content still on disk before vanished content
                    tied.sort(key=lambda s: (s.devino != (e.dev, e.ino), s.vanished))
            taken = {s.sid for s in owners.values()}
            owners[fid] = next((s for s in tied if s.sid not in taken), tied[0])
        return owners

    def final_check(self):
        if self.agent is None:
            self.agent_starts()
        # Drain: time moves on between turns, so idle partial lines flush and removed files close.
        quiet = 0
        for _ in range(20_000):  # a reader reads CHUNKS_PER_TURN chunks per file per turn: long files take many
            self.clock.skew += 100.0
            before = len(self.index)
            progressed = step(self.agent, "rescan", set(), True, True)
            self.agent.sender.answer_all()
            self.agent._settle_acks()
            if not progressed and len(self.index) == before and not self.agent.batch.segments:
                quiet += 1
                if quiet >= 3:
                    break
            else:
                quiet = 0
        shutdown_agent(self.agent)

        owners = self._owners()
        covered: dict[int, dict[int, list[str]]] = {}  # sid -> offset -> _ids
        for _id, (fid, off, _msg) in self.index.items():
            covered.setdefault(owners[fid].sid, {}).setdefault(off, []).append(_id)
        fids_of: dict[int, set[str]] = {}
        for fid, s in owners.items():
            fids_of.setdefault(s.sid, set()).add(fid)

        for s in self.streams:
            recs = s.records()
            got = covered.get(s.sid, {})
            for off, ids in got.items():
                assert len(ids) == 1, f"stream {s.sid} ({s.name}): line at {off} indexed under {ids}"
            missing = [off for off, _ in recs if off not in got]
            if not missing or not s.identifiable():
                continue
            assert s.vanished or s.unseen, (
                f"stream {s.sid} ({s.name}, now at {s.loc}) never vanished but lines are missing "
                f"at offsets {missing[:5]} of {[o for o, _ in recs][:10]}; content {bytes(s.content)[:200]!r}")
            first = missing[0]
            # Missing lines of content that vanished come after what was indexed, unless a crash
            # left a later batch indexed and an earlier one not: then the gap is counted lost below.
            assert s.ragged or all(off < first for off in got), f"stream {s.sid}: indexed lines are not a prefix"
            for fid in fids_of.get(s.sid, ()):
                entry = self.agent.entries.get(fid)
                if s.vanished and entry is not None and entry.size > first:
                    assert entry.lost_bytes > 0, (
                        f"stream {s.sid}: bytes from {first} seen (size {entry.size}) but neither shipped nor counted lost")


def _explains(record: bytes, msg: str, may_be_cut: bool) -> bool:
    if as_message(record) == msg:
        return True
    if may_be_cut:  # a partial line flushed before its rest arrived (idle, or rotated away)
        return any(as_message(record[:k]) == msg for k in range(len(record)))
    return False


def _token_in(s: Stream, off: int, msg: str) -> bool:
    return TOKEN.match(msg) is not None and bytes(s.content[off:off + len(msg.encode())]).startswith(
        msg.split("|", 1)[0].encode() + b"|")


ReaderModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=50, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestReaderModel = ReaderModel.TestCase


# -- shrunk failures, replayed step by step ----------------------------------------------

class _Drawn:
    """Stands in for `st.data()`: the value the shrunk run drew."""

    def __init__(self, value):
        self.value = value

    def draw(self, _strategy):
        return self.value


def _steps(*steps):
    return [(name, kw) for name, kw in steps]


def _reads(**kw):
    return ("agent_reads", {"events": "rescan", "turns": 1, "submit": False, "answer": True, "checkpoint": False, **kw})


def _w(name, payloads, cut=None):
    return ("write", {"name": name, "payloads": payloads, "cut": cut})


def _on(rule_name, name):
    return (rule_name, {"data": name})


STOP = ("agent_stops", {"crash": False, "indexed_unacked": 0})
START = ("agent_starts", {})

SHRUNK = {
    # copytruncate's copy taken while a.log was young, a line written before its truncate: the
    # entry's head grew past the copy, so the copy did not begin with it and was read again as
    # a generation never seen (L1 under two fids). Known by the fid it was written under.
    "young_copy_written_on_before_truncate": _steps(
        _w("a.log", [b""]), _reads(), _on("copy_for_copytruncate", "a.log"), _on("truncate_after_copy", "a.log"),
        _w("a.log", [b""]), _on("copy_for_copytruncate", "a.log"), _w("a.log", [b""])),
    # A partial "L" in a new a.log is that file's whole line, and also a cut of the deleted
    # a.log's "L0|": the model credited it to the wrong stream (L0 "under two ids").
    "cut_line_owned_by_exact_stream": _steps(
        _w("a.log", [b""]), _reads(), _on("delete", "a.log"), STOP,
        _w("a.log", [b""], cut=1), START, _on("delete", "a.log")),
    # The same misattribution made the new a.log's only line look missing.
    "cut_line_not_missing": _steps(
        _w("a.log", [b""]), _w("a.log", [b""]), _on("delete", "a.log"), STOP,
        _w("a.log", [b""], cut=1), START, _on("delete", "a.log")),
    # A later batch indexed, earlier ones not, then kill -9 with the file deleted: the gap
    # cannot be re-read; it must be counted lost (the model demanded a prefix).
    "crash_after_out_of_order_answer": _steps(
        _w("a.log", [b""]), STOP, _w("a.log", [b"", b"", b""]), START, _on("delete", "a.log"),
        _reads(submit=True, answer=False, checkpoint=True), ("es_answers_one", {"data": 3}),
        ("agent_stops", {"crash": True, "indexed_unacked": 0})),
    # copytruncate twice; both later generations start with "\n" (the rest of a line cut at
    # rotation) on the same inode. Killed before any checkpoint, the agent derived the first
    # one's fid again for the second: its lines were refused as duplicates.
    "copytruncate_same_first_line_after_crash": _steps(
        _w("a.log", [b"\x05z\xda\xea~\x1e", b"[\\-Y", b"\xad\x80\xd1a\x03i*\xa4"], cut=16),
        _on("rotate_copytruncate", "a.log"),
        _w("a.log", [b"\xff\x9e", b"\x95\x91\x89"], cut=5),
        _reads(turns=3, submit=True),
        _w("a.log", [b"gorouter_time"], cut=24),
        _on("rotate_copytruncate", "a.log"),
        ("agent_stops", {"crash": True, "indexed_unacked": 1}),
        _w("a.log", [b"", b"_F\xabB\xc4"], cut=33)),
    # b.log's young "L" (a line in part) was all the registry knew of its head. Renamed, then
    # a second generation (also beginning "L") renamed after it: resuming after a crash took
    # the newest copy with that head, the wrong generation, instead of the file itself.
    "resume_renamed_file_not_newer_generation_with_same_short_head": (_steps(
        ("agent_stops", {"crash": True, "indexed_unacked": 0}),
        _w("b.log", [b'"_id":"'], cut=1), START, STOP,
        _w("b.log", [b"9XR", b"", b"", b"recursor="]),
        _on("rotate_rename", "b.log"), START, _reads(events="none", turns=2),
        _w("b.log", [b"1sb#\xfc\xcb\x85:", b"\x11", b"]#\xb6^\xf9\xa8{\x14\xd3\xba\xa9z\x19", b"\xd9"], cut=24),
        _on("rotate_rename", "b.log"),
        ("agent_stops", {"crash": True, "indexed_unacked": 1})), 5, 3),
    # The new a.log's "L" is also the whole (copy of the) never-read b.log: credit it to the
    # stream written to the fid's inode.
    "tie_broken_by_inode": (_steps(
        _w("b.log", [b"D\x16\xc7\xd9\x82\x128\xffF\xd1\xfa\xa0\xf2\xf8\xca\x90cZS"], cut=1),
        _on("rotate_copytruncate", "b.log"), _w("a.log", [b""]), _on("delete", "a.log"),
        _w("a.log", [b""], cut=1)), 16, 1),
    # An older generation renamed to b.log.2 (plain) and the orphan's own, newer one gzipped
    # to b.log.1.gz, both beginning "L": all plain copies were tried before any gzip, so the
    # older generation was read in its place. Now newest generation first.
    "resume_newest_generation_before_older_plain_copy": (_steps(
        ("agent_stops", {"crash": True, "indexed_unacked": 0}),
        _w("b.log", [b"\x91~\x84", b",\xe2\xea\x8e1'\xf1", b">", b"\xaa\xc3\xe0"]),
        _on("rotate_rename", "b.log"), START,
        _w("b.log", [b"vcap_request_id"], cut=1),
        _reads(turns=3, submit=True, checkpoint=True), STOP, START,
        _on("rotate_rename", "b.log"), ("agent_stops", {"crash": True, "indexed_unacked": 1}),
        _on("compress", "b.log.1")), 16, 3),
    # a.log seen as "L" only, deleted while held; the next a.log (also beginning "L") renamed
    # to a.log.1. After a restart the deleted file's entry took a.log.1, another entry's file.
    "orphan_does_not_take_another_entrys_file": (_steps(
        _w("a.log", [b"\x15"], cut=1), _reads(events="changed", turns=3, answer=False, checkpoint=True),
        _on("delete", "a.log"), _w("a.log", [b"\xbc"]), _reads(turns=2, submit=True),
        _on("rotate_rename", "a.log"), STOP), 5, 3),
    # A copy read to its end after a restart (gone) was saved with the size seen before the
    # rotation, so the next restart, after a crash, did not re-read its unacknowledged tail.
    "copy_size_recorded_for_crash_resume": (_steps(
        ("agent_stops", {"crash": True, "indexed_unacked": 0}),
        _w("b.log", [b"\xff\xc2.\x88\x88\xd4"]), START, _reads(turns=3, submit=True), STOP,
        _w("b.log", [b"\xae$\xb4\xf6p\x1f\xe5\xa0\xf5\xc1"], cut=32),
        _on("rotate_copytruncate", "b.log"), START,
        _reads(events="changed", answer=False, checkpoint=True),
        ("agent_stops", {"crash": True, "indexed_unacked": 2})), 64 * 1024, 3),
    # After copytruncate a.log began "L" (a line in part), and was renamed and deleted while
    # held. After the restart its entry (head "L") took a.log.2, the copy of the generation
    # before, which begins with that one's longer, known head: L0 under two fids.
    "orphan_does_not_take_copy_with_anothers_longer_head": (_steps(
        _w("a.log", [b"\xdb\x87\xadk\xdc(\x8e,\xee\x9fp", b""]),
        _reads(answer=False, checkpoint=True), STOP, _on("rotate_copytruncate", "a.log"),
        _w("a.log", [b"W\xdc\xd0\xeb\x94;\x83"], cut=1), START,
        _on("rotate_rename", "a.log"), _on("delete", "a.log.1"), STOP), 5, 1),
    # Two a.log generations holding just "L", the first deleted unseen, the second on its
    # (reused) inode number: the document is the one still on disk.
    "tie_broken_by_content_still_on_disk": (_steps(
        _w("a.log", [b"\xd5\xd9", b"t\xe0\x1c", b"\xb8\x9c\x9e\xf8", b"\x82"], cut=30),
        _on("delete", "a.log"), _w("a.log", [b"_0|"], cut=1), _w("b.log", [b"k\xfd\xe6"], cut=33),
        _on("rotate_rename", "b.log"), _on("delete", "a.log"), _on("compress", "b.log.1"),
        _w("a.log", [b"\xc6\x8a\xf9&\x91\xfb*\x033\xfd5%<\x7f\xcbd\xe8\xb7", b"\xaf"]),
        _on("delete", "b.log.1.gz"), _on("rotate_rename", "a.log"), _w("a.log", [b""], cut=1)), 64 * 1024, 3),
}


def _replay(steps, chunk=5, max_docs=1):
    machine = ReaderModel()
    try:
        machine.setup(chunk=chunk, max_docs=max_docs)
        for name, kw in steps:
            kw = {k: _Drawn(v) if k == "data" else v for k, v in kw.items()}
            getattr(machine, name)(**kw)
            machine.documents_are_written_lines()
    except BaseException:
        machine.cfg = None  # no final check on top of the failure
        raise
    finally:
        machine.teardown()


@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_shrunk(name):
    """Replays of shrunk failures; chunk=5, max_docs=1 unless given (one line per batch, so
    batches can be answered out of order)."""
    case = SHRUNK[name]
    if isinstance(case, tuple):
        _replay(*case)
    else:
        _replay(case)
