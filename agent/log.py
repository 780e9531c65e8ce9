"""The agent's own log: one short JSON object per line on stderr, for operators."""

from __future__ import annotations

import sys
import threading
import time

import orjson

_lock = threading.Lock()


def shown(path: str) -> str:
    """A path as people and documents see it: file names are bytes, and those that are not
    UTF-8 (decoded by Python with surrogate escapes, which no JSON encoder takes) appear
    with `\\xNN` for each such byte, as `ls -b` shows them."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return path.encode(errors="surrogateescape").decode(errors="backslashreplace")


def _emit(level: str, event: str, msg: str, fields: dict) -> None:
    rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level, "event": event, "msg": msg}
    rec.update({k: shown(v) if isinstance(v, str) else v for k, v in fields.items()})
    line = orjson.dumps(rec, default=str) + b"\n"
    with _lock:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()


def info(event: str, msg: str, **fields) -> None:
    _emit("info", event, msg, fields)


def warn(event: str, msg: str, **fields) -> None:
    _emit("warn", event, msg, fields)


def error(event: str, msg: str, **fields) -> None:
    _emit("error", event, msg, fields)
