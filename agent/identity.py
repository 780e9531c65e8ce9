"""File identity by content: who a file is, whatever its path.

A file is known by `fid`, derived at first sight from device, inode and its first line,
and kept for life. Its head (hashed with its length) finds the same content again under
another name, plain or gzipped: at least its whole first line, and the first HEAD_BYTES
bytes once the file has them.

A head never ends inside the first line. Generations of one log share their first bytes
(every lager or Cloud Controller line opens with the same JSON), so a head cut inside the
first line may begin every generation, and would make one generation "known" for another:
read twice, or skipped. A file whose first line is not complete yet (up to MAX_HEAD) has no
identity: it is looked at again once it grows, as Vector's fingerprinter waits for a file's
first line. The hash of the bytes just before an offset tells whether that offset still
belongs to the file: a truncated and rewritten file fails the check.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

HEAD_BYTES = 256
MAX_HEAD = 4096  # a first line longer than this is cut here: its first MAX_HEAD bytes are the head
TAIL_BYTES = 64


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True)
class Head:
    length: int
    hash: str

    @classmethod
    def of(cls, data: bytes) -> Head:
        return cls(len(data), digest(data))


def new_fid(dev: int, ino: int, head: bytes) -> str:
    """Deterministic, so a replay after a lost registry yields the same document ids.

    Only the first line counts: the head of a young file grows with it, so an agent killed
    before saving a new file's entry would otherwise derive another fid after restart, and
    index that file's lines a second time under new ids."""
    nl = head.find(b"\n")
    return digest(b"%d:%d:" % (dev, ino) + (head[: nl + 1] if nl >= 0 else head))


def head_of(data: bytes) -> bytes:
    """The head of a file that begins with `data` (its first MAX_HEAD bytes, or all of it):
    the whole first line, then on to HEAD_BYTES as far as `data` goes. Empty while the first
    line is not complete: such a head could still grow into any generation's."""
    nl = data.find(b"\n", 0, MAX_HEAD)
    if nl < 0:
        return data[:MAX_HEAD] if len(data) >= MAX_HEAD else b""
    return data[: max(nl + 1, min(len(data), HEAD_BYTES))]


def read_head(fd: int) -> bytes:
    return head_of(os.pread(fd, MAX_HEAD, 0))


def head_matches(fd: int, head: Head) -> bool:
    return Head.of(os.pread(fd, head.length, 0)) == head


def tail_hash(data_before_offset: bytes) -> str:
    return digest(data_before_offset[-TAIL_BYTES:])


def tail_matches(fd: int, offset: int, expected: str) -> bool:
    n = min(TAIL_BYTES, offset)
    return digest(os.pread(fd, n, offset - n)) == expected
