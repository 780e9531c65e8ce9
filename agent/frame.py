"""Events from chunks: split on newlines, cap line length, join multiline events.

The framer sees a file's bytes in order and hands out complete events with their offsets.
`committable` is the offset below which every byte belongs to an event already handed out:
a partial last line or an open multiline event holds it back, so a restart re-reads them
whole instead of shipping half an event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.config import MultilineConfig
from agent.pattern import compile_pattern

TRUNCATED = "truncated"
MULTILINE = "multiline"


@dataclass
class Frames:
    """Events in file order. `offsets` is None when each event starts right after the
    previous one's newline (the common case), so offsets follow from lengths."""

    start: int
    lines: list[bytes]
    offsets: list[int] | None = None
    flags: dict[int, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    def offset_of(self, i: int) -> int:
        """File offset of event `i`."""
        if self.offsets is not None:
            return self.offsets[i]
        return self.start + sum(map(len, self.lines[:i])) + i

    def split(self, n: int) -> tuple[Frames, Frames]:
        """The first `n` events and the rest, each with its own offsets and flags."""
        if n >= len(self):
            return self, Frames(self.start, [])
        rest_start = self.offset_of(n)
        head = Frames(self.start, self.lines[:n], None if self.offsets is None else self.offsets[:n],
                      {i: f for i, f in self.flags.items() if i < n})
        rest = Frames(rest_start, self.lines[n:], None if self.offsets is None else self.offsets[n:],
                      {i - n: f for i, f in self.flags.items() if i >= n})
        return head, rest


class Framer:
    def __init__(self, offset: int, max_line_bytes: int, multiline: MultilineConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.max_line = max_line_bytes
        self.partial = b""
        self.partial_at = offset  # file offset of partial's first byte
        self.discarding = False  # inside an overlong line, dropping bytes up to its newline
        self.committable = offset
        self.ml = _Multiline(multiline, clock) if multiline else None

    @property
    def next_offset(self) -> int:
        return self.partial_at + len(self.partial)

    def has_pending(self) -> bool:
        return bool(self.partial) or (self.ml is not None and self.ml.pending())

    def feed(self, data: bytes) -> Frames:
        start = self.partial_at
        buf = self.partial + data if self.partial else data
        last = buf.rfind(b"\n")
        if last < 0:
            self.partial = buf
            frames = Frames(start, [])
        else:
            self.partial = buf[last + 1 :]
            self.partial_at = start + last + 1
            lines = buf[:last].split(b"\n")
            if self.discarding:
                # The head of this overlong line was shipped already; drop the rest of it.
                self.discarding = False
                start += len(lines[0]) + 1
                del lines[0]
            frames = self._frames(start, lines)
            self.committable = self.partial_at
        if self.discarding:
            self.partial_at += len(self.partial)
            self.partial = b""
            self.committable = self.partial_at
        elif len(self.partial) > self.max_line:
            self._cut_partial(frames)
        if self.ml:
            frames = self.ml.join(frames, self)
        return frames

    def flush(self, partial: bool = True) -> Frames:
        """Ship what is pending as complete: the file (or the open multiline event) is idle."""
        frames = Frames(self.partial_at, [])
        if partial:
            if self.partial:
                frames.lines.append(self.partial)
            self.partial_at += len(self.partial)
            self.partial = b""
            self.discarding = False
            self.committable = self.partial_at
        if self.ml:
            frames = self.ml.join(frames, self, final=True)
        return frames

    def multiline_due(self, now: float) -> bool:
        return self.ml is not None and self.ml.due(now)

    def _frames(self, start: int, lines: list[bytes]) -> Frames:
        if not lines or max(map(len, lines)) <= self.max_line:
            return Frames(start, lines)
        frames = Frames(start, [], offsets=_offsets(start, lines))
        for i, line in enumerate(lines):
            if len(line) > self.max_line:
                frames.flags[i] = [TRUNCATED]
                line = line[: self.max_line]
            frames.lines.append(line)
        return frames

    def _cut_partial(self, frames: Frames) -> None:
        """An overlong line without its newline yet: ship its head now, drop the rest as it comes.

        The commit moves on over what was dropped (a 100 MB line without a newline must not
        hold the file's offset, nor be read again at every restart). After a restart in the
        middle of such a line, its remainder up to the newline is one more event."""
        if frames.offsets is None:
            frames.offsets = _offsets(frames.start, frames.lines)
        frames.flags[len(frames.lines)] = [TRUNCATED]
        frames.offsets.append(self.partial_at)
        frames.lines.append(self.partial[: self.max_line])
        self.partial_at += len(self.partial)
        self.partial = b""
        self.committable = self.partial_at
        self.discarding = True


def _offsets(start: int, lines: list[bytes]) -> list[int]:
    out = []
    off = start
    for line in lines:
        out.append(off)
        off += len(line) + 1
    return out


class _Multiline:
    def __init__(self, cfg: MultilineConfig, clock: Callable[[], float]):
        self.cfg = cfg
        self.clock = clock
        self.start_re = compile_pattern(cfg.start) if cfg.start else None
        self.cont_re = compile_pattern(cfg.continuation) if cfg.continuation else None
        self.lines: list[bytes] = []  # the open event's lines
        self.at = 0  # its offset
        self.size = 0
        self.truncated = False
        self.last_line_at = 0.0

    def pending(self) -> bool:
        return bool(self.lines)

    def due(self, now: float) -> bool:
        return bool(self.lines) and now - self.last_line_at >= self.cfg.timeout_s

    def _begins(self, line: bytes) -> bool:
        if self.start_re is not None:
            return self.start_re.match(line) is not None
        return self.cont_re.match(line) is None

    def join(self, frames: Frames, framer: Framer, final: bool = False) -> Frames:
        out = Frames(frames.start, [], offsets=[])
        offsets = frames.offsets or _offsets(frames.start, frames.lines)
        for i, line in enumerate(frames.lines):
            if self.lines and not self._begins(line):
                self._append(line)
                if TRUNCATED in frames.flags.get(i, ()):
                    self.truncated = True
                continue
            self._emit(out)
            self.lines, self.at, self.size = [line], offsets[i], len(line)
            self.truncated = TRUNCATED in frames.flags.get(i, ())
        if frames.lines:
            self.last_line_at = self.clock()
        if final:
            self._emit(out)
        if self.lines:
            framer.committable = self.at
        elif not framer.discarding:
            framer.committable = framer.partial_at
        return out

    def _append(self, line: bytes) -> None:
        if len(self.lines) >= self.cfg.max_lines or self.size + len(line) + 1 > self.cfg.max_bytes:
            self.truncated = True
            return
        self.lines.append(line)
        self.size += len(line) + 1

    def _emit(self, out: Frames) -> None:
        if not self.lines:
            return
        flags = []
        if len(self.lines) > 1:
            flags.append(MULTILINE)
        if self.truncated:
            flags.append(TRUNCATED)
        if flags:
            out.flags[len(out.lines)] = flags
        out.offsets.append(self.at)
        out.lines.append(b"\n".join(self.lines))
        self.lines = []
        self.truncated = False
