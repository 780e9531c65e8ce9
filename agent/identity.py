"""File identity by content: who a file is, whatever its path.

A file is known by `fid`, derived at first sight from device, inode and its first bytes,
and kept for life. Its head (the first HEAD_BYTES bytes, or fewer for a small file, hashed
with their length) finds the same content again under another name, plain or gzipped.
The hash of the bytes just before an offset tells whether that offset still belongs to the
file: a truncated and rewritten file fails the check.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

HEAD_BYTES = 256
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

    Only the first line counts (capped at HEAD_BYTES): the head of a young file grows with
    it, so an agent killed before saving a new file's entry would otherwise derive another
    fid after restart, and index that file's lines a second time under new ids."""
    nl = head.find(b"\n")
    return digest(b"%d:%d:" % (dev, ino) + (head[: nl + 1] if nl >= 0 else head))


def read_head(fd: int) -> bytes:
    return os.pread(fd, HEAD_BYTES, 0)


def head_matches(fd: int, head: Head) -> bool:
    return Head.of(os.pread(fd, head.length, 0)) == head


def tail_hash(data_before_offset: bytes) -> str:
    return digest(data_before_offset[-TAIL_BYTES:])


def tail_matches(fd: int, offset: int, expected: str) -> bool:
    n = min(TAIL_BYTES, offset)
    return digest(os.pread(fd, n, offset - n)) == expected
