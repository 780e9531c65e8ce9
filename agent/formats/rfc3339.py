"""Any line that starts with an RFC 3339 time, optionally followed by a level word:

    2026-11-27T23:59:00.123456Z INFO something happened
    2026-11-27T23:59:00+01:00 [error] something failed
"""

from __future__ import annotations

import re

from agent.formats._common import UNPARSED, iso_at, level_member

_LEVEL = re.compile(rb"[\s\]]*\[?([A-Za-z]{3,11})\b")


def extract(line: bytes) -> tuple[str | None, bytes]:
    # Some loggers bracket the time: "[2026-11-27T23:59:00Z] ...".
    parsed = iso_at(line, 1 if line.startswith(b"[") else 0)
    if parsed is None:
        return None, UNPARSED
    ts, end = parsed
    m = _LEVEL.match(line, end)
    return ts, level_member(m.group(1)) if m else b""
