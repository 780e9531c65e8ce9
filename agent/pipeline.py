"""The agent's main loop: discover -> read -> frame -> encode -> batch -> send -> ack -> checkpoint.

Reading, framing, encoding and acknowledging happen on this one thread; only `_bulk`
requests run on sender threads, which hand finished batches back through a queue. So
the registry entries have a single owner and need no locks. Each turn takes every due
file once through the steps in order: the reader's bytes, this file's framer, its
encoder, the batch.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import shutil
import socket
import stat
import threading
import time
import uuid

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from agent import __version__, encode, fleet, health, log, metrics, offsets, registry, send
from agent.ack import Acker
from agent.batch import Batch, Budget
from agent.config import Config
from agent.contain import Jail
from agent.discover import Discovery
from agent.encode import FileEncoder
from agent.formats import FORMATS
from agent.frame import Framer, Frames
from agent.reader import Chunk, Reader
from agent.rules import Rules
from agent.source import Source
from agent.spool import Spool, SpoolCorrupt

CHUNKS_PER_TURN = 4  # per file, before the next file gets its turn
# Files quiet for reader.QUIET_S are looked at every QUIET_POLLS-th poll (reader.poll_interval_s),
# those quiet for reader.LONG_QUIET_S every LONG_QUIET_POLLS-th.
QUIET_POLLS = 4
LONG_QUIET_POLLS = 8
# The budget spent, requests failing and nothing acknowledged for this long: Elasticsearch
# cannot take data, so new batches go to the spool rather than waiting in the files.
SPOOL_AFTER_S = 3.0


def tune_malloc() -> None:
    """Fixed glibc malloc settings (no dynamic thresholds), so RSS stays bounded and predictable.

    Buffers of the main loop (256 KiB file chunks, batch bodies of a few MiB) come from the heap
    and are reused when freed: mapping each one on its own and unmapping it on free (a 64 KiB
    mmap threshold) cost one page fault per 4 KiB written, about a million faults and a third of
    the agent's CPU per 2 million lines. Up to 16 MiB of free heap is kept (the in-flight budget
    is the bound on what is live); two arenas are plenty for our few threads."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD (the maximum; fixed: no dynamic growth)
        libc.mallopt(-1, 16 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


AGENT_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AGENT_ID_MAX_BYTES = 64
# A link, FIFO or device in its place is opened as itself (refused by fstat), never followed or waited on.
_ID_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def agent_id(state_dir: str) -> str:
    """This agent's id, shipped in every document: what `<state_dir>/agent-id` holds if it is
    the agent's own regular file holding an id, else a fresh one written in its place. The
    agent reads with CAP_DAC_READ_SEARCH, so a link there would ship any file of the VM."""
    path = os.path.join(state_dir, "agent-id")
    try:
        return _read_agent_id(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        log.warn("agent_id_replaced", f"{path} refused ({reason}): replaced with a fresh id", path=path,
                 hint="documents from this VM now carry a new agent.id; check who can write state_dir")
    return _write_agent_id(path)


def _read_agent_id(path: str) -> str:
    """The id in `path`; ValueError saying why when it is not one the agent wrote."""
    try:
        fd = os.open(path, _ID_OPEN)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid != os.geteuid():
            raise ValueError(f"owned by uid {st.st_uid}, not the agent's {os.geteuid()}")
        if st.st_size > AGENT_ID_MAX_BYTES:
            raise ValueError(f"{st.st_size} bytes, more than an id")
        text = os.read(fd, AGENT_ID_MAX_BYTES + 1).strip()
    finally:
        os.close(fd)
    if not AGENT_ID_RE.fullmatch(text.decode("ascii", "replace")):
        raise ValueError("not an agent id (a UUID)")
    return text.decode()


def _write_agent_id(path: str) -> str:
    aid = str(uuid.uuid4())
    try:
        os.unlink(path)  # whatever was refused in its place: the link itself, not its target
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "w") as f:
        f.write(aid)
    return aid


@dataclass
class Held:
    """Events of a chunk that did not fit in the budget, with what they reach to."""

    frames: Frames
    chunk: Chunk | None
    end: int


@dataclass
class Stream:
    """The loop's side of one file being read: its framer, its encoder, and how far its
    bytes are counted in the volume figures."""

    fid: str
    path: str
    job: str
    framer: Framer
    counted_to: int
    encoder: FileEncoder | None = None
    held: Held | None = None  # events read but not yet in a batch: the in-flight budget was spent
    doc_overhead: int = 512  # bytes of a document besides its message, as last measured


# Given the agent's callback for settled batches, the sender (a stand-in in model tests).
MakeSender = Callable[[Callable[[Batch], None]], "send.Sender"]


class Agent:
    def __init__(self, cfg: Config, make_sender: MakeSender | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.clock = clock
        # Offsets, dead letters and the spool hold text from root-only logs: the agent's alone.
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        os.chmod(cfg.state_dir, 0o700)
        self.entries = registry.load(cfg.state_dir)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.discovery = Discovery(cfg.inputs, self.wake)
        self.jail = Jail.of(cfg.inputs)
        self.acker = Acker(self.entries, cfg.state_dir, cfg.registry.forget_after_s, self.jail)
        self.reader = Reader(cfg.reader, self.entries, self.discovery.job_of, self.jail, clock, self.acker.retired)
        self.budget = Budget(cfg.batch.max_inflight_bytes)
        self.spool = Spool(os.path.join(cfg.state_dir, "spool"), cfg.spool.max_bytes)
        self.stalled_since = self.last_ack_at = clock()
        # Batches with the sender, by id: their bodies, to be spooled too if Elasticsearch goes
        # away (else a kill -9 in the outage finds their lines rotated away).
        self.held: dict[int, tuple[Batch, bytearray]] = {}
        self.sender = (make_sender or self._sender)(self._on_done)
        self.acked: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self.batch = Batch(started=clock())
        self.streams: dict[str, Stream] = {}
        self.rules = Rules(cfg.formats)
        self.agent_id = agent_id(cfg.state_dir)
        self.vm_meta = encode.metadata(
            {"host.name": socket.gethostname(), "host.ip": cfg.bosh.ip, "agent.name": "log-shipper",
             "agent.type": "log-shipper", "agent.version": __version__, "agent.id": self.agent_id},
            {"bosh.director": cfg.bosh.director, "bosh.environment": cfg.bosh.environment,
             "bosh.deployment": cfg.bosh.deployment, "bosh.instance.group": cfg.bosh.instance_group,
             "bosh.instance.index": cfg.bosh.index, "bosh.instance.id": cfg.bosh.id, "bosh.instance.az": cfg.bosh.az},
        )
        self.health: health.HealthServer | None = None
        now = clock()
        self.next_rescan = now + cfg.reader.rescan_interval_s
        self.next_checkpoint = now + cfg.registry.flush_interval_s
        self.next_status = now  # the first status goes out with the first turn
        self.next_poll = now
        self.polls = 0
        self.shipped = fleet.Shipped()

    def _sender(self, on_done: Callable[[Batch], None]) -> send.Sender:
        return send.Sender(self.cfg, send.client(self.cfg.elasticsearch), on_done)

    def offsets(self) -> list[offsets.FileOffset]:
        """Also called from the endpoint's threads: the reader's tables are copied first (atomic in C)."""
        r, entries = self.reader, dict(self.entries)
        errors = dict(r.unreadable)
        errors.update((entries[fid].path, err) for fid, err in dict(r.failing).items() if fid in entries)
        return offsets.view(list(entries.values()), self.jail, [*r.refused, *r.unreadable], errors)

    def problems(self) -> list[str]:
        sh = self.sender.health
        since = max(sh.last_success or 0.0, self.sender.waiting_since)
        stuck = time.time() - since if self.sender.in_flight else 0.0
        return health.problems(self.cfg.health, self.offsets(), sh.refused_since, sh.refused_reason, stuck,
                               unlisted_dirs=self.discovery.unlisted, waiting=dict(self.reader.waiting), last_error=sh.last_error,
                               spool=self.spool.status())

    # -- start, run, stop ---------------------------------------------------------------

    def start(self, watch: bool = True) -> None:
        """Open what the loop needs: the health endpoint (raises OSError if its port is taken),
        file events (`watch`), the first scan matched to the registry, the senders."""
        log.info("start", "log-shipper starting", version=__version__, root=self.cfg.inputs.root,
                 hosts=[send.redact(h) for h in self.cfg.elasticsearch.hosts], target=self.cfg.target.name,
                 known_files=len(self.entries))
        metrics.INFLIGHT_LIMIT.set(self.cfg.batch.max_inflight_bytes)
        metrics.SPOOL_LIMIT.set(self.cfg.spool.max_bytes)
        if self.cfg.health.enabled:
            self.health = health.HealthServer(self.cfg.health, self.offsets, self.problems, self.spool.status)
            self.health.start()
        if watch:
            self.discovery.start()
        self.reader.start(self.discovery.scan())
        self.sender.start()

    def run(self) -> None:
        """Turn until stopped, waiting for the next poll, the batch's flush, a file event or an
        acknowledgement when idle; then shut down."""
        while not self.stopping.is_set():
            if not self.turn():
                self.wake.wait(max(0.0, self._next_due() - self.clock()))
                self.wake.clear()
        self.shutdown()

    def _next_due(self) -> float:
        """When the next turn has work: the next poll, or the batch's flush if that is sooner."""
        if self.batch.docs:
            return min(self.next_poll, self.batch.started + self.cfg.batch.flush_interval_s)
        return self.next_poll

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def turn(self) -> bool:
        """One turn of the loop: settle acknowledgements, feed spooled batches to the sender,
        discover, take every due file once through read -> frame -> encode -> batch, send (or
        spool) a batch that is due, checkpoint when due. True when anything was read or framed."""
        self._settle_acks()
        self._drain_spool()
        now = self.clock()
        if self.discovery.rescan_requested or now >= self.next_rescan:
            self.discovery.rescan_requested = False
            self.reader.sync(self.discovery.scan())
            self.next_rescan = now + self.cfg.reader.rescan_interval_s
        for path in self.discovery.take_changed():
            if self.reader.knows(path) or self.discovery.matches(path):
                self.reader.changed(path)
            else:
                self.reader.copy_changed(path)
        if now >= self.next_poll:
            self.polls += 1
            self.reader.poll(now, quiet_too=self.polls % QUIET_POLLS == 0,
                             long_quiet_too=self.polls % LONG_QUIET_POLLS == 0)
            if self.reader.release_deleted():  # what those copies' streams hold is complete now
                for ended in self.reader.take_ended():
                    self._ended(ended, encode.read_time())
            self.next_poll = now + self.cfg.reader.poll_interval_s
        if self.held and self._spooling():
            self._spool_held()
        progressed = self._read_files()
        if self.reader.waiting:
            self._make_room()
        self._observe_paused()
        if self.batch.docs and self.clock() - self.batch.started >= self.cfg.batch.flush_interval_s:
            self.flush_batch()
        elif not self.batch.docs and self.batch.segments:
            self.flush_batch()
        if self.clock() >= self.next_checkpoint:
            self.acker.checkpoint()
            self.next_checkpoint = self.clock() + self.cfg.registry.flush_interval_s
        if self.cfg.fleet.enabled and self.clock() >= self.next_status:
            self._report_status()
            self.next_status = self.clock() + self.cfg.fleet.interval_s
        metrics.INFLIGHT_BYTES.set(self.budget.used)
        metrics.SPOOL_BYTES.set(self.spool.bytes)
        metrics.SPOOL_SEGMENTS.set(self.spool.segments)
        metrics.SPOOL_OLDEST_AGE.set(self.spool.oldest_age())
        metrics.OPEN_FILES.set(len(self.reader.sources))
        return progressed

    def shutdown(self, grace_s: float = 20.0) -> None:
        """Send what was read, wait for it to be acknowledged, save offsets."""
        if self.batch.docs or self.batch.segments:
            self.flush_batch()
        deadline = time.monotonic() + grace_s
        while self.sender.in_flight and time.monotonic() < deadline:
            self._settle_acks()
            time.sleep(0.05)
        self.close()

    def close(self) -> None:
        """Save what is acknowledged and let go of threads, watches, files and the endpoint."""
        self._settle_acks()
        self.acker.checkpoint(force=True)
        self.sender.stop()
        self.discovery.stop()
        self.reader.close_all()
        if self.health is not None:
            self.health.stop()
        log.info("stop", "log-shipper stopped; offsets saved", unacknowledged_batches=self.sender.in_flight)

    # -- one file's pass: read -> frame -> encode -> batch --------------------------------

    def _may_read(self) -> bool:
        """Room in the budget, or in the spool while batches go there."""
        if self.budget.room():
            self.stalled_since = self.clock()
            return True
        return self._spooling() and self.spool.room(self.cfg.batch.max_bytes)

    def _spooling(self) -> bool:
        """New batches go to the spool: while it holds segments (they are older and go
        first), or once the budget has been spent, with requests failing and nothing
        acknowledged for SPOOL_AFTER_S. While Elasticsearch keeps up the spool is not written
        at all, nor while it is slow but answering: waiting costs nothing then (the files hold
        the lines, and a rotated copy stays readable through its open descriptor)."""
        if not self.spool.enabled:
            return False
        if self.spool.segments:
            return True
        if self.budget.room() or not self.sender.health.failing():
            return False
        return self.clock() - max(self.stalled_since, self.last_ack_at) >= SPOOL_AFTER_S

    def _read_files(self) -> bool:
        progressed = False
        now = self.clock()
        read_time = encode.read_time()
        for fid in self.reader.due():
            if not self._may_read():
                break
            progressed |= self._read_file(fid, now, read_time)
        return progressed

    def _observe_paused(self) -> None:
        """Reading stopped short (no room): the files it did not reach are still watched, so
        a truncation finds its copy while it exists and what rotation destroys is counted."""
        if self._may_read():
            return
        for fid in self.reader.due():
            if self.reader.observe(fid):
                self.acker.dirty = True  # sizes and new generations on disk: a restart counts losses right
        read_time = encode.read_time()
        for ended in self.reader.take_ended():
            self._ended(ended, read_time)

    def _read_file(self, fid: str, now: float, read_time: bytes) -> bool:
        """Up to CHUNKS_PER_TURN chunks of one file into the batch, then what its end calls
        for: idle flushes, and closing a drained file. Stops when the budget is spent."""
        src = self.reader.source(fid)
        if src is None:
            self.reader.rest(fid)
            return False
        stream = self._stream(src)
        progressed = stream.held is not None
        if stream.held is not None:
            self._add_held(stream, read_time)
            if stream.held is not None:
                return True  # the budget is spent again: the rest waits
        for _ in range(CHUNKS_PER_TURN):
            if not self._may_read():
                return progressed
            chunk = self.reader.read(fid)
            if chunk is None:
                break
            self._add(stream, stream.framer.feed(chunk.data), chunk, read_time)
            progressed = True
            if stream.held is not None:
                return True  # the rest of this chunk waits for room; nothing more is read before it
        else:
            return progressed  # more to read: stays due
        for ended in self.reader.take_ended():
            self._ended(ended, read_time)
        if self.reader.source(fid) is not src:
            return True  # rotated: it continues in its copy, and its successor is due already
        self._at_end(src, stream, now, read_time)
        return progressed

    def _at_end(self, src: Source, stream: Stream, now: float, read_time: bytes) -> None:
        """Nothing more to read of `src` now: flush an idle partial line or a timed-out event,
        close it if drained, and let it rest unless something is pending."""
        framer = stream.framer
        if framer.partial and (src.final or now - src.last_data_at >= self.cfg.reader.idle_flush_s):
            self._add(stream, framer.flush(), None, read_time)
        elif framer.multiline_due(now):
            self._add(stream, framer.flush(partial=False), None, read_time)
        if stream.held is not None:
            return  # stays due: what is held goes first once the budget allows
        if self.reader.drained(src, now):
            # Each flush its own Frames: offsets kept. Closing now, so nothing may wait.
            self._add(stream, framer.flush(), None, read_time, wait=False)
            self.reader.finish(src)
            del self.streams[src.fid]
        elif src.live and not framer.has_pending():
            self.reader.rest(src.fid)

    def _ended(self, fid: str, read_time: bytes) -> None:
        """The file's content ended under the reader (rotated away, the rest lost): what its
        framer holds is complete."""
        stream = self.streams.pop(fid, None)
        if stream is not None:
            if stream.held is not None:  # its events come first; the stream ends now, so they cannot wait
                held, stream.held = stream.held, None
                self._add(stream, held.frames, held.chunk, read_time, held.end, wait=False)
            frames = stream.framer.flush()
            if len(frames):
                self._add(stream, frames, None, read_time, wait=False)

    def _make_room(self) -> None:
        """More files than reader.max_open_files: close the idle ones read longest ago (resting,
        nothing pending, all they read acknowledged) so the waiting ones get their turn."""
        r = self.reader
        need = len(r.waiting) - (self.cfg.reader.max_open_files - len(r.sources))
        if need > 0:
            idle = sorted((s for s in r.sources.values() if self._idle(s)), key=lambda s: s.last_data_at)
            for src in idle[:need]:
                self.streams.pop(src.fid, None)
                r.park(src.fid)
        r.open_waiting()

    def _idle(self, src: Source) -> bool:
        stream = self.streams.get(src.fid)
        entry = self.entries.get(src.fid)
        return (src.live and not self.reader.is_due(src.fid) and entry is not None and entry.offset == src.pos
                and (stream is None or (stream.held is None and not stream.framer.has_pending())))

    def _stream(self, src: Source) -> Stream:
        """The fid's stream, begun where its source is when first seen (a copy that continues
        a file keeps the file's stream, partial line included)."""
        stream = self.streams.get(src.fid)
        if stream is None:
            rule = self.rules.of(self.discovery.relpath(src.path))
            framer = Framer(src.pos, self.cfg.reader.max_line_bytes, rule.multiline, self.clock)
            stream = Stream(src.fid, src.path, self.discovery.job_of(src.path), framer, src.pos)
            self.streams[src.fid] = stream
        return stream

    def _encoder(self, stream: Stream) -> FileEncoder:
        if stream.encoder is None:
            fmt = self.rules.of(self.discovery.relpath(stream.path)).format
            extract = None if fmt == "raw" else FORMATS[fmt]
            # The path as shown: a file name that is not UTF-8 has no JSON string of its own.
            stream.encoder = FileEncoder(self.cfg.target.name, stream.fid, log.shown(stream.path), stream.job,
                                         self.vm_meta, extract)
        return stream.encoder

    def _add(self, stream: Stream, frames: Frames, chunk: Chunk | None, read_time: bytes,
             end: int | None = None, wait: bool = True) -> None:
        """Frames into batches, flushing each at max_docs or max_bytes, so one chunk (256 KiB of
        blank lines are 262,144 events) never makes one huge `_bulk`. When the in-flight budget is
        spent, the rest waits in the stream (`held`) until acknowledgements give it back."""
        end = stream.framer.committable if end is None else end
        while True:
            taken = self._encode(stream, frames, read_time)
            piece, frames = frames.split(taken)
            self._account(stream, piece, chunk, frames.start if len(frames) else end)
            if not len(frames):
                return
            if wait and not self._may_read():  # no room in the budget, nor in the spool while spooling
                stream.held = Held(frames, chunk, end)
                return

    def _add_held(self, stream: Stream, read_time: bytes) -> None:
        """Events held back by the budget go first, before anything more is read."""
        held, stream.held = stream.held, None
        self._add(stream, held.frames, held.chunk, read_time, held.end)

    def _encode(self, stream: Stream, frames: Frames, read_time: bytes) -> int:
        """Encode as many of `frames` as fit in the batch into its body; how many. By count,
        and by bytes at the stream's measured size of a document besides its message; if
        escapes made them larger, fewer. Only a document alone may exceed max_bytes."""
        if not frames.lines:
            return 0
        batch, limit = self.batch, self.cfg.batch.max_bytes
        n = min(len(frames), max(1, self.cfg.batch.max_docs - batch.docs))
        lines, room = frames.lines[:n] if n < len(frames) else frames.lines, limit - len(batch.body)
        if sum(map(len, lines)) + n * stream.doc_overhead > room:  # per line in C: this is the hot path
            sizes = list(accumulate(map(stream.doc_overhead.__add__, map(len, lines))))
            n = max(1, bisect_right(sizes, room))
        before = len(batch.body)
        piece = frames.split(n)[0] if n < len(frames) else frames
        msg = self._encoder(stream).encode(piece, read_time, batch.body)
        if len(batch.body) > limit and n > 1:
            # Keep the documents that fit rather than encode fewer again (that was ~8% of the encoding).
            n = _cut_to_fit(batch.body, before, limit, n)
            msg = sum(map(len, piece.lines[:n]))
        stream.doc_overhead = max(1, (len(batch.body) - before - msg) // n)
        return n

    def _account(self, stream: Stream, frames: Frames, chunk: Chunk | None, end: int) -> None:
        """What `_encode` put in the body, and the file's reach up to `end`, into the batch;
        flush it when full."""
        batch = self.batch
        seg = batch.segment_for(stream.fid, stream.job)
        if frames.lines:
            since = chunk.since if chunk is not None else self.clock()
            batch.started = since if batch.docs == 0 else min(batch.started, since)
            grown = len(batch.body) - batch.budgeted
            self.budget.take(grown)
            batch.budgeted += grown
            batch.docs += len(frames)
            seg.lines += len(frames)
            metrics.LINES_READ.labels(stream.job).inc(len(frames))
        if end > stream.counted_to:
            # File bytes, newlines included, so volume figures add up to file sizes.
            seg.bytes += end - stream.counted_to
            metrics.BYTES_READ.labels(stream.job).inc(end - stream.counted_to)
            stream.counted_to = end
        if end != seg.end:
            seg.end = end
            seg.tail = self.reader.tail_of(stream.fid, chunk, end)
        if batch.docs >= self.cfg.batch.max_docs or len(batch.body) >= self.cfg.batch.max_bytes:
            self.flush_batch()

    # -- batches out, acknowledgements back -------------------------------------------

    def flush_batch(self) -> None:
        """Send the batch being filled (or, with only offsets moved, acknowledge it at once)."""
        batch, self.batch = self.batch, Batch(started=self.clock())
        self.acker.track(batch)
        if batch.docs and self._spooling():
            self._spool_held()
            if self._to_spool(batch):
                return
        if batch.docs:
            if self.spool.enabled:
                self.held[id(batch)] = (batch, batch.body)
            self.sender.submit(batch)
        else:
            self.acker.done(batch)  # only offsets moved (e.g. past a dropped overlong tail)

    def _report_status(self) -> None:
        """This agent's status document, through the same sender and budget as its logs."""
        now = time.time()
        sh = self.sender.health
        facts = fleet.Facts(self.offsets(), self.problems(), sh.refused_since is not None,
                            int(sum(s.value for m in metrics.DEAD_LETTERED.collect() for s in m.samples
                                    if s.name.endswith("_total"))),
                            self.shipped.take())
        b = self.cfg.bosh
        identity = {"agent": {"id": self.agent_id, "version": __version__}, "host": {"name": socket.gethostname()},
                    "bosh": {"director": b.director, "deployment": b.deployment,
                             "instance": {"group": b.instance_group, "index": b.index, "id": b.id, "az": b.az}}}
        doc = fleet.status_doc(identity, facts, self.discovery.job_of, self.cfg.fleet.interval_s,
                               self.cfg.health.lost_window_s, now)
        body = bytearray(fleet.bulk_body(self.cfg.fleet.index, self.agent_id, doc, now))
        batch = Batch(body=body, docs=1, started=self.clock(), budgeted=len(body), status=True)
        self.budget.take(len(body))
        self.sender.submit(batch)

    def _on_done(self, batch: Batch) -> None:
        """Sender thread: hand the batch back to the loop. Its body is let go of at once
        (not at the next turn): held bodies never outlive the sender's own use of them."""
        self.held.pop(id(batch), None)
        self.acked.put(batch)
        self.wake.set()

    def _settle_acks(self) -> None:
        while True:
            try:
                batch = self.acked.get_nowait()
            except queue.Empty:
                return
            self.last_ack_at = self.clock()
            if batch.spool_seq is None:
                if not all(seg.done for seg in batch.segments):  # done already if spooled meanwhile
                    self.acker.done(batch)
            else:
                self.spool.delete(batch.spool_seq)  # its offsets advanced when it was spooled
                if not self.spool.segments:
                    log.info("spool_drained", "the disk spool is delivered; sending straight to Elasticsearch again")
            self.budget.give_back(batch.budgeted)
            for seg in batch.segments:
                if seg.lines:
                    self.shipped.add(seg.job, seg.lines, seg.bytes)

    # -- the spool: batches Elasticsearch could not take ----------------------------------

    def _to_spool(self, batch: Batch) -> bool:
        """The batch durably in the spool; its files' offsets may advance now. False if it
        could not be written: it is then sent (held in memory) like any batch."""
        try:
            written = self.spool.append(batch)
        except OSError as e:
            log.error("spool_write_failed", "cannot write to the spool; holding the batch in memory",
                      path=self.spool.directory, error=e.strerror or str(e),
                      hint="check free space and permissions of state_dir")
            return False
        if not written:  # larger than the room left: sent instead (one batch beyond the budget)
            return False
        if self.spool.segments == 1:
            log.warn("spooling", "Elasticsearch is not taking data; reading on into the disk spool",
                     path=self.spool.directory, max_bytes=self.spool.max_bytes,
                     hint="check Elasticsearch; the spool drains by itself once it answers")
        self.budget.give_back(batch.budgeted)
        batch.budgeted = 0
        self.acker.done(batch)
        return True

    def _spool_held(self) -> None:
        """The batches Elasticsearch has not taken, into the spool ahead of new ones: their
        offsets advance now, and a crash no longer depends on the files. The sender keeps its
        copy; whichever arrives second is a 409 (same `_id`s), not a duplicate."""
        for key, (batch, body) in list(self.held.items()):  # a copy: sender threads pop from it
            copy = Batch(body=body, docs=batch.docs, segments=batch.segments)
            if not self._to_spool(copy):
                return
            self.held.pop(key, None)

    def _drain_spool(self) -> None:
        """Spooled batches to the sender, oldest first, under the same budget as new ones,
        less a batch: reading goes on into the spool while it drains, and the batch being
        filled then is not in the budget. So memory stays as bounded as without a spool."""
        while self.spool.unsent() and (not self.budget.used
                                       or self.budget.used + self.cfg.batch.max_bytes <= self.budget.limit):
            try:
                batch = self.spool.take()
            except SpoolCorrupt as e:
                self._spool_corrupt(e)
                continue
            batch.budgeted = len(batch.body)
            self.budget.take(batch.budgeted)
            self.sender.submit(batch)

    def _spool_corrupt(self, e: SpoolCorrupt) -> None:
        log.error("spool_segment_corrupt", "a spool segment is damaged; its lines are lost, the rest is delivered",
                  path=e.path, reason=e.reason, hint="check the disk under state_dir")
        if e.parts is None:
            metrics.LOST_UNKNOWN.labels("").inc()
            return
        for fid, job, nbytes in e.parts:
            entry = self.entries.get(fid)
            if entry is None:  # forgotten already: still counted in the metrics
                metrics.LOST_BYTES.labels(job).inc(nbytes)
                continue
            self.reader.count_lost(entry, nbytes, "a damaged spool segment held these lines",
                                   hint="check the disk under state_dir", segment=e.path)


def _cut_to_fit(body: bytearray, before: int, limit: int, docs: int) -> int:
    """Drop the `docs` documents appended after `before` that end past `limit`, keeping at least
    one; how many are kept. A document is two NDJSON lines (action, source) and JSON escapes every
    newline inside them, so the newlines alone mark where documents end."""
    lines = 2 * docs - body.count(b"\n", limit)  # lines that end within the limit: only the overshoot is counted
    if lines < 2:  # only a document alone may exceed the limit
        end = body.index(b"\n", body.index(b"\n", before) + 1)
    else:
        end = body.rfind(b"\n", before, limit)
        if lines % 2:  # that newline ends an action line: its document does not fit
            end = body.rfind(b"\n", before, end)
    del body[end + 1:]
    return max(1, lines // 2)
