"""Acknowledged prefixes -> registry offsets. The only writer of the registry.

Batches finish out of order when several are in flight; a file's offset advances only
over the contiguous run of its segments whose batches are all acknowledged.
"""

from __future__ import annotations

import time
from collections import deque

from agent import metrics, registry
from agent.batch import Batch, Segment
from agent.registry import Entry
from agent.volume import Volume


class Acker:
    def __init__(self, entries: dict[str, Entry], state_dir: str, forget_after_s: float):
        self.entries = entries
        self.state_dir = state_dir
        self.forget_after_s = forget_after_s
        self.pending: dict[str, deque[Segment]] = {}
        self.dirty = True
        self.volume = Volume(state_dir)
        self.journal = registry.Journal(state_dir, forget_after_s)
        self.saved = set(entries)  # fids the registry on disk knows

    def track(self, batch: Batch) -> None:
        """Called in reading order, before the batch is sent.

        A file's entry is on disk before any of its lines can be indexed: after a kill -9
        the file is found again by its entry and keeps its fid. Otherwise a new generation
        with the same inode and first line (copytruncate) would derive the same fid as the
        one before, and its lines would be refused as that one's duplicates."""
        if any(seg.fid not in self.saved for seg in batch.segments):
            self.checkpoint(force=True)
        for seg in batch.segments:
            self.pending.setdefault(seg.fid, deque()).append(seg)

    def done(self, batch: Batch) -> None:
        now = time.time()
        for seg in batch.segments:
            seg.done = True
            metrics.LINES_ACKED.labels(seg.job).inc(seg.lines)
            metrics.BYTES_ACKED.labels(seg.job).inc(seg.bytes)
            if seg.lines:
                self.volume.add(seg.job, seg.lines, seg.bytes, now)
        for fid in {s.fid for s in batch.segments}:
            self._advance(fid, now)

    def _advance(self, fid: str, now: float) -> None:
        queue = self.pending.get(fid)
        entry = self.entries.get(fid)
        last = None
        while queue and queue[0].done:
            last = queue.popleft()
        if not queue:
            self.pending.pop(fid, None)
        if last is None or entry is None:
            return
        if last.end > entry.offset:
            entry.offset = last.end
            entry.tail = last.tail
        entry.updated_at = now
        if entry.offset >= entry.size:
            entry.caught_up_at = now
        self.dirty = True

    def unacked(self, fid: str) -> bool:
        return bool(self.pending.get(fid))

    def checkpoint(self, force: bool = False) -> None:
        now = time.time()
        for fid in [f for f, e in self.entries.items() if e.gone and now - e.updated_at > self.forget_after_s]:
            del self.entries[fid]
        if self.dirty or force:
            written = self.journal.write(self.entries, now)
            if written.records:
                metrics.REGISTRY_WRITE_SECONDS.observe(written.seconds)
            self.saved = set(self.entries)
            self.dirty = False
        self.volume.save()
