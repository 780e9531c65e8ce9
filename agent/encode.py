"""Document bytes for `_bulk`: the constant part once per file, the message per line.

A document's `_id` is `<fid>-<offset>` and it is sent with `create`, so a replay of the
same bytes is refused by Elasticsearch as a duplicate (409) instead of indexed twice.
Fields use dotted names so per-line and per-file members never repeat a JSON key.
"""

from __future__ import annotations

import time
from itertools import accumulate

import orjson
from orjson import dumps

from agent.formats import UNPARSED, Extract
from agent.frame import Frames

INVALID_UTF8 = "invalid_utf8"
NUL = "nul_bytes"


def read_time(now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode() + b".%03dZ" % (int(now * 1000) % 1000)


def metadata(agent_meta: dict, bosh: dict) -> dict:
    """Per-VM members shared by every file: host, agent and bosh fields with values."""
    out = {k: v for k, v in agent_meta.items() if v not in ("", None)}
    out.update({k: v for k, v in bosh.items() if v not in ("", None)})
    return out


class FileEncoder:
    def __init__(self, index: str, fid: str, path: str, job: str, vm_meta: dict, extract: Extract | None):
        self.action = b'{"create":{"_index":"%s","_id":"%s-' % (index.encode(), fid.encode())
        members = {"log.file.path": path, **({"bosh.job": job} if job else {}), **vm_meta}
        self.const = b"," + orjson.dumps(members)[1:] + b"\n"
        self.extract = extract
        self._now = b""
        self._fmt_raw = self._fmt_parsed = b""

    def _formats(self, now: bytes) -> tuple[bytes, bytes]:
        """The document as one %-format per read time: only offset, message (and for parsed
        files timestamp and fields) vary per line."""
        if now != self._now:
            action = self.action.replace(b"%", b"%%")
            const = self.const.replace(b"%", b"%%")
            created = now.replace(b"%", b"%%")
            self._now = now
            self._fmt_raw = action + b'%d"}}\n{"@timestamp":"' + created + b'","event.created":"' + created + (
                b'","message":%s,"log.offset":%d' + const)
            self._fmt_parsed = action + b'%d"}}\n{"@timestamp":"%s","event.created":"' + created + (
                b'","message":%s,"log.offset":%d%s' + const)
        return self._fmt_raw, self._fmt_parsed

    def encode(self, frames: Frames, now: bytes, out: bytearray) -> int:
        """Append one action and one document per event to `out`; returns bytes of messages."""
        lines = frames.lines
        if not lines:
            return 0
        # The common case, with the per-line work in C iterators: no frame flags, every line
        # valid UTF-8 without NUL bytes. Anything else takes the per-line path below.
        if frames.flags or b"\0" in b"".join(lines):
            return self._encode_lines(frames, now, out)
        offsets = frames.offsets
        if offsets is None:
            offsets = accumulate(map((1).__add__, map(len, lines)), initial=frames.start)
        fmt_raw, fmt_parsed = self._formats(now)
        extract = self.extract
        before = len(out)
        try:
            if extract is None:
                for off, js in zip(offsets, map(dumps, map(bytes.decode, lines))):
                    out += fmt_raw % (off, js, off)
            else:
                for off, line, js in zip(offsets, lines, map(dumps, map(bytes.decode, lines))):
                    ts, extra = extract(line)
                    out += fmt_parsed % (off, now if ts is None else ts.encode(), js, off, extra)
        except Exception:  # invalid UTF-8, or a format that raised: the per-line path sorts it out
            del out[before:]
            return self._encode_lines(frames, now, out)
        return sum(map(len, lines))

    def _encode_lines(self, frames: Frames, now: bytes, out: bytearray) -> int:
        """One event at a time, flags and repairs included (the reference behaviour)."""
        off = frames.start
        offsets = frames.offsets
        flags = frames.flags
        action, const, extract = self.action, self.const, self.extract
        msg_bytes = 0
        for i, line in enumerate(frames.lines):
            if offsets is not None:
                off = offsets[i]
            extra = b""
            line_flags = flags.get(i) if flags else None
            try:
                text = line.decode()
            except UnicodeDecodeError:
                text = line.decode(errors="replace")
                line_flags = [*(line_flags or ()), INVALID_UTF8]
            if "\0" in text:
                text = text.replace("\0", "\ufffd")
                line_flags = [*(line_flags or ()), NUL]
            ts = now
            if extract is not None:
                try:
                    parsed_ts, extra = extract(line)
                except Exception:  # the formats' backstop: one odd line never stops a reader
                    parsed_ts, extra = None, UNPARSED
                if parsed_ts is not None:
                    ts = parsed_ts.encode()
            if line_flags:
                extra += b',"log.flags":' + orjson.dumps(line_flags)
            out += b'%s%d"}}\n{"@timestamp":"%s","event.created":"%s","message":%s,"log.offset":%d%s%s' % (
                action, off, ts, now, orjson.dumps(text), off, extra, const,
            )
            msg_bytes += len(line)
            if offsets is None:
                off += len(line) + 1
        return msg_bytes
