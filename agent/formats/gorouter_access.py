"""gorouter access.log (routing-release, accesslog/schema/access_log_record.go):

    host - [2021-02-18T21:22:32.355501523Z] "GET / HTTP/1.1" 200 0 62 "-" "curl/7.54.0" "35.191.2.80:51628"
    "10.0.1.11:61002" x_forwarded_for:"..." x_forwarded_proto:"http" vcap_request_id:"..." response_time:0.011962
    gorouter_time:0.000467 app_id:"..." app_index:"0" instance_id:"..." x_cf_routererror:"-" x_b3_traceid:"..."

Strings are Go-quoted (strconv.Quote), "-" means empty. Older routers wrote the time as
2006-01-02T15:04:05.000-0700 and a bare response_time.
"""

from __future__ import annotations

import re

from orjson import dumps

from agent.formats._common import K_DOMAIN, request_members, UNPARSED, ISO_RE, iso_match, key, member, seconds_to_ns, unescape

# A Go-quoted string, written as an unrolled loop: much faster in `re` than an alternation per byte.
_Q = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
_HEAD = re.compile(
    rb"(\S*) - \[([^\]]*)\] " + _Q + rb' (\d{3}|"-") (\d+) (\d+) ' + _Q + b" " + _Q + b" " + _Q + b" " + _Q, re.S
)
_KV = re.compile(rb' ?([a-z0-9_]+):("[^"\\]*(?:\\.[^"\\]*)*"|[^ "]*)', re.S)
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
# --- Fast path: the usual line, valid UTF-8 whose emitted values hold no control byte, '"' or backslash,
# so each is already its own JSON string text (no Go escape to undo, nothing orjson would escape) and can
# be copied between quotes; numbers are matched in canonical form. The regex accepts only a subset of
# what _HEAD/_KV accept, in which both find the same values; any other line takes `_extract_exact`.
_C = rb'[^"\\\x00-\x1f]'  # a byte of a value that can be copied as is (UTF-8 checked once per line)
# A quoted value, captured with its quotes (the JSON string as it is); "-" and "" leave the group None.
# (`""` is tried before the general alternative, which would take it too: both end at the same place,
# so a match never needs the general one for it.)
_V = rb'(?:"-"|""|("' + _C + rb'*"))'
# The same, Go escapes allowed (user agents and referrers quote): members with a backslash are made exactly.
_VE = rb'(?:"-"|""|("' + _C + rb"*(?:\\." + _C + rb'*)*"))'
_FAST_HEAD = (
    rb'([!#-\[\]-~]*) - \[((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})\d*Z|[^\]]*)\] '
    rb'"(' + _C[:-1] + rb' ]+) (' + _C[:-1] + rb' ]+) HTTP/([!#-\[\]-~]*)" '  # the exact path writes the version as ASCII
    rb'([1-9]\d\d|"-") (0|[1-9]\d{0,17}) (0|[1-9]\d{0,17}) ' + _VE + b" " + _VE + b" " + _V + b" " + _V
)
# Seconds as gorouter writes them: whole part of at most nine digits (seconds_to_ns's limit), any fraction.
_SECS = rb'(?:(\d{1,9})(?:\.(\d*)|)|[^ "]*)'
# The pairs after the head in routing-release's order, each optional (written `(?:x|)`, which `re` runs
# faster than `(?:x)?`); the fields no member is made of must hold no backslash, which _KV reads as an escape.
_FAST_TAIL = (
    rb"(?: x_forwarded_for:" + _V + rb"|)(?: x_forwarded_proto:" + _V + rb"|)(?: vcap_request_id:" + _V + rb"|)"
    rb"(?: response_time:" + _SECS + rb"|)(?: gorouter_time:" + _SECS + rb"|)"
    rb"(?: app_id:" + _V + rb"|)(?: app_index:" + _V + rb"|)(?: instance_id:" + _V + rb"|)"
    rb"(?: x_cf_routererror:" + _V + rb"|)(?: x_b3_traceid:" + _V + rb"|)(?: x_b3_spanid:" + _V + rb"|)"
    rb'(?: x_b3_parentspanid:"[^"\\]*"|)(?: b3:"[^"\\]*"|)'
)
# Head and tail in one fullmatch: one call into `re` per line.
_FAST = re.compile(_FAST_HEAD + _FAST_TAIL)
_HEAD_FMT = (
    b'%s,"http.request.method":"%s","url.original":"%s","http.version":"%s"%s'
    b',"http.request.body.bytes":%s,"http.response.body.bytes":%s'
)


