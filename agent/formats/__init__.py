"""Per-format field extraction: one small module per log format.

A format is a function `extract(line: bytes) -> (timestamp, fields)`:
- `line` is one event's message bytes (multiline events contain b"\\n"), no trailing newline;
- `timestamp` is an RFC 3339 string for `@timestamp`, or None to keep the read time;
  formats write UTC with exactly three fraction digits ("2026-11-27T23:59:00.123Z"), truncated;
- `fields` are JSON object members, already serialised, each with a leading comma and a
  dotted ECS name, e.g. b',"log.level":"error"'; b"" when the line yields nothing.
A line a format cannot parse yields (None, UNPARSED): it is shipped raw, tagged. Formats are written
not to raise; should one raise all the same, the encoder ships that line as if it had yielded UNPARSED
(agent/encode.py: the backstop costs nothing per line there, where a wrapper here was a call per line).
Component JSON (`data` objects) goes under `cf.<format>.data` so two components never collide.
"""

from __future__ import annotations

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


FORMATS: dict[str, Extract] = {
    "raw": raw,
    "auto": auto,
    "lager": lager.extract,
    "cloud_controller": cloud_controller.extract,
    "cc_nginx_access": cc_nginx_access.extract,
    "gorouter_access": gorouter_access.extract,
    "uaa": uaa.extract,
    "bosh_dns": bosh_dns.extract,
    "rfc3339": rfc3339.extract,
}
