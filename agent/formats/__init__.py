"""Per-format field extraction: one small module per log format.

A format is a function `extract(line: bytes) -> (timestamp, fields)`:
- `line` is one event's message bytes (multiline events contain b"\\n"), no trailing newline;
- `timestamp` is an RFC 3339 string for `@timestamp`, or None to keep the read time;
- `fields` are JSON object members, already serialised, each with a leading comma and a
  dotted ECS name, e.g. b',"log.level":"error"'; b"" when the line yields nothing.
A line a format cannot parse yields (None, UNPARSED): it is shipped raw, tagged.
"""

from __future__ import annotations

from collections.abc import Callable

Extract = Callable[[bytes], "tuple[str | None, bytes]"]

UNPARSED = b',"tags":["log_shipper_unparsed"]'


def raw(line: bytes) -> tuple[str | None, bytes]:
    return None, b""


FORMATS: dict[str, Extract] = {"raw": raw}
