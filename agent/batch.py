"""Batches of `_bulk` bytes, and the budget of bytes in flight that makes readers wait."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Segment:
    """The reach of one file in one batch: once the batch is acknowledged, the file's
    offset may advance to `end` (if every earlier segment of the file is acknowledged too)."""

    fid: str
    end: int
    tail: str
    job: str
    lines: int = 0
    bytes: int = 0
    done: bool = False


@dataclass
class Batch:
    body: bytearray | bytes = field(default_factory=bytearray)  # bytes: replayed from the spool, as it was
    docs: int = 0
    segments: list[Segment] = field(default_factory=list)
    # Monotonic time after which its oldest line was written (the last look at that line's file
    # that did not find it): the batch goes out batch.flush_interval_s after.
    started: float = field(default_factory=time.monotonic)
    budgeted: int = 0  # bytes taken from the budget for this batch
    status: bool = False  # the agent's own status document: a newer one supersedes it while queued
    spool_seq: int | None = None  # replayed from this spool segment: its offsets advanced when spooled

    def segment_for(self, fid: str, job: str) -> Segment:
        if self.segments and self.segments[-1].fid == fid:
            return self.segments[-1]
        seg = Segment(fid, 0, "", job)
        self.segments.append(seg)
        return seg


class Budget:
    """Bytes read but not yet acknowledged. Readers stop when it is spent; files on disk are the buffer."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def room(self) -> bool:
        return self.used < self.limit

    def take(self, n: int) -> None:
        with self._lock:
            self.used += n

    def give_back(self, n: int) -> None:
        with self._lock:
            self.used -= n
