"""cloud_controller_ng (and its worker/clock) JSON, from Steno / the CC logger:

    {"timestamp":1458655387.3279622,"message":"Completed 200 vcap-request-id: ...","log_level":"info",
     "source":"cc.api","data":{"request_guid":"..."},"thread_id":47073419309700,"fiber_id":...,
     "process_id":3255,"file":".../request_logs.rb","lineno":23,"method":"call"}

Newer CCs write "timestamp" as an RFC 3339 string (cc.logging.format.timestamp: rfc3339).
"""

from __future__ import annotations

from operator import itemgetter

import orjson

from agent.formats._common import (
    DATA_DEPTH_LIMIT, UNPARSED, data_member, json_with_time, key, level_member, level_name, member,
)

K_LOGGER = key("log.logger")
K_MESSAGE = key("cf.cloud_controller.message")
K_REQUEST_ID = key("http.request.id")
K_ERROR = key("error.message")
K_DATA = key("cf.cloud_controller.data")
K_PID = key("process.pid")
K_TID = key("process.thread.id")
K_FILE = key("log.origin.file.name")
K_LINE = key("log.origin.file.line")
K_FUNC = key("log.origin.function")

# Top-level integers/strings copied as they are: (JSON key, member prefix, expected type).
_SIMPLE = (
    ("process_id", K_PID, int),
    ("thread_id", K_TID, int),
    ("file", K_FILE, str),
    ("lineno", K_LINE, int),
    ("method", K_FUNC, str),
)
# The usual line has every one of these with its type: one check of them all, in C iterators.
_KEYS = ("source", "message", "process_id", "thread_id", "file", "lineno", "method")
_FIELDS = itemgetter(*_KEYS)
_TYPES = (str, str, int, int, str, int, str)
_LONG_LIMIT = 2**63  # a long mapping holds less


def extract(line: bytes) -> tuple[str | None, bytes]:
    found = json_with_time(line)
    if found is None:
        return None, UNPARSED
    doc, ts = found
    try:
        values = _FIELDS(doc)  # in C, where a map of doc.get is a call per key
    except KeyError:
        return ts, _members(doc)
    # all(): no empty string (nor a zero, which the general path writes); the OR of the integers is in
    # [0, 2**63) only when each of them is.
    if tuple(map(type, values)) != _TYPES or not all(values):
        return ts, _members(doc)
    source, message, pid, tid, file, lineno, method = values
    if not 0 <= (pid | tid | lineno) < _LONG_LIMIT:
        return ts, _members(doc)
    lv = doc.get("log_level")
    # One orjson.dumps of the members under their dotted names, braces off: the same members, in the
    # same order, as one dumps per field (`_members`). A dict display, not an update from a zip.
    picked = {
        "log.level": level_name(lv) if type(lv) is str else None, "log.logger": source,
        "cf.cloud_controller.message": message, "process.pid": pid, "process.thread.id": tid,
        "log.origin.file.name": file, "log.origin.file.line": lineno, "log.origin.function": method,
    }
    if picked["log.level"] is None:
        del picked["log.level"]
    data = doc.get("data")
    if type(data) is dict and data:
        rid = data.get("request_guid")
        if type(rid) is str and rid:
            picked["http.request.id"] = rid
        err = data.get("error")
        if type(err) is str and err:
            picked["error.message"] = err
        # Objects nest no deeper than the line has '{': only a line with many needs the depth walk.
        if line.count(b"{") > DATA_DEPTH_LIMIT + 1:
            return ts, _members(doc)
        picked["cf.cloud_controller.data"] = data
    try:
        return ts, b"," + orjson.dumps(picked)[1:-1]
    except TypeError:  # orjson's own nesting limit: the general path drops `data` alone
        return ts, _members(doc)


def _members(doc: dict) -> bytes:
    """One member at a time, `data` checked against the depth limit: the general path."""
    lv = doc.get("log_level")
    parts = [level_member(lv) if isinstance(lv, str) else b""]
    for name, k, tp in (("source", K_LOGGER, str), ("message", K_MESSAGE, str)):
        v = doc.get(name)
        if isinstance(v, tp) and v:
            parts.append(member(k, v))
    for name, k, tp in _SIMPLE:
        v = doc.get(name)
        # bool is an int subclass; a huge int would not fit a long mapping.
        if isinstance(v, tp) and not isinstance(v, bool) and (tp is not int or 0 <= v < _LONG_LIMIT):
            parts.append(member(k, v))
    data = doc.get("data")
    if isinstance(data, dict) and data:
        rid = data.get("request_guid")
        if isinstance(rid, str) and rid:
            parts.append(member(K_REQUEST_ID, rid))
        err = data.get("error")
        if isinstance(err, str) and err:
            parts.append(member(K_ERROR, err))
        parts.append(data_member(K_DATA, data))
    return b"".join(parts)
