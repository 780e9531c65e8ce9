"""bosh-dns, through bosh-utils' logger: "[<tag>] <time> <LEVEL> - <message>".

    [RequestLoggerHandler] 2019/10/03 20:49:43 INFO - handlers.DiscoveryHandler Request [1] [amelia.meow.] 0 160000ns

The time is Go's log.LstdFlags ("2006/01/02 15:04:05", the VM's local time: UTC on stemcells) or,
with the rfc3339 logger, time.RFC3339 in UTC. Request lines (request_logger_handler.go) are
"%T Request [<qtypes>] [<names>] <rcode> <duration>ns".
"""

from __future__ import annotations

import re

from agent.formats._common import UNPARSED, iso_at, key, level_member, member, text

_HEAD = re.compile(
    rb"\[([^\]\n]*)\] (?:(\d{4})/(\d{2})/(\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ?|(?=\d{4}-))"
)
_LEVEL = re.compile(rb" ?(DEBUG|INFO|WARN|ERROR) - ")
_REQUEST = re.compile(rb"(\S+) Request \[([^\]]*)\] \[([^\]]*)\] (\d+) (?:\[([^\]]*)\] )?(\d+)ns")

# miekg/dns type and rcode numbers for the common cases; others stay numeric strings.
_QTYPES = {b"1": "A", b"2": "NS", b"5": "CNAME", b"6": "SOA", b"12": "PTR", b"15": "MX", b"16": "TXT",
           b"28": "AAAA", b"33": "SRV", b"35": "NAPTR", b"64": "SVCB", b"65": "HTTPS", b"255": "ANY"}  # fmt: skip
_RCODES = {b"0": "NOERROR", b"1": "FORMERR", b"2": "SERVFAIL", b"3": "NXDOMAIN", b"4": "NOTIMP", b"5": "REFUSED"}

K_LOGGER = key("log.logger")
K_HANDLER = key("cf.bosh_dns.handler")
K_QTYPE = key("dns.question.type")
K_QNAME = key("dns.question.name")
K_RCODE = key("dns.response_code")
K_RECURSOR = key("cf.bosh_dns.recursor")
K_DURATION = key("event.duration")


def extract(line: bytes) -> tuple[str | None, bytes]:
    m = _HEAD.match(line)
    if not m:
        return None, UNPARSED
    tag, y, mo, d, hms = m.groups()
    if y is not None:
        parsed = iso_at(b"%s-%s-%sT%sZ" % (y, mo, d, hms))
        end = m.end()
    else:
        parsed = iso_at(line, m.end())
        end = parsed[1] if parsed else 0
    if parsed is None:
        return None, UNPARSED
    lv = _LEVEL.match(line, end)
    if not lv:
        return None, UNPARSED
    parts = [level_member(lv.group(1)), member(K_LOGGER, text(tag))]
    r = _REQUEST.match(line, lv.end())
    if r:
        handler, qtypes, names, rcode, extra, ns = r.groups()
        parts.append(member(K_HANDLER, text(handler)))
        parts.append(member(K_QTYPE, ",".join(_QTYPES.get(t, t.decode("ascii", "replace")) for t in qtypes.split(b","))))
        parts.append(member(K_QNAME, text(names)))
        parts.append(member(K_RCODE, _RCODES.get(rcode) or rcode.decode("ascii")))
        if extra and extra.startswith(b"recursor="):
            parts.append(member(K_RECURSOR, text(extra[9:])))
        if len(ns) <= 18:
            parts.append(member(K_DURATION, int(ns)))
    return parsed[0], b"".join(parts)
