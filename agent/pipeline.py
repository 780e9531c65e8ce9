"""The agent's main loop: discover -> read -> frame -> encode -> batch -> send -> ack -> checkpoint.

Reading, framing, encoding and acknowledging happen on this one thread; only `_bulk`
requests run on sender threads, which hand finished batches back through a queue. So
the registry entries have a single owner and need no locks.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid

from agent import __version__, encode, health, log, metrics, offsets, registry, send
from agent.ack import Acker
from agent.batch import Batch, Budget
from agent.config import Config, MultilineConfig
from agent.discover import Discovery, glob_regex
from agent.encode import FileEncoder
from agent.formats import FORMATS, Extract
from agent.frame import Framer, Frames
from agent.reader import Chunk, Reader, Source

CHUNKS_PER_TURN = 4  # per file, before the next file gets its turn


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


def agent_id(state_dir: str) -> str:
    path = os.path.join(state_dir, "agent-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        aid = str(uuid.uuid4())
        with open(path, "w") as f:
            f.write(aid)
        return aid


class Agent:
    def __init__(self, cfg: Config):
        tune_malloc()
        self.cfg = cfg
        os.makedirs(cfg.state_dir, exist_ok=True)
        self.entries = registry.load(cfg.state_dir)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.discovery = Discovery(cfg.inputs, self.wake)
        self.reader = Reader(cfg.reader, self.entries, self._framer, self.discovery.job_of)
        self.acker = Acker(self.entries, cfg.state_dir, cfg.registry.forget_after_s)
        self.budget = Budget(cfg.batch.max_inflight_bytes)
        self.es = send.client(cfg.elasticsearch)
        self.sender = send.Sender(cfg, self.es, self._on_done)
        self.acked: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self.batch = Batch()
        self.encoders: dict[str, FileEncoder] = {}
        self.rules = [(glob_regex(r.glob), r) for r in cfg.formats]
        self.vm_meta = encode.metadata(
            {"host.name": socket.gethostname(), "host.ip": cfg.bosh.ip, "agent.name": "log-shipper",
             "agent.type": "log-shipper", "agent.version": __version__, "agent.id": agent_id(cfg.state_dir)},
            {"bosh.director": cfg.bosh.director, "bosh.environment": cfg.bosh.environment,
             "bosh.deployment": cfg.bosh.deployment, "bosh.instance.group": cfg.bosh.instance_group,
             "bosh.instance.index": cfg.bosh.index, "bosh.instance.id": cfg.bosh.id, "bosh.instance.az": cfg.bosh.az},
        )
        metrics.INFLIGHT_LIMIT.set(cfg.batch.max_inflight_bytes)
        self.started_at = time.time()
        self.health = health.HealthServer(cfg.health, self.offsets, self.problems) if cfg.health.enabled else None

    def offsets(self) -> list[offsets.FileOffset]:
        return offsets.view(list(self.entries.values()))

    def problems(self) -> list[str]:
        sh = self.sender.health
        since = max(sh.last_success or 0.0, self.sender.waiting_since)
        stuck = time.time() - since if self.sender.in_flight else 0.0
        return health.problems(self.cfg.health, self.offsets(), sh.refused_since, sh.refused_reason, stuck)

    # -- per-file choices -------------------------------------------------------------

    def _rule(self, path: str) -> tuple[str, MultilineConfig | None]:
        rel = self.discovery.relpath(path)
        for regex, rule in self.rules:
            if regex.match(rel):
                return rule.format, rule.multiline
        from agent import formats

        default = getattr(formats, "default_rule", None)
        return default(rel) if default else ("raw", None)

    def _framer(self, path: str, offset: int) -> Framer:
        return Framer(offset, self.cfg.reader.max_line_bytes, self._rule(path)[1])

    def _encoder(self, src: Source) -> FileEncoder:
        enc = self.encoders.get(src.fid)
        if enc is None:
            fmt = self._rule(src.path)[0]
            extract: Extract | None = None if fmt == "raw" else FORMATS[fmt]
            enc = FileEncoder(self.cfg.target.name, src.fid, src.path, self.discovery.job_of(src.path), self.vm_meta, extract)
            self.encoders[src.fid] = enc
        return enc

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        log.info("start", "log-shipper starting", version=__version__, root=self.cfg.inputs.root,
                 hosts=[send.redact(h) for h in self.cfg.elasticsearch.hosts], target=self.cfg.target.name,
                 known_files=len(self.entries))
        if self.health is not None:
            self.health.start()
        self.discovery.start()
        self.reader.start(self.discovery.scan())
        self.sender.start()
        now = time.monotonic()
        next_rescan = now + self.cfg.reader.rescan_interval_s
        next_checkpoint = now + self.cfg.registry.flush_interval_s
        while not self.stopping.is_set():
            self._settle_acks()
            now = time.monotonic()
            if self.discovery.rescan_requested or now >= next_rescan:
                self.discovery.rescan_requested = False
                self.reader.sync(self.discovery.scan())
                next_rescan = now + self.cfg.reader.rescan_interval_s
            for path in self.discovery.take_changed():
                if path in self.reader.by_path or self.discovery.matches(path):
                    self.reader.changed(path)
            progressed = self._pump()
            if self.batch.docs and time.monotonic() - self.batch.started >= self.cfg.batch.flush_interval_s:
                self._submit()
            elif not self.batch.docs and self.batch.segments:
                self._submit()
            if time.monotonic() >= next_checkpoint:
                self.acker.checkpoint()
                next_checkpoint = time.monotonic() + self.cfg.registry.flush_interval_s
            metrics.INFLIGHT_BYTES.set(self.budget.used)
            metrics.OPEN_FILES.set(len(self.reader.sources))
            if not progressed:
                self.wake.wait(0.25 if self.reader.active or self.batch.docs else 1.0)
                self.wake.clear()
        self._shutdown()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _pump(self) -> bool:
        progressed = False
        now = time.monotonic()
        read_time = encode.read_time()
        for fid in list(self.reader.active):
            src = self.reader.sources.get(fid)
            if src is None:
                self.reader.active.discard(fid)
                continue
            for _ in range(CHUNKS_PER_TURN):
                if not self.budget.room():
                    return progressed
                chunk = self.reader.read(src)
                if chunk is None:
                    break
                self._add(src, src.framer.feed(chunk.data), chunk, read_time)
                progressed = True
            else:
                continue  # more to read: stays active
            if self.reader.sources.get(fid) is not src:
                progressed = True  # rotated: its successor is active already
                continue
            for frames in self.reader.at_end(src, now):
                self._add(src, frames, None, read_time)
            if src.fid in self.reader.sources and not self.reader.needs_attention(src):
                self.reader.active.discard(fid)
            if fid not in self.reader.sources:
                self.encoders.pop(fid, None)
        while self.reader.pending_frames:
            src, frames = self.reader.pending_frames.pop(0)
            self._add(src, frames, None, read_time)
        return progressed

    def _add(self, src: Source, frames: Frames, chunk: Chunk | None, read_time: bytes) -> None:
        batch = self.batch
        job = self.discovery.job_of(src.path)
        seg = batch.segment_for(src.fid, job)
        if frames.lines:
            if not batch.docs:
                batch.started = time.monotonic()
            before = len(batch.body)
            self._encoder(src).encode(frames, read_time, batch.body)
            grown = len(batch.body) - before
            self.budget.take(grown)
            batch.budgeted += grown
            batch.docs += len(frames)
            seg.lines += len(frames)
            metrics.LINES_READ.labels(job).inc(len(frames))
        end = src.framer.committable
        if end > src.counted_to:
            # File bytes, newlines included, so volume figures add up to file sizes.
            seg.bytes += end - src.counted_to
            metrics.BYTES_READ.labels(job).inc(end - src.counted_to)
            src.counted_to = end
        if end != seg.end:
            seg.end = end
            seg.tail = self.reader.tail_of(src, chunk, end)
        if batch.docs >= self.cfg.batch.max_docs or len(batch.body) >= self.cfg.batch.max_bytes:
            self._submit()

    def _submit(self) -> None:
        batch, self.batch = self.batch, Batch()
        self.acker.track(batch)
        if batch.docs:
            self.sender.submit(batch)
        else:
            self.acker.done(batch)  # only offsets moved (e.g. past a dropped overlong tail)

    def _on_done(self, batch: Batch) -> None:
        """Sender thread: hand the batch back to the loop."""
        self.acked.put(batch)
        self.wake.set()

    def _settle_acks(self) -> None:
        while True:
            try:
                batch = self.acked.get_nowait()
            except queue.Empty:
                return
            self.acker.done(batch)
            self.budget.give_back(batch.budgeted)

    def _shutdown(self, grace_s: float = 20.0) -> None:
        """Send what was read, wait for it to be acknowledged, save offsets."""
        if self.batch.docs or self.batch.segments:
            self._submit()
        deadline = time.monotonic() + grace_s
        while self.sender.in_flight and time.monotonic() < deadline:
            self._settle_acks()
            time.sleep(0.05)
        self._settle_acks()
        self.acker.checkpoint(force=True)
        self.sender.stop()
        self.discovery.stop()
        self.reader.close_all()
        if self.health is not None:
            self.health.stop()
        log.info("stop", "log-shipper stopped; offsets saved", unacknowledged_batches=self.sender.in_flight)
