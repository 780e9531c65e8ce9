"""Per-file read positions as operators see them: from the registry and the file system.

Works with the agent stopped (reads the registry journal) or running (its live entries)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from agent import identity
from agent.contain import Jail, Refused
from agent.log import shown
from agent.identity import Head
from agent.registry import Entry


@dataclass
class FileOffset:
    path: str
    fid: str
    # live: at its path; rotated: only in a copy or deleted; untracked: not read yet;
    # refused: not a regular file under the root (a link, FIFO, device), never read;
    # unreadable: opening or reading it fails (EACCES, EIO), retried on every rescan
    state: str
    size: int
    offset: int
    lag_bytes: int
    oldest_unshipped_age_s: float
    last_ack_age_s: float | None
    lost_bytes: int
    lost_age_s: float | None
    reason: str = ""  # why a file is refused or unreadable

    def as_dict(self) -> dict:
        return asdict(self)


def _current_size(e: Entry, jail: Jail) -> tuple[str, int, str]:
    """The live file's size if the file at the entry's path is still this one."""
    try:
        fd = jail.open(e.path)
    except Refused as r:
        return "refused", e.size, r.reason
    except OSError:
        return "rotated", e.size, ""
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (e.dev, e.ino) and identity.head_matches(fd, Head(e.head_len, e.head_hash)):
            return "live", st.st_size, ""
        return "rotated", e.size, ""
    finally:
        os.close(fd)


def view(entries: list[Entry], jail: Jail, untracked: list[str] = (), errors: dict[str, str] | None = None,
         now: float | None = None) -> list[FileOffset]:
    """Rows for the registry's entries, and for `untracked` paths (found, not read yet, refused or
    unreadable); `errors`: the running reader's read errors by path."""
    errors = errors or {}
    now = time.time() if now is None else now
    out = []
    for e in entries:
        if e.gone and e.offset >= e.size and not e.lost_bytes:
            continue
        state, size, reason = ("rotated", e.size, "") if e.gone else _current_size(e, jail)
        if e.path in errors:
            state, reason = "unreadable", errors[e.path]
        lag = max(0, size - e.offset)
        out.append(FileOffset(
            path=shown(e.path), fid=e.fid, state=state, size=size, offset=e.offset, lag_bytes=lag,
            oldest_unshipped_age_s=round(now - e.caught_up_at, 1) if lag and e.caught_up_at else 0.0,
            last_ack_age_s=round(now - e.updated_at, 1) if e.updated_at else None,
            lost_bytes=e.lost_bytes, lost_age_s=round(now - e.lost_at, 1) if e.lost_bytes else None, reason=reason,
        ))
    known = {e.path for e in entries if not e.gone}
    for path in untracked:
        if path in known:
            continue
        try:
            fd = jail.open(path)
        except Refused as r:
            out.append(FileOffset(shown(path), "", "refused", 0, 0, 0, 0.0, None, 0, None, r.reason))
            continue
        except FileNotFoundError:
            continue
        except OSError as err:
            out.append(FileOffset(shown(path), "", "unreadable", 0, 0, 0, 0.0, None, 0, None, err.strerror or str(err)))
            continue
        st = os.fstat(fd)
        os.close(fd)
        if st.st_size == 0:
            continue
        # Never read: every byte is unshipped; the file's change time bounds the oldest one.
        out.append(FileOffset(shown(path), "", "untracked", st.st_size, 0, st.st_size, round(now - st.st_ctime, 1),
                              None, 0, None))
    return sorted(out, key=lambda f: f.path)


def table(rows: list[FileOffset]) -> str:
    w = max([4, *(len(r.path) for r in rows)])
    lines = [f"{'PATH':<{w}} {'STATE':<9} {'SIZE':>12} {'OFFSET':>12} {'LAG':>10} {'AGE_S':>8} {'LOST':>8}"]
    for r in rows:
        lines.append(f"{r.path:<{w}} {r.state:<9} {r.size:>12} {r.offset:>12} {r.lag_bytes:>10} "
                     f"{r.oldest_unshipped_age_s:>8.1f} {r.lost_bytes:>8}")
    return "\n".join(lines)