_Q_DOMAIN = K_DOMAIN + b'"'
K_XFF, K_XFP, K_RID, K_APP, K_IDX, K_INST, K_ERR, K_TRACE, K_SPAN = (
    _STRING_KEYS[n]
    for n in (b"x_forwarded_for", b"x_forwarded_proto", b"vcap_request_id", b"app_id", b"app_index", b"instance_id",
              b"x_cf_routererror", b"x_b3_traceid", b"x_b3_spanid")
)
K_GOROUTER_TIME = _DURATION_KEYS[b"gorouter_time"]
_last_second: list = [None, ""]  # one-entry cache: the seconds of the last fast-path time -> "YYYY-MM-DDTHH:MM:SS."


# --- Usual path: the whole line as routing-release writes it today, every pair present in its order, only the
# referrer, user agent and router error may be "-" (or ""). No optional group per pair,
# values matched as "anything but a quote" (which `re` runs several times faster than a class of excluded
# bytes), and one %-format per set of present values instead of a member at a time. One orjson.dumps of the
# line then checks in C what the classes no longer do: valid UTF-8, no control byte, a backslash only in the
# referrer and user agent (made exactly). Values are captured without their quotes.
_U = rb'"(?!-")([^"]+)"'  # present: not "-", not ""
_UE = rb'(?:"-"|"([^"\\]*(?:\\.[^"\\]*)*)")'  # "" too: an empty group, dropped as "-" is
_UX = rb'(?:"-"|"([^"]*)")'
_USUAL = re.compile(
    rb'([!#-\[\]-~]+) - \[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.)(\d{3})\d*Z\] '
    rb'"([^ "]+) ([^ "]+) HTTP/([!#-\[\]-~]*)" ([1-9]\d\d) (0|[1-9]\d{0,17}) (0|[1-9]\d{0,17}) '
    + _UE + b" " + _UE + b" " + _U + b" " + _U + rb" x_forwarded_for:" + _U + rb" x_forwarded_proto:" + _U
    + rb" vcap_request_id:" + _U + rb" response_time:(\d{1,9})(?:\.(\d*)|) gorouter_time:(\d{1,9})(?:\.(\d*)|) app_id:" + _U
    + rb" app_index:" + _U + rb" instance_id:" + _U + rb" x_cf_routererror:" + _UX
    + rb' x_b3_traceid:' + _U + rb" x_b3_spanid:" + _U + rb' x_b3_parentspanid:"[^"]*" b3:"[^"]*"'
)
_USUAL_QUOTES = 32  # in a usual line without escapes: 16 quoted values
_NINE_ZEROS = b"000000000"
_usual_second: list = [None, ""]  # one-entry cache: "YYYY-MM-DDTHH:MM:SS." of the last usual line, checked


def _usual_format(referrer: bool, agent: bool, error: bool) -> bytes:
    """The members of a usual line with these optional values present; `%.0s` consumes an absent one."""
    def q(k: bytes, there: bool = True) -> bytes:
        return k + b'"%s"' if there else b"%.0s"

    return b"".join((
        _Q_DOMAIN + b'%s","http.request.method":"%s","url.original":"%s","http.version":"%s"', K_STATUS + b"%s",
        K_REQ_BYTES + b"%s", K_RESP_BYTES + b"%s",
        q(K_REFERRER, referrer), q(K_UA, agent), q(K_SOURCE), q(K_DEST), q(K_XFF), q(K_XFP), q(K_RID),
        K_DURATION + b"%d", K_GOROUTER_TIME + b"%d", q(K_APP), q(K_IDX), q(K_INST), q(K_ERR, error),
        q(K_TRACE), q(K_SPAN),
    ))


_USUAL_FORMATS = {(r, a, e): _usual_format(r, a, e) for r in (False, True) for a in (False, True) for e in (False, True)}


