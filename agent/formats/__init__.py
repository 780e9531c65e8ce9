"""Per-format field extraction: one small module per log format.

A format is a function `extract(line: bytes) -> (timestamp, fields)`:
- `line` is one event's message bytes (multiline events contain b"\\n"), no trailing newline;
- `timestamp` is an RFC 3339 string for `@timestamp`, or None to keep the read time;
  formats write UTC with exactly three fraction digits ("2026-11-27T23:59:00.123Z"), truncated;
- `fields` are JSON object members, already serialised, each with a leading comma and a
  dotted ECS name, e.g. b',"log.level":"error"'; b"" when the line yields nothing.
A line a format cannot parse yields (None, UNPARSED): it is shipped raw, tagged.
Component JSON (`data` objects) goes under `cf.<format>.data` so two components never collide.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from agent.formats import bosh_dns, cc_nginx_access, cloud_controller, gorouter_access, lager, rfc3339, uaa
from agent.formats._common import UNPARSED

__all__ = ["FORMATS", "UNPARSED", "Extract", "raw", "auto"]

Extract = Callable[[bytes], "tuple[str | None, bytes]"]


def raw(line: bytes) -> tuple[str | None, bytes]:
    return None, b""


def auto(line: bytes) -> tuple[str | None, bytes]:
    """The default for files no rule names: take what a cheap sniff finds, never tag plain text unparsed."""
    first = line[:1]
    try:
        if first == b"{":
            ts, fields = lager.extract(line)
        elif first.isdigit() or first == b"[":
            ts, fields = rfc3339.extract(line)
        else:
            return None, b""
    except Exception:
        return None, b""
    return (None, b"") if fields is UNPARSED else (ts, fields)


def _never_raises(fn: Extract) -> Extract:
    # The formats are written not to raise; this is the backstop so one odd line can never stop a reader.
    @functools.wraps(fn)
    def safe(line: bytes) -> tuple[str | None, bytes]:
        try:
            return fn(line)
        except Exception:
            return None, UNPARSED

    return safe


FORMATS: dict[str, Extract] = {
    "raw": raw,
    "auto": auto,
    "lager": _never_raises(lager.extract),
    "cloud_controller": _never_raises(cloud_controller.extract),
    "cc_nginx_access": _never_raises(cc_nginx_access.extract),
    "gorouter_access": _never_raises(gorouter_access.extract),
    "uaa": _never_raises(uaa.extract),
    "bosh_dns": _never_raises(bosh_dns.extract),
    "rfc3339": _never_raises(rfc3339.extract),
}
