"""One open file being read: a live log file, or a rotated copy of one (plain or gzip).

A source hands out bytes from `pos` on and knows nothing of lines: the loop frames them.
Which file a source is, and what to do when it shrinks or moves, is the reader's decision.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass

from agent.contain import Jail, Refused
from agent.identity import Head

# What a damaged gzip copy raises while it is read.
GZIP_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class Source:
    fid: str
    path: str  # where its lines were written (log.file.path); copies keep the live name
    live: bool  # still at `path`; False once renamed away or deleted (draining)
    fd: int | None
    gz: gzip.GzipFile | None
    dev: int
    ino: int
    pos: int  # file offset of the next byte to hand out
    last_data_at: float  # monotonic time of the last bytes read
    # Monotonic time of the last look that found nothing beyond `pos`: the next bytes were
    # written after it (the batch they join is due flush_interval after the oldest such look).
    looked_at: float = 0.0
    final: bool = False  # a rotated copy: its content will not grow
    size: int = 0
    reading_from: str = ""  # the path actually read, if not `path`
    raw: io.BufferedReader | None = None  # a gzip copy's file: GzipFile does not close what it was given

    def pread(self, n: int) -> bytes:
        return os.pread(self.fd, n, self.pos)

    def read_gz(self, n: int) -> bytes:
        return self.gz.read(n)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.gz is not None:
            self.gz.close()
            self.gz = None
        if self.raw is not None:
            self.raw.close()
            self.raw = None


def open_copy(fid: str, path: str, cand: str, head: Head, offset: int, now: float, jail: Jail) -> Source | None:
    """`cand` as a rotated copy of `path` positioned at `offset`, if it begins with `head`.
    Raises Refused if the jail refuses it (a link, a FIFO, outside the root)."""
    try:
        fd = jail.open(cand, copy_of=path)
    except Refused:
        raise
    except OSError:
        return None
    if cand.endswith(".gz"):
        return _open_gz(fid, path, cand, head, offset, now, fd)
    if Head.of(os.pread(fd, head.length, 0)) != head:
        os.close(fd)
        return None
    st = os.fstat(fd)
    return Source(fid, path, False, fd, None, st.st_dev, st.st_ino, offset, now, final=True,
                  size=st.st_size, reading_from=cand)


def _open_gz(fid: str, path: str, cand: str, head: Head, offset: int, now: float, fd: int) -> Source | None:
    st = os.fstat(fd)
    raw = os.fdopen(fd, "rb")
    gz = gzip.GzipFile(fileobj=raw, mode="rb")
    try:
        if Head.of(gz.read(head.length)) != head:
            raise EOFError("another head")
        gz.seek(offset)  # the uncompressed offset: a gzip is read from its start up to it
    except GZIP_ERRORS:
        gz.close()
        raw.close()
        return None
    return Source(fid, path, False, None, gz, st.st_dev, st.st_ino, offset, now, final=True, reading_from=cand,
                  raw=raw)