def extract(line: bytes) -> tuple[str | None, bytes]:
    """The usual path, else the fast path, else `_extract_exact`: the members are the same bytes on each."""
    m = _USUAL.fullmatch(line)
    if m is None:
        return _extract_fast(line)
    (host, sec, ms, method, uri, version, status, received, sent, referer, agent, remote, backend, xff, xfp, rid,
     rt_s, rt_f, gt_s, gt_f, app, idx, inst, err, trace, span) = m.groups(b"")
    try:
        written = len(dumps(line.decode()))  # invalid UTF-8 becomes U+FFFD in the exact path
    except UnicodeDecodeError:
        return _extract_exact(line)
    # orjson writes one more byte per '"' and backslash, and more for a control byte; a line of plain
    # values has _USUAL_QUOTES quotes, one with escapes more quotes and the backslashes.
    escaped = written != len(line) + 2 + _USUAL_QUOTES
    if escaped:
        backslashes = line.count(b"\\")
        if (not backslashes or backslashes != referer.count(b"\\") + agent.count(b"\\")
                or written != len(line) + 2 + line.count(b'"') + backslashes):
            return _extract_fast(line)
    if sec != _usual_second[0]:
        tm = ISO_RE.fullmatch(sec + b"000Z")  # the fraction never makes a time invalid
        ts = iso_match(tm) if tm else None
        if ts is None:
            return None, UNPARSED
        _usual_second[0], _usual_second[1] = sec, ts[:20]
    ts = _usual_second[1] + ms.decode() + "Z"
    if escaped:
        referer, agent = _go_text(referer), _go_text(agent)
    return ts, _USUAL_FORMATS[bool(referer), bool(agent), bool(err)] % (
        host, method, uri, version, status, received, sent, referer, agent, remote, backend, xff, xfp, rid,
        int(rt_s + (rt_f + _NINE_ZEROS)[:9]), int(gt_s + (gt_f + _NINE_ZEROS)[:9]), app, idx, inst, err, trace, span,
    )


def _go_text(v: bytes) -> bytes:
    """A Go-quoted value's JSON string text (without quotes), as the exact path writes it."""
    return dumps(unescape(v))[1:-1] if b"\\" in v else v


def _extract_fast(line: bytes) -> tuple[str | None, bytes]:
    """Any line of the usual pairs in their order, each optional, plain values: the same bytes as `_extract_exact`."""
    m = _FAST.fullmatch(line)
    if m is None:
        return _extract_exact(line)
    if not line.isascii():
        try:
            line.decode()  # invalid UTF-8 becomes U+FFFD in the exact path
        except UnicodeDecodeError:
            return _extract_exact(line)
    (host, when, sec, ms, method, uri, version, status, received, sent, referer, agent, remote, backend,
     xff, xfp, rid, rt_s, rt_f, gt_s, gt_f, app, idx, inst, err, trace, span) = m.groups()
    if sec is not None and sec == _last_second[0]:
        ts = _last_second[1] + ms.decode() + "Z"
    else:
        tm = ISO_RE.fullmatch(when)
        ts = iso_match(tm) if tm else None
        if ts is None:
            return None, UNPARSED
        if sec is not None:  # UTC already: the prefix is the line's own, checked once per second
            _last_second[0], _last_second[1] = sec, ts[:20]
    return ts, b"".join((
        _HEAD_FMT % (
            (_Q_DOMAIN + host + b'"') if host else b"", method, uri, version,
            (K_STATUS + status) if status != b'"-"' else b"", received, sent,
        ),
        ((K_REFERRER + referer) if b"\\" not in referer else member(K_REFERRER, unescape(referer[1:-1])))
        if referer else b"",
        ((K_UA + agent) if b"\\" not in agent else member(K_UA, unescape(agent[1:-1]))) if agent else b"",
        (K_SOURCE + remote) if remote else b"",
        (K_DEST + backend) if backend else b"",
        (K_XFF + xff) if xff else b"",
        (K_XFP + xfp) if xfp else b"",
        (K_RID + rid) if rid else b"",
        (K_DURATION + b"%d" % int(rt_s + ((rt_f or b"") + b"000000000")[:9])) if rt_s else b"",
        (K_GOROUTER_TIME + b"%d" % int(gt_s + ((gt_f or b"") + b"000000000")[:9])) if gt_s else b"",
        (K_APP + app) if app else b"",
        (K_IDX + idx) if idx else b"",
        (K_INST + inst) if inst else b"",
        (K_ERR + err) if err else b"",
        (K_TRACE + trace) if trace else b"",
        (K_SPAN + span) if span else b"",
    ))


def _extract_exact(line: bytes) -> tuple[str | None, bytes]:
    """Any line: every value unescaped and serialised by orjson."""
    m = _HEAD.match(line)
    if not m:
        return None, UNPARSED
    host, when, request, status, received, sent, referer, agent, remote, backend = m.groups()
    tm = ISO_RE.fullmatch(when)
    ts = iso_match(tm) if tm else None
    if ts is None:
        return None, UNPARSED
    parts = request_members(host, request)
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
