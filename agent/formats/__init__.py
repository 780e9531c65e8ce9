"""Per-format field extraction: one small module per log format.

A format is a function `extract(line: bytes) -> (timestamp, fields)`:
- `line` is one event's message bytes (multiline events contain b"\\n"), no trailing newline;
- `timestamp` is an RFC 3339 string for `@timestamp`, or None to keep the read time;
  formats write UTC with exactly three fraction digits ("2026-11-27T23:59:00.123Z"), truncated;
- `fields` are JSON object members, already serialised, each with a leading comma and a
  dotted ECS name, e.g. b',"log.level":"error"'; b"" when the line yields nothing.
A line a format cannot parse yields (None, UNPARSED): it is shipped raw, tagged. Formats are written
not to raise; should one raise all the same, the encoder ships that line as if it had yielded UNPARSED
(agent/encode.py: the backstop costs nothing per line there, where a wrapper here was a call per line).
Component JSON (`data` objects) goes under `cf.<format>.data` so two components never collide.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from agent.config import MultilineConfig
from agent.formats import bosh_dns, cc_nginx_access, cloud_controller, gorouter_access, lager, rfc3339, uaa
from agent.formats._common import UNPARSED

__all__ = ["FORMATS", "UNPARSED", "Extract", "default_rule", "raw", "auto"]

Extract = Callable[[bytes], "tuple[str | None, bytes]"]


def raw(line: bytes) -> tuple[str | None, bytes]:
    return None, b""


def auto(line: bytes) -> tuple[str | None, bytes]:
    """The default for files no rule names: take what a cheap sniff finds, never tag plain text unparsed."""
    first = line[:1]
    try:
        if first == b"{":
            ts, fields = lager.extract(line)
        elif first.isdigit() or first == b"[":
            ts, fields = rfc3339.extract(line)
        else:
            return None, b""
    except Exception:
        return None, b""
    return (None, b"") if fields is UNPARSED else (ts, fields)


FORMATS: dict[str, Extract] = {
    "raw": raw,
    "auto": auto,
    "lager": lager.extract,
    "cloud_controller": cloud_controller.extract,
    "cc_nginx_access": cc_nginx_access.extract,
    "gorouter_access": gorouter_access.extract,
    "uaa": uaa.extract,
    "bosh_dns": bosh_dns.extract,
    "rfc3339": rfc3339.extract,
}

# A UAA event starts with its bracketed time; stack-trace lines do not.
UAA_MULTILINE_START = r"^\[\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}"

# Jobs whose *.stdout.log / *.stderr.log are lager JSON (Diego, routing, networking, CAPI Go parts).
_LAGER_JOBS = frozenset({
    "gorouter", "rep", "garden", "bbs", "auctioneer", "route_emitter", "locket", "file_server", "ssh_proxy",
    "routing-api", "tcp_router", "route_registrar", "cc_uploader", "tps", "silk-daemon", "silk-controller",
    "silk-cni", "vxlan-policy-agent", "policy-server", "policy-server-internal", "netmon", "service-discovery-controller",
    "bosh-dns-adapter", "cfdot", "nats", "loggr-udp-forwarder",
})  # fmt: skip
_CC_JOBS = frozenset({"cloud_controller_ng", "cloud_controller_worker", "cloud_controller_clock", "cc_deployment_updater"})


def default_rule(relpath: str) -> tuple[str, MultilineConfig | None]:
    """Built-in (format, multiline) for a path relative to the log root, e.g. 'gorouter/access.log'."""
    parts = PurePosixPath(relpath.lstrip("/")).parts
    if parts and parts[0] == ".":
        parts = parts[1:]
    if not parts:
        return "auto", None
    job, name = parts[0], parts[-1]
    if job == "gorouter" and name == "access.log":
        return "gorouter_access", None
    if job in _CC_JOBS and name.startswith(job) and name.endswith(".log"):
        return "cloud_controller", None
    if (job == "nginx_cc" and name == "nginx.access.log") or (job in _CC_JOBS and name == "nginx-access.log"):
        return "cc_nginx_access", None
    if job == "uaa" and name in ("uaa.log", "uaa_events.log"):
        return "uaa", MultilineConfig(start=UAA_MULTILINE_START)
    if job == "bosh-dns" and name.startswith("bosh_dns"):
        return "bosh_dns", None
    if job in _LAGER_JOBS and name.endswith(".stdout.log"):
        return "lager", None
    return "auto", None
