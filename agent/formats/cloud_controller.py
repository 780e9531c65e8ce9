"""cloud_controller_ng (and its worker/clock) JSON, from Steno / the CC logger:

    {"timestamp":1458655387.3279622,"message":"Completed 200 vcap-request-id: ...","log_level":"info",
     "source":"cc.api","data":{"request_guid":"..."},"thread_id":47073419309700,"fiber_id":...,
     "process_id":3255,"file":".../request_logs.rb","lineno":23,"method":"call"}

Newer CCs write "timestamp" as an RFC 3339 string (cc.logging.format.timestamp: rfc3339).
"""

from __future__ import annotations

from agent.formats._common import json_with_time, UNPARSED, data_member, key, level_member, member

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


def extract(line: bytes) -> tuple[str | None, bytes]:
    found = json_with_time(line)
    if found is None:
        return None, UNPARSED
    doc, ts = found
    lv = doc.get("log_level")
    parts = [level_member(lv) if isinstance(lv, str) else b""]
    for name, k, tp in (("source", K_LOGGER, str), ("message", K_MESSAGE, str)):
        v = doc.get(name)
        if isinstance(v, tp) and v:
            parts.append(member(k, v))
    for name, k, tp in _SIMPLE:
        v = doc.get(name)
        # bool is an int subclass; a huge int would not fit a long mapping.
        if isinstance(v, tp) and not isinstance(v, bool) and (tp is not int or 0 <= v < 2**63):
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
    return ts, b"".join(parts)
