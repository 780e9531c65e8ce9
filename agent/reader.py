"""Read files: which file a path is, where its content went, and its next bytes.

**Where a line is read.** The reader keeps the table of open files (one `Source` each, by
fid), matches what it finds to registry entries, and makes the decisions of rotation: a
live file renamed away or deleted stays open (draining) until idle; a file truncated under
us (logrotate copytruncate) continues in its rotated copy, plain or gzipped, found by
content (`rotation`). What cannot be found is counted as lost, never silently skipped.

It hands out bytes (`Chunk`) and the fact that a file's content has ended (`take_ended`);
framing them into lines is the loop's step, not the reader's.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import identity, log, metrics, rotation
from agent.config import ReaderConfig
from agent.identity import Head
from agent.registry import Entry
from agent.source import GZIP_ERRORS, Source, open_copy


@dataclass
class Chunk:
    fid: str
    data: bytes
    base: int  # file offset of data[0]


class Reader:
    def __init__(self, cfg: ReaderConfig, entries: dict[str, Entry], job_of: Callable[[str], str],
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.entries = entries
        self.job_of = job_of
        self.clock = clock
        self.sources: dict[str, Source] = {}
        self.by_path: dict[str, str] = {}  # live path -> fid
        self.empty: set[str] = set()  # live paths with no bytes yet: no identity until they have one
        self.unreadable: dict[str, str] = {}  # path -> error, retried on every rescan
        self._due: set[str] = set()  # fids that may have unread bytes
        self._ended: list[str] = []  # fids whose content ended under us (rotated away, lost)
        self._since: dict[str, float] = {}  # live path -> last write of the newest rotated generation read
        self._full_warned = False

    # -- what the loop asks -----------------------------------------------------------

    def due(self) -> list[str]:
        """Fids that may have bytes to read, or pending work at their end."""
        return list(self._due)

    def rest(self, fid: str) -> None:
        """Nothing to do for `fid` until an event or rescan says so."""
        self._due.discard(fid)

    def source(self, fid: str) -> Source | None:
        return self.sources.get(fid)

    def knows(self, path: str) -> bool:
        return path in self.by_path

    def take_ended(self) -> list[str]:
        """Fids whose content ended under the reader (truncated with no copy to finish from):
        their last partial line or open event is complete now."""
        ended, self._ended = self._ended, []
        return ended

    def drained(self, src: Source, now: float) -> bool:
        """A renamed-away or deleted file, read to its end, that may be closed."""
        return not src.live and (src.final or now - src.last_data_at >= self.cfg.close_removed_after_s)

    # -- discovery --------------------------------------------------------------------

    def start(self, paths: list[str]) -> None:
        """First scan after start: match live files to the registry, then drain orphans."""
        self.sync(paths)
        matched = set(self.sources)
        for entry in list(self.entries.values()):
            # A gone entry below its size was read to its end but not all acknowledged
            # before a crash: its copy must be read again from the committed offset.
            if entry.fid not in matched and (not entry.gone or entry.offset < entry.size):
                copy = self._resume_orphan(entry)
                if copy is not None:
                    self._unseen_copies(entry.path, rotation.mtime(copy.reading_from))

    def sync(self, paths: list[str]) -> None:
        """A full rescan: every matching path, plus a look at every open live file."""
        for path in list(self.by_path):
            self.changed(path)
        for path in paths:
            if path not in self.by_path:
                self.changed(path)
        self._due.update(self.sources)

    def changed(self, path: str) -> None:
        fid = self.by_path.get(path)
        if fid is None:
            self._open_live(path)
            return
        src = self.sources[fid]
        self._due.add(fid)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._unlink_path(src)
            return
        except OSError:
            return
        if (st.st_dev, st.st_ino) != (src.dev, src.ino):
            self._unlink_path(src)  # renamed away or replaced: drain the old inode, open the new file
            self._open_live(path)

    def copy_changed(self, path: str) -> None:
        """A rotated copy (x.log.1, x.log.1.gz) appeared or went: its live file is due, so a
        truncation is noticed now and the copy opened while it exists."""
        directory, name = os.path.split(path)
        for live, fid in self.by_path.items():
            d, base = os.path.split(live)
            if d == directory and name != base and name.startswith(base):
                self._due.add(fid)

    def observe(self, fid: str) -> bool:
        """While reading is paused (budget spent, spool full or off): what rotation does to a
        file is handled now, not when reading resumes. A truncation opens the copy (its
        descriptor keeps the data) or counts the loss; the size seen is kept, so a loss is
        counted in full. The same checks `_read_plain` makes, without reading. True when an
        entry changed (worth saving: a restart then knows the sizes and generations)."""
        src = self.sources.get(fid)
        if src is None or src.fd is None or src.final:
            return False
        try:
            st = os.fstat(src.fd)
        except OSError:
            return False
        if st.st_size < src.pos or not self._head_ok(src):
            self._truncated(src, st.st_mtime)
            return True
        if st.st_size <= src.size:
            return False
        src.size = st.st_size
        entry = self.entries[fid]
        entry.size = max(entry.size, st.st_size)
        return True

    def _unlink_path(self, src: Source) -> None:
        src.live = False
        self.by_path.pop(src.path, None)
        self._due.add(src.fid)

    def _open_live(self, path: str) -> None:
        if len(self.sources) >= self.cfg.max_open_files:
            if not self._full_warned:
                log.warn("open_files_limit", "too many open log files; new files wait until others are drained",
                         limit=self.cfg.max_open_files, hint="raise reader.max_open_files")
                self._full_warned = True
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.empty.discard(path)
            return
        except OSError as e:
            if self.unreadable.get(path) != e.strerror:
                log.warn("file_unreadable", "cannot read log file; retrying on every rescan",
                         path=path, error=e.strerror, hint="the agent needs read access (CAP_DAC_READ_SEARCH)")
            self.unreadable[path] = e.strerror or str(e)
            return
        self.unreadable.pop(path, None)
        st = os.fstat(fd)
        head = identity.read_head(fd)
        if not head:
            os.close(fd)
            self.empty.add(path)
            return
        self.empty.discard(path)
        entry = self._match(path, fd, st, head)
        src = Source(entry.fid, path, True, fd, None, st.st_dev, st.st_ino, entry.offset, self.clock(), size=st.st_size)
        entry.path, entry.size, entry.gone = path, st.st_size, False
        entry.updated_at = time.time()
        self.sources[entry.fid] = src
        self.by_path[path] = entry.fid
        self._due.add(entry.fid)

    def _match(self, path: str, fd: int, st: os.stat_result, head: bytes) -> Entry:
        """The registry entry this file continues, or a new one from offset 0."""
        for e in self.entries.values():
            if e.fid in self.sources or (e.dev, e.ino) != (st.st_dev, st.st_ino):
                continue
            if not identity.head_matches(fd, Head(e.head_len, e.head_hash)):
                continue
            if e.offset <= st.st_size and (not e.tail or identity.tail_matches(fd, e.offset, e.tail)):
                return e
            log.warn("file_rewritten", "file was truncated and rewritten while the agent was away; reading it anew",
                     path=path, saved_offset=e.offset, size=st.st_size)
            self._resume_orphan(e)
            return self._new_entry(path, st, head, salt=True)
        return self._new_entry(path, st, head)

    def _new_entry(self, path: str, st: os.stat_result, head: bytes, salt: bool = False) -> Entry:
        fid = identity.new_fid(st.st_dev, st.st_ino, head)
        if salt or fid in self.entries:
            fid = identity.digest(b"%s:%d" % (fid.encode(), time.time_ns()))
        h = Head.of(head)
        now = time.time()
        entry = Entry(fid, path, st.st_dev, st.st_ino, h.length, h.hash, size=st.st_size, updated_at=now, caught_up_at=now)
        self.entries[fid] = entry
        return entry

    # -- rotation ---------------------------------------------------------------------

    def _resume_orphan(self, entry: Entry) -> Source | None:
        """A registry entry whose file is no longer at its path: find its copy, or count the loss."""
        src = self._open_copy(entry.fid, entry.path, Head(entry.head_len, entry.head_hash), entry.offset)
        if src is None:
            self._lost(entry, max(0, entry.size - entry.offset), entry.offset)
            entry.gone = True
        return src

    def _truncated(self, src: Source, mtime: float) -> None:
        """copytruncate: the file was truncated (and perhaps written again) under us. What we
        had not read of it continues in a rotated copy, found by content, or is counted lost.
        What the file holds now is a generation of its own: at the live path it is opened as
        a new file; renamed away before we looked (`mtime` its last write), it is read from
        its start like any copy never seen live."""
        entry = self.entries[src.fid]
        copy = self._open_copy(src.fid, src.path, Head(entry.head_len, entry.head_hash), src.pos)
        src.close()
        if copy is None:
            self._lost(entry, max(0, src.size - src.pos), src.pos)
            self._ended.append(src.fid)
            entry.gone = True
            self.sources.pop(src.fid, None)
        if src.live:
            self._unlink_path(src)
            self._open_live(src.path)
            if copy is None:
                return
            mtime = rotation.mtime(copy.reading_from)
        self._unseen_copies(src.path, mtime)

    def _unseen_copies(self, path: str, since: float) -> None:
        """Rotated copies no entry knows, written to after `since` (the last write of a generation
        we know): whole generations that came and went while the reader was behind or stopped.
        Each is read from its start. Called after the live file is open, so every generation
        before the live one is a copy by now; copies older than `since` predate our knowledge."""
        # Also back to the generation before: one that was still empty when its predecessor was
        # rotated, then filled and rotated before we looked again, is newer than that one only.
        since, self._since[path] = min(since, self._since.get(path, since)), since
        known = rotation.known_heads(self.entries.values(), path)
        for cand in rotation.plain_first(rotation.siblings(path)):
            if rotation.mtime(cand) < since:
                continue
            head = identity.path_head(cand, identity.HEAD_BYTES)
            if not head or rotation.begins_with_any(head, known):
                continue
            try:
                st = os.stat(cand)
            except OSError:
                continue
            size = rotation.gz_size(cand) if cand.endswith(".gz") else st.st_size
            try:  # copytruncate: the generation was written under the live file's inode, and
                st = os.stat(path)  # a killed agent that saw it there derived its fid from that
            except OSError:
                pass
            entry = self._new_entry(path, st, head)
            entry.size = size
            src = open_copy(entry.fid, path, cand, Head.of(head), 0, self.clock())
            if src is None:
                del self.entries[entry.fid]
                continue
            known.append(Head.of(head))
            self.sources[entry.fid] = src
            self._due.add(entry.fid)
            log.info("rotated_unseen", "reading a rotated copy whose file was never seen live",
                     path=path, copy=cand)

    def _open_copy(self, fid: str, path: str, head: Head, offset: int) -> Source | None:
        e = self.entries[fid]
        for cand in rotation.search_order(rotation.siblings(path), (e.dev, e.ino)):
            if rotation.owned_by_other(self.entries.values(), fid, path, cand, head):
                continue
            src = open_copy(fid, path, cand, head, offset, self.clock())
            if src is not None:
                old = self.sources.get(fid)
                if old is not None and old is not src:
                    old.close()
                self.sources[fid] = src
                self._due.add(fid)
                self._copy_size(e, src.size if src.gz is None else rotation.gz_size(cand), offset)
                log.info("rotated_copy", "reading the rest of a rotated file from its copy",
                         path=path, copy=cand, offset=offset)
                return src
        return None

    def _copy_size(self, e: Entry, copy_size: int, offset: int) -> None:
        """The copy's size is the generation's: a restart after a crash re-reads a finished
        (gone) copy only up to the entry's size. A copy smaller than the file was seen is
        copytruncate's own loss (lines written between its copy and its truncate): counted
        now, exactly, rather than as unread bytes on a later restart."""
        if not copy_size or copy_size >= e.size:
            e.size = max(e.size, copy_size)
            return
        end = max(copy_size, offset)
        n, e.size = e.size - end, end
        self.count_lost(e, n, "lines written between logrotate's copy and its truncate are in no copy "
                              "(copytruncate's own loss)", from_offset=end, race=True,
                        hint="logrotate copytruncate loses these; rotating less often or by rename avoids it")

    def _lost(self, entry: Entry, n: int, end: int) -> None:
        """Count [end, end + n) as lost; the entry's size becomes `end`, so a restart does
        not look for those bytes again."""
        entry.size = end
        self.count_lost(entry, n, "log content was rotated away before it was read", from_offset=end,
                        hint="ship faster (check Elasticsearch), keep more rotated copies (logrotate rotate/size) "
                             "or give the spool more room (spool.max_bytes)")

    def count_lost(self, entry: Entry, n: int, why: str, hint: str, **where) -> None:
        """`n` bytes of `entry`'s generation will never be shipped: counted once, reported."""
        if n <= 0:
            return
        entry.lost_bytes += n
        entry.lost_at = time.time()
        metrics.LOST_BYTES.labels(self.job_of(entry.path)).inc(n)
        log.error("bytes_lost", why, path=entry.path, generation=entry.fid, lost_bytes=n, hint=hint, **where)

    # -- reading ----------------------------------------------------------------------

    def read(self, fid: str) -> Chunk | None:
        """The next chunk of `fid`'s file, or None at its end (after handling truncation)."""
        src = self.sources.get(fid)
        if src is None:
            return None
        data = self._read_gz(src) if src.gz is not None else self._read_plain(src)
        if not data:
            return None
        chunk = Chunk(fid, data, src.pos)
        src.pos += len(data)
        return chunk

    def _read_plain(self, src: Source) -> bytes:
        try:
            st = os.fstat(src.fd)
        except OSError:
            return b""
        # The head is checked on every read of a live file, not only when it grows past the
        # size last seen: truncated and rewritten up to anywhere between our position and that
        # size (a reader that is behind), the file would otherwise be read on at the old offset.
        if st.st_size < src.pos or (not src.final and not self._head_ok(src)):
            if not src.final:  # a finished copy does not shrink; a live or moved file was truncated
                self._truncated(src, st.st_mtime)
            return b""
        if st.st_size > src.size:
            src.size = st.st_size
            self.entries[src.fid].size = st.st_size
        if st.st_size == src.pos:
            return b""
        try:
            data = src.pread(min(self.cfg.chunk_bytes, st.st_size - src.pos))
        except OSError as e:
            if e.errno != errno.EINTR:
                log.warn("read_failed", "reading a log file failed; will retry", path=src.path, error=e.strerror)
            return b""
        if data and src.live and not self._head_ok(src):
            self._truncated(src, st.st_mtime)  # truncated between the check and the read: the data may be new
            return b""
        if data:
            src.last_data_at = self.clock()
            self._grow_head(src)
        return data

    def _read_gz(self, src: Source) -> bytes:
        try:
            data = src.read_gz(self.cfg.chunk_bytes)
        except GZIP_ERRORS as e:
            log.warn("gzip_unreadable", "rotated gzip copy is damaged; the rest of it is lost",
                     path=src.reading_from, error=str(e))
            self._gz_damaged(src)
            return b""
        if data:
            src.size = max(src.size, src.pos + len(data))
            self.entries[src.fid].size = max(self.entries[src.fid].size, src.size)
        return data

    def _gz_damaged(self, src: Source) -> None:
        """The rest of a damaged gzip copy is lost: by its trailer's size if it has one,
        else as a generation of unknown size (never as zero)."""
        entry = self.entries[src.fid]
        size = max(entry.size, rotation.gz_size(src.reading_from))
        if size > src.pos:
            self._lost(entry, size - src.pos, src.pos)
        else:
            metrics.LOST_UNKNOWN.labels(self.job_of(entry.path)).inc()
            log.error("bytes_lost", "a damaged gzip copy's size is unknown: an unknown number of bytes is lost",
                      path=entry.path, generation=entry.fid, copy=src.reading_from, from_offset=src.pos,
                      hint="check the disk; logrotate's compress step may have been interrupted")

    def _head_ok(self, src: Source) -> bool:
        e = self.entries[src.fid]
        return identity.head_matches(src.fd, Head(e.head_len, e.head_hash))

    def _grow_head(self, src: Source) -> None:
        """A small file's fingerprint grows with it, up to HEAD_BYTES."""
        e = self.entries[src.fid]
        if e.head_len < identity.HEAD_BYTES and src.size > e.head_len and src.live:
            head = identity.read_head(src.fd)
            if Head.of(head[: e.head_len]) == Head(e.head_len, e.head_hash):  # not rewritten meanwhile
                h = Head.of(head)
                e.head_len, e.head_hash = h.length, h.hash

    def finish(self, src: Source) -> None:
        """Close a drained file: its entry is gone, what was read of it is the loop's."""
        src.close()
        if self.sources.get(src.fid) is src:
            del self.sources[src.fid]
        self._due.discard(src.fid)
        entry = self.entries.get(src.fid)
        if entry is not None:
            entry.gone = True
            entry.updated_at = time.time()

    def tail_of(self, fid: str, chunk: Chunk | None, end: int) -> str:
        """Hash of the bytes just before `end`, from the chunk when it has them."""
        lo = max(0, end - identity.TAIL_BYTES)
        if chunk is not None and lo >= chunk.base and end <= chunk.base + len(chunk.data):
            return identity.digest(chunk.data[lo - chunk.base : end - chunk.base])
        src = self.sources.get(fid)
        fd = src.fd if src is not None else None
        if fd is None or end <= 0:
            return ""
        n = min(identity.TAIL_BYTES, end)
        try:
            return identity.digest(os.pread(fd, n, end - n))
        except OSError:
            return ""

    def close_all(self) -> None:
        for src in self.sources.values():
            src.close()
