"""lager JSON (code.cloudfoundry.org/lager and gorouter's zap output), both generations:

    {"timestamp":"1700000000.123456789","source":"rep","message":"rep.x.y","log_level":1,"data":{...}}
    {"timestamp":"2026-11-27T23:59:00.123456789Z","level":"info","source":"garden","message":"...","data":{...}}
"""

from __future__ import annotations

import orjson

from agent.formats._common import (
    DATA_DEPTH_LIMIT, UNPARSED, data_member, json_with_time, key, level_member, level_name, member,
)

# lager.LogLevel: DEBUG=0, INFO=1, ERROR=2, FATAL=3 (lager/models.go).
_INT_LEVELS = {0: "debug", 1: "info", 2: "error", 3: "fatal"}
_INT_LEVEL_MEMBERS = {n: level_member(w) for n, w in _INT_LEVELS.items()}

K_LOGGER = key("log.logger")
K_ACTION = key("event.action")
K_ERROR = key("error.message")
K_DATA = key("cf.lager.data")


def extract(line: bytes) -> tuple[str | None, bytes]:
    found = json_with_time(line)
    if found is None:
        return None, UNPARSED
    doc, ts = found
    # The picked fields go through one orjson.dumps of a small object under their dotted names, whose
    # braces come off: the same members, in the same order, as one dumps per field.
    lv = doc.get("log_level")
    if type(lv) is int:
        level = _INT_LEVELS.get(lv)
    elif type(lv) is str:
        level = level_name(lv)
    else:
        lv = doc.get("level")
        level = level_name(lv) if type(lv) is str else None
    picked = {"log.level": level} if level else {}
    source = doc.get("source")
    if type(source) is str and source:
        picked["log.logger"] = source
    # lager messages are dotted action names ("rep.executing-container-operation.failed"): keyword-like.
    message = doc.get("message")
    if type(message) is str and message:
        picked["event.action"] = message
    data = doc.get("data")
    if type(data) is dict and data:
        error = data.get("error")
        if type(error) is str and error:
            picked["error.message"] = error
        # Objects nest no deeper than the line has '{': only a line with many needs the depth walk.
        if line.count(b"{") > DATA_DEPTH_LIMIT + 1:
            return ts, _members(doc)
        picked["cf.lager.data"] = data
    if not picked:
        return ts, b""
    try:
        return ts, b"," + orjson.dumps(picked)[1:-1]
    except TypeError:  # orjson's own nesting limit: the exact path drops `data` alone
        return ts, _members(doc)


def _members(doc: dict) -> bytes:
    """One member at a time, `data` checked against the depth limit: the general path."""
    parts = [_level(doc)]
    source = doc.get("source")
    if isinstance(source, str) and source:
        parts.append(member(K_LOGGER, source))
    message = doc.get("message")
    if isinstance(message, str) and message:
        parts.append(member(K_ACTION, message))
    data = doc.get("data")
    if isinstance(data, dict) and data:
        error = data.get("error")
        if isinstance(error, str) and error:
            parts.append(member(K_ERROR, error))
        parts.append(data_member(K_DATA, data))
    return b"".join(parts)


def _level(doc: dict) -> bytes:
    lv = doc.get("log_level")
    if isinstance(lv, int) and not isinstance(lv, bool):
        return _INT_LEVEL_MEMBERS.get(lv, b"")
    if isinstance(lv, str):
        return level_member(lv)
    lv = doc.get("level")
    return level_member(lv) if isinstance(lv, str) else b""
