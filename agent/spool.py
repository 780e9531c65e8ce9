"""A bounded disk spool of encoded batches, for when Elasticsearch cannot take data.

One segment file per batch under `state_dir/spool`, named by a rising sequence number so
the oldest is drained first:

    magic "LSSPOOL1" | header length (u32) | header crc32 (u32) | header (JSON) | zlib body

The header holds what the body is worth in log bytes per file (`parts`) and the body's
length and crc32, under a checksum of its own: a damaged body is still counted exactly as
lost. A segment is written to a temp name, fsynced, renamed, and the directory fsynced, so
a torn write (kill -9, power loss) is a temp file, removed at start, never a segment.
Offsets of the lines in a segment advance once it is durable (the caller acknowledges the
batch); deterministic `_id`s make a replay after a crash a 409, never a duplicate.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from dataclasses import dataclass

import orjson

from agent import log
from agent.batch import Batch, Segment

MAGIC = b"LSSPOOL1"
_PREFIX = struct.Struct("<8sII")  # magic, header length, header crc32
SUFFIX = ".seg"
TMP_SUFFIX = ".tmp"
MAX_BODY = 1 << 30  # no batch is this big (batch.max_bytes): a larger length is damage, not data
LEVEL = 1  # zlib: fast; log lines still compress several times over


class SpoolCorrupt(Exception):
    """A segment failed its checks. `parts` (fid, job, log bytes) when its header survived."""

    def __init__(self, path: str, reason: str, parts: list[tuple[str, str, int]] | None):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.parts = path, reason, parts


@dataclass
class Stored:
    seq: int
    size: int  # bytes on disk
    written_at: float  # wall clock


@dataclass
class Status:
    """What operators see: in `offsets`, /healthz and /metrics."""

    bytes: int
    segments: int
    oldest_age_s: float
    max_bytes: int

    @property
    def full(self) -> bool:
        """Within a segment or so of the bound: reading has stopped."""
        return self.max_bytes > 0 and self.bytes >= self.max_bytes * 0.9


def status(directory: str, max_bytes: int, now: float | None = None) -> Status:
    """The spool as it is on disk, read-only (the agent may be running or stopped)."""
    now = time.time() if now is None else now
    try:
        names = [n for n in os.listdir(directory) if n.endswith(SUFFIX)]
    except OSError:
        names = []
    total, oldest = 0, now
    for n in names:
        try:
            st = os.stat(os.path.join(directory, n))
        except OSError:
            continue  # acknowledged and deleted meanwhile
        total += st.st_size
        oldest = min(oldest, st.st_mtime)
    return Status(total, len(names), round(now - oldest, 1) if names else 0.0, max_bytes)


class Spool:
    def __init__(self, directory: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self.stored: dict[int, Stored] = {}  # by seq; dicts keep insertion (= seq) order
        self.sent: set[int] = set()  # handed to the sender, not yet acknowledged
        self.bytes = 0
        self.largest = 0  # the largest segment written: what the next one may need
        self._next = 0
        if self.enabled:
            os.makedirs(directory, mode=0o700, exist_ok=True)  # segments hold text of root-only logs
            self._load()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _load(self) -> None:
        """Segments left by an earlier run, oldest first; torn temp files are removed."""
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(TMP_SUFFIX):
                os.unlink(path)
                log.info("spool_torn_write_removed", "removed a spool segment whose write did not finish "
                         "(its lines are still in the files: offsets had not advanced)", path=path)
            elif name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit():
                st = os.stat(path)
                self._add(Stored(int(name[: -len(SUFFIX)]), st.st_size, st.st_mtime))
        self._next = max(self.stored, default=-1) + 1

    def _add(self, s: Stored) -> None:
        self.stored[s.seq] = s
        self.bytes += s.size

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}{SUFFIX}")

    # -- state ------------------------------------------------------------------------

    @property
    def segments(self) -> int:
        return len(self.stored)

    def oldest_age(self, now: float | None = None) -> float:
        if not self.stored:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - next(iter(self.stored.values())).written_at)

    def status(self) -> Status:
        return Status(self.bytes, self.segments, round(self.oldest_age(), 1), self.max_bytes)

    def room(self, reserve: int) -> bool:
        """Room for one more segment: as large as the largest so far, or `reserve` before the first."""
        return self.enabled and self.bytes + (self.largest or reserve) <= self.max_bytes

    def unsent(self) -> bool:
        return len(self.sent) < len(self.stored)

    # -- write, read, delete ------------------------------------------------------------

    def append(self, batch: Batch) -> bool:
        """The batch, durably, behind the others. False (nothing written) if it would not fit."""
        parts = encode(batch)
        size = sum(map(len, parts))
        self.largest = max(self.largest, size)  # refused or not: `room` must not offer less
        if self.bytes + size > self.max_bytes:
            return False
        seq, self._next = self._next, self._next + 1
        path = self._path(seq)
        tmp = path + TMP_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if os.writev(fd, parts) != size:  # a regular file takes it all, or the disk is full
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        self._add(Stored(seq, size, time.time()))
        return True

    def take(self) -> Batch:
        """The oldest segment not handed out yet, as a batch (`spool_seq` set). Raises
        SpoolCorrupt (the segment is then deleted) if it fails its checks."""
        seq = next(s for s in self.stored if s not in self.sent)
        path = self._path(seq)
        try:
            with open(path, "rb") as f:
                data = f.read()
            batch = decode(data, path)
        except (OSError, SpoolCorrupt) as e:
            self.delete(seq)
            raise e if isinstance(e, SpoolCorrupt) else SpoolCorrupt(path, f"unreadable: {e}", None) from None
        batch.spool_seq = seq
        self.sent.add(seq)
        return batch

    def delete(self, seq: int) -> None:
        """Acknowledged (or given up on): the segment goes."""
        s = self.stored.pop(seq, None)
        self.sent.discard(seq)
        if s is None:
            return
        self.bytes -= s.size
        try:
            os.unlink(self._path(seq))
        except FileNotFoundError:
            pass


def encode(batch: Batch) -> list[bytes]:
    """A segment's bytes, in two parts written as they are (joined, the body would be copied)."""
    body = zlib.compress(batch.body, LEVEL)
    header = orjson.dumps({
        "docs": batch.docs, "body_len": len(batch.body), "zlen": len(body), "crc": zlib.crc32(body),
        "segments": [[s.fid, s.end, s.tail, s.job, s.lines, s.bytes] for s in batch.segments],
    })
    return [_PREFIX.pack(MAGIC, len(header), zlib.crc32(header)) + header, body]


