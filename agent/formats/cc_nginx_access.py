"""Cloud Controller's nginx access log (capi-release, property cc.nginx_access_log_format):

    $host - [$time_local] "$request" $status $bytes_sent "$http_referer" "$http_user_agent"
    $proxy_add_x_forwarded_for vcap_request_id:$upstream_http_x_vcap_request_id response_time:$upstream_response_time

nginx escapes '"' and non-printable bytes as \\xHH, so quoted fields never contain a raw quote.
$proxy_add_x_forwarded_for is "client, proxy, ..., remote_addr" (with spaces);
$upstream_response_time may list several upstream tries ("0.010, 0.002" or "0.010 : 0.002").
"""

from __future__ import annotations

import re

from agent.formats._common import request_members, UNPARSED, iso_at, key, member, seconds_to_ns, unescape

_LINE = re.compile(
    rb"(\S*) - \[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\] "
    rb'"([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" (.*?) vcap_request_id:(\S*) response_time:(.*)',
    re.S,
)
_MONTHS = {m: b"%02d" % (i + 1) for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"))}  # fmt: skip

K_STATUS = key("http.response.status_code")
K_BYTES = key("http.response.bytes")  # $bytes_sent counts headers too: not the ECS body.bytes
K_REFERRER = key("http.request.referrer")
K_UA = key("user_agent.original")
K_SOURCE = key("source.address")
K_XFF = key("cf.cc_nginx_access.x_forwarded_for")
K_REQUEST_ID = key("http.request.id")
K_DURATION = key("event.duration")


def extract(line: bytes) -> tuple[str | None, bytes]:
    m = _LINE.match(line)
    if not m:
        return None, UNPARSED
    (host, day, mon, year, hh, mi, ss, zone, request, status, sent, referer, agent, xff, rid, rtime) = m.groups()
    month = _MONTHS.get(mon)
    if month is None:
        return None, UNPARSED
    parsed = iso_at(b"%s-%s-%sT%s:%s:%s%s" % (year, month, day, hh, mi, ss, zone))
    if parsed is None:
        return None, UNPARSED
    parts = request_members(host, request)
    parts.append(member(K_STATUS, int(status)))
    parts.append(member(K_BYTES, int(sent)))
    for k, v in ((K_REFERRER, referer), (K_UA, agent)):
        if v and v != b"-":
            parts.append(member(k, unescape(v)))
    if xff and xff != b"-":
        # The first entry is the original client as the proxies reported it; the full chain stays searchable.
        parts.append(member(K_SOURCE, unescape(xff.split(b",", 1)[0].strip())))
        parts.append(member(K_XFF, unescape(xff)))
    if rid and rid != b"-":
        parts.append(member(K_REQUEST_ID, unescape(rid)))
    total = _upstream_ns(rtime)
    if total is not None:
        parts.append(member(K_DURATION, total))
    return parsed[0], b"".join(parts)


def _upstream_ns(rtime: bytes) -> int | None:
    # Several tries are separated by ", " or " : "; the request took their sum.
    total = None
    for tok in rtime.replace(b",", b" ").replace(b":", b" ").split():
        ns = seconds_to_ns(tok)
        if ns is not None:
            total = (total or 0) + ns
    return total
