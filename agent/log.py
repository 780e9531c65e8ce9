"""The agent's own log: one short JSON object per line on stderr, for operators."""

from __future__ import annotations

import sys
import threading
import time

import orjson

_lock = threading.Lock()


def _emit(level: str, event: str, msg: str, fields: dict) -> None:
    rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level, "event": event, "msg": msg}
    rec.update(fields)
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