def decode(data: bytes, path: str) -> Batch:
    if len(data) < _PREFIX.size:
        raise SpoolCorrupt(path, "truncated before its header", None)
    magic, hlen, hcrc = _PREFIX.unpack_from(data)
    header_bytes = data[_PREFIX.size : _PREFIX.size + hlen]
    if magic != MAGIC or len(header_bytes) != hlen or zlib.crc32(header_bytes) != hcrc:
        raise SpoolCorrupt(path, "header damaged (checksum mismatch)", None)
    h = orjson.loads(header_bytes)
    segs = [Segment(fid, end, tail, job, lines, nbytes) for fid, end, tail, job, lines, nbytes in h["segments"]]
    parts = [(s.fid, s.job, s.bytes) for s in segs]
    body = memoryview(data)[_PREFIX.size + hlen :]  # no copy: memory stays flat while a full spool drains
    if len(body) != h["zlen"]:
        raise SpoolCorrupt(path, f"body truncated ({len(body)} of {h['zlen']} bytes)", parts)
    if zlib.crc32(body) != h["crc"]:
        raise SpoolCorrupt(path, "body damaged (checksum mismatch)", parts)
    want = h["body_len"]
    if type(want) is not int or not 0 < want <= MAX_BODY:
        raise SpoolCorrupt(path, f"header damaged (body length {str(want)[:20]})", parts)
    try:
        raw = zlib.decompress(body, bufsize=want)  # one buffer of the right size, not regrown
    except zlib.error as e:
        raise SpoolCorrupt(path, f"body does not decompress ({e})", parts) from None
    if len(raw) != want:
        raise SpoolCorrupt(path, "body length mismatch", parts)
    return Batch(body=raw, docs=h["docs"], segments=segs)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
