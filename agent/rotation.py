"""Where the rest of a rotated file is: its copies in the directory, and which are whose.

Functions over a directory listing and the registry entries; no reader state. logrotate
leaves a file's older content beside it as `x.log.1`, `x.log.1.gz`, `x.log.2.gz`, ...
(copytruncate) or moves the file itself there (create); either way a copy is found by its
head, never trusted by its name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from agent.identity import Head, digest
from agent.registry import Entry


def siblings(path: str) -> list[str]:
    """Paths in `path`'s directory whose names extend its name: its possible rotated copies."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n != base and n.startswith(base)]


def search_order(cands: list[str], devino: tuple[int, int]) -> list[str]:
    """The order to look for a file's content in its copies: the file itself first if it was
    renamed (its inode; a young file's short head may also begin another generation), then
    generations newest first by their last write, and of one generation the plain copy
    first: logrotate deletes x.log.1 only once x.log.1.gz is complete."""
    written: dict[str, float] = {}
    for c in cands:
        gen = c.removesuffix(".gz")
        written[gen] = max(written.get(gen, 0.0), mtime(c))
    return sorted(cands, key=lambda c: (_devino(c) != devino, -written[c.removesuffix(".gz")], c.endswith(".gz")))


def plain_first(cands: list[str]) -> list[str]:
    return sorted(cands, key=lambda c: c.endswith(".gz"))


def owned_by_other(entries: Iterable[Entry], fid: str, path: str, cand: str, head: Head,
                   head_of: Callable[[str], bytes | None]) -> bool:
    """Whether `cand` is another known file of `path` than `fid`: it has another entry's inode
    and head, or begins with another entry's longer head (a short head, of a young file, may
    begin other generations too)."""
    devino = _devino(cand)
    data = None
    for e in entries:
        if e.fid == fid or e.path != path or not e.head_len:
            continue
        if (e.dev, e.ino) != devino and e.head_len <= head.length:
            continue
        if data is None:
            data = head_of(cand) or b""
        if Head.of(data[: e.head_len]) == Head(e.head_len, e.head_hash):
            return True
    return False


def known_heads(entries: Iterable[Entry], path: str) -> list[Head]:
    return [Head(e.head_len, e.head_hash) for e in entries if e.path == path]


HeadIndex = dict[int, set[str]]  # head length -> hashes of the heads of that length


def head_index(heads: Iterable[Head]) -> HeadIndex:
    """Built once per look at a directory: forgotten heads are thousands, copies a few."""
    index: HeadIndex = {}
    for h in heads:
        index.setdefault(h.length, set()).add(h.hash)
    return index


def begins_with_any(data: bytes, index: HeadIndex) -> bool:
    """One hash per distinct head length, however many heads."""
    return any(digest(data[:n]) in hashes for n, hashes in index.items() if n <= len(data))


def gz_size(path: str) -> int:
    """A gzip copy's uncompressed size from its trailer (ISIZE: the last 4 bytes, little
    endian, the size mod 2**32), without decompressing it; 0 if unreadable, or while
    logrotate is still writing it (its plain copy is deleted only once it is complete)."""
    if os.path.exists(path.removesuffix(".gz")):
        return 0
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return 0


def mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _devino(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_dev, st.st_ino)
