"""gorouter access.log (routing-release, accesslog/schema/access_log_record.go):

    host - [2021-02-18T21:22:32.355501523Z] "GET / HTTP/1.1" 200 0 62 "-" "curl/7.54.0" "35.191.2.80:51628"
    "10.0.1.11:61002" x_forwarded_for:"..." x_forwarded_proto:"http" vcap_request_id:"..." response_time:0.011962
    gorouter_time:0.000467 app_id:"..." app_index:"0" instance_id:"..." x_cf_routererror:"-" x_b3_traceid:"..."

Strings are Go-quoted (strconv.Quote), "-" means empty. Older routers wrote the time as
2006-01-02T15:04:05.000-0700 and a bare response_time.
"""

from __future__ import annotations

import re

from agent.formats._common import UNPARSED, ISO_RE, iso_match, key, member, seconds_to_ns, unescape

# A Go-quoted string, written as an unrolled loop: much faster in `re` than an alternation per byte.
_Q = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
_HEAD = re.compile(
    rb"(\S*) - \[([^\]]*)\] " + _Q + rb' (\d{3}|"-") (\d+) (\d+) ' + _Q + b" " + _Q + b" " + _Q + b" " + _Q, re.S
)
_KV = re.compile(rb' ?([a-z0-9_]+):("[^"\\]*(?:\\.[^"\\]*)*"|[^ "]*)', re.S)

K_DOMAIN = key("url.domain")
K_METHOD = key("http.request.method")
K_URL = key("url.original")
K_VERSION = key("http.version")
K_STATUS = key("http.response.status_code")
K_REQ_BYTES = key("http.request.body.bytes")
K_RESP_BYTES = key("http.response.body.bytes")
K_REFERRER = key("http.request.referrer")
K_UA = key("user_agent.original")
K_SOURCE = key("source.address")
K_DEST = key("destination.address")
K_DURATION = key("event.duration")

# key:"value" pairs after the fixed head: name in the line -> member prefix; durations are seconds.
_STRING_KEYS = {
    b"x_forwarded_for": key("cf.gorouter_access.x_forwarded_for"),
    b"x_forwarded_proto": key("url.scheme"),
    b"vcap_request_id": key("http.request.id"),
    b"app_id": key("cf.app.id"),
    b"app_index": key("cf.app.instance_index"),
    b"instance_id": key("cf.app.instance_id"),
    b"route_service_url": key("cf.gorouter_access.route_service_url"),
    b"x_cf_routererror": key("cf.gorouter_access.router_error"),
    b"x_b3_traceid": key("trace.id"),
    b"x_b3_spanid": key("span.id"),
}
_DURATION_KEYS = {
    b"response_time": K_DURATION,
    b"gorouter_time": key("cf.gorouter_access.gorouter_time_ns"),
}


def extract(line: bytes) -> tuple[str | None, bytes]:
    m = _HEAD.match(line)
    if not m:
        return None, UNPARSED
    host, when, request, status, received, sent, referer, agent, remote, backend = m.groups()
    tm = ISO_RE.fullmatch(when)
    ts = iso_match(tm) if tm else None
    if ts is None:
        return None, UNPARSED
    parts = []
    if host:
        parts.append(member(K_DOMAIN, unescape(host)))
    # "METHOD URI PROTO": the URI has no spaces (Go escapes them) but split from both ends anyway.
    method, _, rest = request.partition(b" ")
    uri, _, proto = rest.rpartition(b" ")
    if method and uri:
        parts.append(member(K_METHOD, unescape(method)))
        parts.append(member(K_URL, unescape(uri)))
        if proto.startswith(b"HTTP/"):
            parts.append(member(K_VERSION, proto[5:].decode("ascii", "replace")))
    if status != b'"-"':
        parts.append(member(K_STATUS, int(status)))
    parts.append(member(K_REQ_BYTES, int(received)))
    parts.append(member(K_RESP_BYTES, int(sent)))
    for k, v in ((K_REFERRER, referer), (K_UA, agent), (K_SOURCE, remote), (K_DEST, backend)):
        if v and v != b"-":
            parts.append(member(k, unescape(v)))
    for kv in _KV.finditer(line, m.end()):
        name, value = kv.groups()
        if value.startswith(b'"'):
            value = value[1:-1]
        if not value or value == b"-":
            continue
        k = _STRING_KEYS.get(name)
        if k is not None:
            parts.append(member(k, unescape(value)))
            continue
        k = _DURATION_KEYS.get(name)
        if k is not None:
            ns = seconds_to_ns(value)
            if ns is not None:
                parts.append(member(k, ns))
    return ts, b"".join(parts)
