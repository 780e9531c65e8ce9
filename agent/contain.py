"""Which files the agent may open: regular files under the log root or an extra path, and
reached through no symbolic link.

The agent can read any file on the VM (CAP_DAC_READ_SEARCH) and jobs write where it reads:
a job may plant `myjob/x.log -> /etc/shadow`, link a directory elsewhere, make a FIFO, or
forge a registry entry. So every path the agent opens, from discovery, from a rotated copy
or from its own registry, is opened here: component by component from the base directory
(the operator's root, or an extra path's directory, links in those resolved once), each
with O_NOFOLLOW, the last only if `lstat` says it is a regular file and with O_NONBLOCK,
so a FIFO or device swapped in between is refused by `fstat` and never blocks.
"""

from __future__ import annotations

import errno
import glob
import gzip
import os
import re
import stat
import zlib
from dataclasses import dataclass

from agent.config import InputsConfig
from agent.globs import glob_regex

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(OSError):
    """A path the agent must not read; `reason` says why, for the operator."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class _Extra:
    base: str  # the glob's directory part, without magic
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Jail:
    root: str
    extra: tuple[_Extra, ...] = ()

    @classmethod
    def of(cls, inputs: InputsConfig) -> Jail:
        extra = []
        for p in inputs.extra_paths:
            base = os.path.dirname(p)
            while glob.has_magic(base):
                base = os.path.dirname(base)
            extra.append(_Extra(base, glob_regex(p)))
        return cls(os.path.abspath(inputs.root), tuple(extra))

    def base_of(self, path: str, copy_of: str | None = None) -> str | None:
        """The base directory `path` may be opened from, or None if it lies outside the root
        and every extra path. A rotated copy counts as its live file's (`copy_of`), beside it."""
        if ".." in path.split("/"):
            return None
        if path.startswith(self.root + "/"):
            return self.root
        live = copy_of or path
        if copy_of is not None and (os.path.dirname(path) != os.path.dirname(live)
                                    or not os.path.basename(path).startswith(os.path.basename(live))):
            return None
        for e in self.extra:
            if live.startswith(e.base + "/") and e.pattern.match(live):
                return e.base
        return None

    def open(self, path: str, copy_of: str | None = None) -> int:
        """A read-only descriptor of the regular file at `path`. Raises Refused for a path
        outside, a link at any component, or anything but a regular file; OSError as the
        file system says (ENOENT, EACCES, EIO)."""
        base = self.base_of(path, copy_of)
        if base is None:
            raise Refused(path, "outside inputs.root and inputs.extra_paths")
        parts = path[len(base) + 1:].split("/")
        dfd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                nfd = _step(path, part, dfd)
                os.close(dfd)
                dfd = nfd
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(path, _kind(st.st_mode))
            try:
                fd = os.open(parts[-1], _FILE, dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise Refused(path, "a symbolic link") from None
                raise
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise Refused(path, _kind(st.st_mode))
        return fd

    def refusal(self, path: str) -> str | None:
        """Why `path` may never be opened (outside, or a directory on the way is a link), or
        None: for paths from the registry, whose file may be gone."""
        try:
            os.close(self.open(path))
        except Refused as e:
            return e.reason
        except OSError:
            pass  # gone or unreadable: not a refusal
        return None

    def head(self, path: str, length: int, copy_of: str | None = None) -> bytes | None:
        """The first `length` bytes of a plain or gzipped file, None if it may not or cannot be read."""
        try:
            fd = self.open(path, copy_of)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                if not path.endswith(".gz"):
                    return f.read(length)
                with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                    return gz.read(length)
            except (OSError, EOFError, zlib.error):  # a read error, or a damaged gzip
                return None


def _step(path: str, part: str, dfd: int) -> int:
    """Into directory `part` of `dfd`, refusing a link."""
    try:
        return os.open(part, _DIR, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            st = os.stat(part, dir_fd=dfd, follow_symlinks=False)
            raise Refused(path, f"{part!r} is {_kind(st.st_mode)}, not a directory") from None
        raise


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"
