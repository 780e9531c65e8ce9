"""Acknowledged prefixes -> registry offsets. The only writer of the registry.

Batches finish out of order when several are in flight; a file's offset advances only
over the contiguous run of its segments whose batches are all acknowledged.

It also forgets what can never matter again (`forgettable`), so the entries the agent
keeps, scans and snapshots follow the files on disk, not the months of rotations behind.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque

from agent import identity, metrics, registry
from agent.batch import Batch, Segment
from agent.contain import Jail
from agent.identity import Head
from agent.registry import Entry
from agent.volume import Volume

FORGET_AFTER_IDLE_S = 120.0  # a drained entry is forgotten this long after its last change at the earliest
FORGET_CHECK_S = 60.0  # how often entries are looked at for forgetting (a directory listing each)
VOLUME_SAVE_S = 60.0  # volume.json is statistics: rewritten at most this often, and when forced


class Acker:
    def __init__(self, entries: dict[str, Entry], state_dir: str, forget_after_s: float, jail: Jail):
        self.entries = entries
        self.jail = jail  # copies are looked at only as the reader would: through the jail
        self.state_dir = state_dir
        self.forget_after_s = forget_after_s
        self.pending: dict[str, deque[Segment]] = {}
        self.dirty = True
        self.volume = Volume(state_dir)
        self.journal = registry.Journal(state_dir, forget_after_s)
        self.saved = set(entries)  # fids the registry on disk knows
        self._next_forget = 0.0
        self._volume_saved = time.monotonic()

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

    @property
    def retired(self) -> dict[str, registry.Retired]:
        """Identities of forgotten entries, by fid (see registry.Retired)."""
        return self.journal.retired

    def checkpoint(self, force: bool = False) -> None:
        now = time.time()
        if time.monotonic() >= self._next_forget:
            self._next_forget = time.monotonic() + FORGET_CHECK_S
            for fid in forgettable(self.entries, self.pending, now, self.forget_after_s, self.jail):
                self.journal.retire(self.entries, fid, now)
                self.dirty = True
        if self.dirty or force:
            written = self.journal.write(self.entries, now)
            if written.records:
                metrics.REGISTRY_WRITE_SECONDS.observe(written.seconds)
            self.saved = set(self.entries)
            self.dirty = False
        # Rewritten whole, a month of hourly buckets per job (~20 KiB a job): every second it
        # would be the biggest thing the agent writes.
        if force or time.monotonic() - self._volume_saved >= VOLUME_SAVE_S:
            self.volume.save()
            self._volume_saved = time.monotonic()


def forgettable(entries: dict[str, Entry], pending: dict, now: float, keep_lost_s: float, jail: Jail) -> list[str]:
    """Entries that can never matter again: gone, drained and acknowledged to their end, idle
    for FORGET_AFTER_IDLE_S, with no lost bytes of the last `keep_lost_s` (health reports them),
    and no copy left on disk (a copy still there must keep its entry, or it would be read
    again as a file never seen). And, as before, any gone entry untouched for `keep_lost_s`."""
    drained: dict[str, list[Entry]] = {}
    out = []
    for e in entries.values():
        if not e.gone or e.fid in pending:
            continue
        if now - e.updated_at > keep_lost_s:
            out.append(e.fid)  # untouched that long: forgotten whatever it holds, as always
        elif (e.offset >= e.size and now - e.updated_at >= FORGET_AFTER_IDLE_S
              and not (e.lost_bytes and now - e.lost_at < keep_lost_s)):
            drained.setdefault(e.path, []).append(e)
    for path, group in drained.items():
        heads = _heads_beside(path, jail)
        if heads is None:
            continue
        out.extend(e.fid for e in group if not any(Head.of(h[: e.head_len]) == Head(e.head_len, e.head_hash) for h in heads))
    return out


def _heads_beside(path: str, jail: Jail) -> list[bytes] | None:
    """The heads of the file at `path` and of every name beginning with it (its rotated
    copies); None when the directory cannot be listed or a head cannot be read: then
    nothing of that path is forgotten."""
    directory, base = os.path.split(path)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(base)]
    except FileNotFoundError:
        return []  # the directory is gone, and every copy with it
    except OSError:
        return None
    heads = []
    for n in names:
        cand = os.path.join(directory, n)
        try:
            if not stat.S_ISREG(os.lstat(cand).st_mode):
                continue  # not a copy the reader would read (and a FIFO would block the open)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        head = jail.head(cand, identity.MAX_HEAD, copy_of=path)
        if head is None:
            if os.path.lexists(cand):
                return None  # unreadable, or a gzip still being written: look again later
            continue
        heads.append(head)
    return heads
