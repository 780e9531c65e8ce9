"""UAA's log4j2 lines (uaa-release jobs/uaa/templates/config/log4j2.properties.erb):

    [%d{...}] uaa%X{context} - %pid [%t] .... %5p --- %c{1}: %m%n

The time is written three ways across releases: "2026-11-27 23:59:00.123" (no zone: the VM's UTC),
"2026-11-27T23:59:00.123Z" (uaa.logging_use_rfc3339) and "2026-11-27T23:59:00.123456Z".
Stack traces follow on further lines; the default rule joins them (multiline start = this timestamp).
"""

from __future__ import annotations

import re

from agent.formats._common import UNPARSED, iso_at, key, level_member, member, text

_REST = re.compile(rb"\] uaa\S* - (\d{1,10}) \[([^\]\n]*)\] \.\.\.\. +([A-Za-z]+) --- ([^:\s]+): ?")
_ACTION = re.compile(rb"[A-Za-z]+")

K_PID = key("process.pid")
K_THREAD = key("process.thread.name")
K_LOGGER = key("log.logger")
K_ACTION = key("event.action")


# --- Fast path: the usual head (UTC time with at least milliseconds, printable ASCII thread and logger
# names without '"' or backslash, a plain pid), whose values are already JSON string text. It accepts a
# subset of what `_extract_general` does, where both give the same bytes; any other line takes that path.
_FAST = re.compile(
    rb"\[(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)[.,](\d{3})\d*Z?\] uaa\S* - (0|[1-9]\d{0,9}) \[([ !#-\[\^-~]*)\] "
    rb"\.\.\.\. +([A-Za-z]+) --- ([!#-9;-\[\]-~]+): ?"
)
_FAST_FMT = b'%s,"process.pid":%s,"process.thread.name":"%s","log.logger":"%s"'
# Seconds text of fast-path times -> "YYYY-MM-DDTHH:MM:SS.": a dict, not one entry, as a file may alternate
# spellings of the same second ('T' and ' '); cleared when it grows, times mostly move forward.
_seconds: dict[bytes, str] = {}
_SECONDS_KEPT = 256


def extract(line: bytes) -> tuple[str | None, bytes]:
    m = _FAST.match(line)
    if m is None:
        return _extract_general(line)
    sec, ms, pid, thread, level, logger = m.groups()
    prefix = _seconds.get(sec)
    if prefix is None:
        parsed = iso_at(line, 1)  # checks the date once per second
        if parsed is None:
            return None, UNPARSED
        if len(_seconds) >= _SECONDS_KEPT:
            _seconds.clear()
        prefix = _seconds[sec] = parsed[0][:20]
    members = _FAST_FMT % (level_member(level), pid, thread, logger)
    if logger == b"Audit":
        a = _ACTION.match(line, m.end())
        if a:
            members += K_ACTION + b'"' + a.group() + b'"'
    return prefix + ms.decode() + "Z", members


def _extract_general(line: bytes) -> tuple[str | None, bytes]:
    """Any line: every value decoded and serialised by orjson."""
    if not line.startswith(b"["):
        return None, UNPARSED
    parsed = iso_at(line, 1)
    if parsed is None:
        return None, UNPARSED
    ts, end = parsed
    m = _REST.match(line, end)
    if not m:
        return None, UNPARSED
    pid, thread, level, logger = m.groups()
    parts = [level_member(level), member(K_PID, int(pid)), member(K_THREAD, text(thread)), member(K_LOGGER, text(logger))]
    if logger == b"Audit":
        # Audit lines start with the event type: "Audit: UserAuthenticationSuccess ('admin'): principal=..."
        a = _ACTION.match(line, m.end())
        if a:
            parts.append(member(K_ACTION, a.group().decode("ascii")))
    return ts, b"".join(parts)
