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
from types import MappingProxyType
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent import identity, log, metrics, rotation
from agent.config import ReaderConfig
from agent.contain import Jail, Refused
from agent.identity import Head
from agent.registry import Entry, Retired
from agent.source import GZIP_ERRORS, Source, open_copy


QUIET_S = 10.0  # a file without new bytes for this long is polled less often
LONG_QUIET_S = 60.0  # and one quiet this long less often still


@dataclass
class Chunk:
    fid: str
    data: bytes
    base: int  # file offset of data[0]
    since: float = 0.0  # monotonic time after which these bytes were written, as far as we know


class Reader:
    def __init__(self, cfg: ReaderConfig, entries: dict[str, Entry], job_of: Callable[[str], str], jail: Jail,
                 clock: Callable[[], float] = time.monotonic, retired: Mapping[str, Retired] = MappingProxyType({})):
        self.cfg = cfg
        # Identities of forgotten generations: a new file must not take one's fid (its lines
        # would be refused as that generation's documents), and a copy of one is not new.
        self.retired = retired
        self.jail = jail
        self.entries = entries
        self.job_of = job_of
        self.clock = clock
        self.sources: dict[str, Source] = {}
        self.by_path: dict[str, str] = {}  # live path -> fid
        # Live paths with no identity yet (empty, or their first line not complete), by the size
        # they had: looked at again once they grow.
        self.empty: dict[str, int] = {}
        self.unreadable: dict[str, str] = {}  # path -> error, retried on every rescan
        self.failing: dict[str, str] = {}  # fid -> read error: retried on every rescan, never closed as drained
        self.refused: dict[str, str] = {}  # path -> why the jail refused it; looked at again on every rescan
        self._due: set[str] = set()  # fids that may have unread bytes
        self._active: set[str] = set()  # fids that had bytes within QUIET_S (or may have): polled every time
        self._ended: list[str] = []  # fids whose content ended under us (rotated away, lost)
        self._since: dict[str, float] = {}  # live path -> last write of the newest rotated generation read
        self._full_warned = False
        # Over reader.max_open_files: paths waiting for a slot (since when, wall clock), and
        # files closed while idle to make room (path -> fid, size and mtime when closed).
        self.waiting: dict[str, float] = {}
        self.parked: dict[str, tuple[str, int, int]] = {}

    # -- what the loop asks -----------------------------------------------------------

    def due(self) -> list[str]:
        """Fids that may have bytes to read, or pending work at their end."""
        return list(self._due)

    def rest(self, fid: str) -> None:
        """Nothing to do for `fid` until an event or rescan says so."""
        self._due.discard(fid)

    def is_due(self, fid: str) -> bool:
        return fid in self._due

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
        return not src.live and src.fid not in self.failing and (
            src.final or now - src.last_data_at >= self.cfg.close_removed_after_s)

    def poll(self, now: float, quiet_too: bool, long_quiet_too: bool = True) -> None:
        """Live files whose size moved since they were last read are due: writes raise no file
        events (see discover.WATCHED). Files quiet for QUIET_S are looked at only `quiet_too`,
        those quiet for LONG_QUIET_S only `long_quiet_too` (less often: hundreds of quiet files
        must cost next to nothing, so the other polls do not even walk them). An empty file that
        got its first bytes is opened."""
        if quiet_too:
            srcs = self.sources.values()
            self._look(srcs if long_quiet_too else [s for s in srcs if now - s.last_data_at <= LONG_QUIET_S], now)
        else:
            self._active = {f for f in self._active if f in self.sources and now - self.sources[f].last_data_at <= QUIET_S}
            self._look([self.sources[f] for f in self._active], now)
        for path, seen in list(self.empty.items()):
            try:
                grown = os.stat(path).st_size != seen
            except OSError:
                del self.empty[path]
                continue
            if grown:
                self.changed(path)

    def _look(self, sources: Iterable[Source], now: float) -> None:
        """One fstat each: due if the size moved, else nothing was written to it up to `now`."""
        due, fstat = self._due, os.fstat
        for src in sources:
            if src.fid in due or not src.live or src.fd is None:
                continue
            try:
                size = fstat(src.fd).st_size
            except OSError:
                continue
            if size != src.pos:
                due.add(src.fid)
            else:
                src.looked_at = now

    # -- discovery --------------------------------------------------------------------

    def start(self, paths: list[str]) -> None:
        """First scan after start: match live files to the registry, then drain orphans."""
        self.sync(paths)
        matched = set(self.sources)
        for entry in list(self.entries.values()):
            # A gone entry below its size was read to its end but not all acknowledged
            # before a crash: its copy must be read again from the committed offset.
            if entry.fid not in matched and (not entry.gone or entry.offset < entry.size):
                if entry.path in self.waiting and _devino(entry.path) == (entry.dev, entry.ino):
                    continue  # still at its path, waiting for a slot: matched when it is opened
                refusal = self.jail.refusal(entry.path)  # a forged entry is no reason to read anything
                if refusal is not None:
                    self._refuse(entry.path, f"{refusal} (a registry entry)")
                    continue
                copy = self._resume_orphan(entry)
                if copy is not None:
                    self._unseen_copies(entry.path, rotation.mtime(copy.reading_from))
        # Generations that came and went while the agent was stopped after one it had finished
        # (no orphan to start from: its entry gone, the next one's never saved): from the newest
        # generation it knows on, every path it knows.
        for path in {e.path for e in self.entries.values()}:
            self._unseen_copies(path, self._newest_known(path))

    def _newest_known(self, path: str, but: str = "") -> float:
        """When the newest generation of `path` known (other than fid `but`) was last written:
        its copy's mtime, or when the agent last saw one if no copy of one is left."""
        others = [e for e in self.entries.values() if e.path == path and e.fid != but]
        known = rotation.head_index(rotation.known_heads(others, path))
        copies = [rotation.mtime(cand) for cand in rotation.siblings(path)
                  if rotation.begins_with_any(self.jail.head(cand, identity.MAX_HEAD, copy_of=path) or b"", known)]
        return max(copies) if copies else max((e.updated_at for e in others), default=0.0)

    def sync(self, paths: list[str]) -> None:
        """A full rescan: every matching path, plus a look at every open file: its size and its
        head (truncated and rewritten to the same size is no change of size)."""
        for path in list(self.by_path):
            self.changed(path, due=False)  # still there: due only if `_unchanged` says no, below
        for path in paths:
            if path not in self.by_path:
                self.changed(path)
        self._due.update(fid for fid, src in self.sources.items() if fid not in self._due and not self._unchanged(src))

    def _unchanged(self, src: Source) -> bool:
        """A live file at rest whose size and head are as last read: reading it would find
        nothing (the check `_read_plain_at` makes, without a pass through the loop)."""
        if not src.live or src.fd is None or src.final or src.fid in self.failing:
            return False
        try:
            return os.fstat(src.fd).st_size == src.pos and self._head_ok(src)
        except OSError:
            return False

    def changed(self, path: str, due: bool = True) -> None:
        fid = self.by_path.get(path)
        if fid is None:
            if path not in self.parked or self._unpark(path):
                self._open_live(path)
            return
        src = self.sources[fid]
        if due:
            self._due.add(fid)
        try:
            st = os.stat(path, follow_symlinks=False)  # replaced by a link: the new "file" is refused
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
                log.warn("open_files_limit", "more log files than reader.max_open_files; idle files are closed "
                         "and reopened when they change, so each gets its turn", limit=self.cfg.max_open_files,
                         hint="raise reader.max_open_files if files wait long (health says so)")
                self._full_warned = True
            self.waiting.setdefault(path, time.time())
            return
        self.waiting.pop(path, None)
        self.parked.pop(path, None)
        try:
            fd = self.jail.open(path)
        except FileNotFoundError:
            self.empty.pop(path, None)
            self.refused.pop(path, None)
            return
        except Refused as e:
            self._refuse(path, e.reason)
            return
        except OSError as e:
            self._unreadable(path, e)
            return
        self.refused.pop(path, None)
        seen = len(self.entries)
        try:
            st = os.fstat(fd)
            head = identity.read_head(fd)
            entry = self._match(path, fd, st, head) if head else None
        except OSError as e:
            os.close(fd)
            self._unreadable(path, e)
            return
        self._readable(path)
        if entry is None:
            os.close(fd)
            self.empty[path] = st.st_size
            return
        self.empty.pop(path, None)
        src = Source(entry.fid, path, True, fd, None, st.st_dev, st.st_ino, entry.offset, self.clock(), size=st.st_size)
        entry.path, entry.size, entry.gone = path, st.st_size, False
        entry.updated_at = time.time()
        self.sources[entry.fid] = src
        self.by_path[path] = entry.fid
        self._due.add(entry.fid)
        self._active.add(entry.fid)
        if len(self.entries) > seen and any(e.path == path and e.fid != entry.fid for e in self.entries.values()):
            # A new generation at a known path: ones before it may have come and gone between
            # two looks (rename rotation faster than the agent, or while it was starting).
            self._unseen_copies(path, self._newest_known(path, but=entry.fid))

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
        if salt or fid in self.entries or fid in self.retired:
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
        # Forgotten generations too: one read and forgotten is never read again as new.
        known = rotation.head_index([*rotation.known_heads(self.entries.values(), path),
                                     *(Head(r.head_len, r.head_hash) for r in self.retired.values())])
        for cand in rotation.plain_first(rotation.siblings(path)):
            if rotation.mtime(cand) < since:
                continue
            head = identity.head_of(self.jail.head(cand, identity.MAX_HEAD, copy_of=path) or b"")
            if not head or rotation.begins_with_any(head, known):  # no whole first line yet: looked at later
                continue
            try:
                st = os.stat(cand)
            except OSError:
                continue
            size = rotation.gz_size(cand) if cand.endswith(".gz") else st.st_size
            copy_st = st
            try:  # copytruncate: the generation was written under the live file's inode, and
                st = os.stat(path)  # a killed agent that saw it there derived its fid from that
            except OSError:
                pass
            if self._known_fid(head, copy_st, st):
                continue
            entry = self._new_entry(path, st, head)
            entry.size = size
            src = self._copy(entry.fid, path, cand, Head.of(head), 0)
            if src is None:
                del self.entries[entry.fid]
                continue
            h = Head.of(head)
            known.setdefault(h.length, set()).add(h.hash)
            self.sources[entry.fid] = src
            self._due.add(entry.fid)
            log.info("rotated_unseen", "reading a rotated copy whose file was never seen live",
                     path=path, copy=cand)

    def _known_fid(self, head: bytes, *where: os.stat_result) -> bool:
        """Whether a copy is a generation already known by the fid it was given where it was
        written (its own inode after a rename, the live file's under copytruncate). A copy taken
        while its file was young is shorter than the head the entry grew since: it does not begin
        with that head, yet it is that generation (copied, written on, then truncated)."""
        fids = {identity.new_fid(st.st_dev, st.st_ino, head) for st in where}
        return any(f in self.entries or f in self.retired for f in fids)

    def _open_copy(self, fid: str, path: str, head: Head, offset: int) -> Source | None:
        e = self.entries[fid]
        for cand in rotation.search_order(rotation.siblings(path), (e.dev, e.ino)):
            if rotation.owned_by_other(self.entries.values(), fid, path, cand, head, self._head_of(path)):
                continue
            src = self._copy(fid, path, cand, head, offset)
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

    def _copy(self, fid: str, path: str, cand: str, head: Head, offset: int) -> Source | None:
        try:
            return open_copy(fid, path, cand, head, offset, self.clock(), self.jail)
        except Refused as e:
            self._refuse(cand, e.reason)
            return None

    def _head_of(self, path: str) -> Callable[[str], bytes | None]:
        return lambda cand: self.jail.head(cand, identity.MAX_HEAD, copy_of=path)

    # -- more files than max_open_files ---------------------------------------------------

    def park(self, fid: str) -> None:
        """Close an idle live file to make room; its entry keeps offset and identity, and it is
        opened again (matched by inode and head) once it changes."""
        src = self.sources.pop(fid)
        try:
            st = os.fstat(src.fd)
            self.parked[src.path] = (fid, st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # cannot tell a change: opened again at the next look
        src.close()
        self.by_path.pop(src.path, None)
        self._due.discard(fid)

    def _unpark(self, path: str) -> bool:
        """Whether a parked file is to be opened again: it changed. One renamed away or deleted
        while closed continues in its copy (or its rest is counted lost), like any orphan."""
        fid, size, mtime = self.parked[path]
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            st = None
        entry = self.entries.get(fid)
        same = entry is not None and st is not None and (st.st_dev, st.st_ino) == (entry.dev, entry.ino)
        if same and (st.st_size, st.st_mtime_ns) == (size, mtime):
            return False
        del self.parked[path]
        if entry is not None and not same and fid not in self.sources:
            self._resume_orphan(entry)
        return st is not None

    def open_waiting(self) -> None:
        """Open the files waiting for a slot, longest waiting first, while there is room."""
        for path in sorted(self.waiting, key=self.waiting.get):
            if len(self.sources) >= self.cfg.max_open_files:
                return
            self.waiting.pop(path)
            self.changed(path)

    def _unreadable(self, path: str, e: OSError) -> None:
        """A file that cannot be opened or read now: reported once per error, retried on every rescan."""
        error = e.strerror or str(e)
        if self.unreadable.get(path) != error:
            denied = e.errno in (errno.EACCES, errno.EPERM)
            log.warn("file_unreadable", "cannot read log file; retrying on every rescan", path=path, error=error,
                     hint="the agent needs read access (CAP_DAC_READ_SEARCH)" if denied
                     else "the file system or disk failed (see dmesg); other files keep shipping")
        self.unreadable[path] = error

    def _readable(self, path: str) -> None:
        if self.unreadable.pop(path, None) is not None:
            log.info("file_readable", "log file readable again; reading on", path=path)

    def _refuse(self, path: str, reason: str) -> None:
        """Report a path the jail refused, once per reason; it is never read."""
        if self.refused.get(path) != reason:
            log.warn("file_refused", "not reading a path that is not a regular file under the log root",
                     path=path, reason=reason,
                     hint="the agent opens only regular files under inputs.root or inputs.extra_paths, through "
                          "no symbolic link; remove the link, FIFO or device, or list the real file in extra_paths")
            self.refused[path] = reason

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
        since = src.looked_at
        data = self._read_gz(src) if src.gz is not None else self._read_plain(src)
        if not data:
            return None
        # A backlog's later chunks count as new: batches of a file being caught up fill up
        # rather than each going out alone.
        src.looked_at = self.clock()
        chunk = Chunk(fid, data, src.pos, since)
        src.pos += len(data)
        return chunk

    def _read_plain(self, src: Source) -> bytes:
        """The next bytes of a plain file; a read error (EIO) is reported and retried at the
        next rescan, the file's position kept."""
        try:
            data = self._read_plain_at(src)
        except OSError as e:
            if e.errno != errno.EINTR:
                self._read_failed(src, e)
            return b""
        if self.failing.pop(src.fid, None) is not None:
            log.info("file_readable", "log file readable again; reading on", path=src.reading_from or src.path)
        return data

    def _read_failed(self, src: Source, e: OSError) -> None:
        error = e.strerror or str(e)
        if self.failing.get(src.fid) != error:
            log.warn("read_failed", "reading a log file failed; its position is kept and it is retried on every rescan",
                     path=src.reading_from or src.path, offset=src.pos, error=error,
                     hint="the file system or disk failed (see dmesg); other files keep shipping")
        self.failing[src.fid] = error

    def _read_plain_at(self, src: Source) -> bytes:
        st = os.fstat(src.fd)
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
            src.looked_at = self.clock()
            return b""
        data = src.pread(min(self.cfg.chunk_bytes, st.st_size - src.pos))
        if data and src.live and not self._head_ok(src):
            self._truncated(src, st.st_mtime)  # truncated between the check and the read: the data may be new
            return b""
        if data:
            src.last_data_at = self.clock()
            self._active.add(src.fid)
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

    def release_deleted(self) -> bool:
        """Copies deleted while still open keep their disk space, on the jobs' disk: while
        reading is paused one more is held per rotation. Past reader.max_deleted_held_bytes
        the oldest are closed, as logrotate meant, and what was not read of them is counted
        lost. True when it closed any."""
        held = []
        for src in self.sources.values():
            if src.live:  # a deleted live file is marked not live when its deletion is seen
                continue
            st = _fstat(src)
            if st is not None and st.st_nlink == 0:
                held.append((st.st_mtime, st.st_blocks * 512, src))
        total, limit = sum(h[1] for h in held), self.cfg.max_deleted_held_bytes
        released = False
        for _, pinned, src in sorted(held, key=lambda h: h[0]):
            if total <= limit:
                break
            total -= pinned
            self._let_go(src, pinned)
            released = True
        return released

    def _let_go(self, src: Source, pinned: int) -> None:
        entry = self.entries[src.fid]
        end = max(entry.size, src.size if src.gz is None else 0)
        src.close()
        self.sources.pop(src.fid, None)
        self._due.discard(src.fid)
        self._ended.append(src.fid)
        entry.gone = True
        entry.size = src.pos
        self.count_lost(entry, max(0, end - src.pos), "a deleted rotated copy was closed unread: the deleted "
                        "copies held open reached reader.max_deleted_held_bytes", from_offset=src.pos,
                        copy=src.reading_from or src.path, pinned_bytes=pinned,
                        hint="Elasticsearch has been away or slow for long; raise reader.max_deleted_held_bytes "
                             "(disk on /var/vcap/data) or spool.max_bytes to bridge longer outages")

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


def _fstat(src: Source) -> os.stat_result | None:
    try:
        if src.fd is not None:
            return os.fstat(src.fd)
        return os.fstat(src.raw.fileno()) if src.raw is not None else None
    except (OSError, ValueError):
        return None


def _devino(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return (0, 0)
    return (st.st_dev, st.st_ino)
