"""Which format and multiline rule a file gets: the operator's `formats` rules (first
matching glob wins), else the built-in default for its path on a Cloud Foundry VM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from agent.config import FormatRule, MultilineConfig
from agent.globs import glob_regex
from agent.pattern import linear_in_re


@dataclass(frozen=True)
class Rule:
    format: str
    multiline: MultilineConfig | None = None


class Rules:
    def __init__(self, rules: list[FormatRule]):
        self._rules = [(glob_regex(r.glob), Rule(r.format, r.multiline)) for r in rules]

    def of(self, relpath: str) -> Rule:
        """The rule for a path relative to the log root (absolute for extra paths)."""
        for regex, rule in self._rules:
            if regex.match(relpath):
                return rule
        return default_rule(relpath)


# A UAA event starts with its bracketed time; stack-trace lines do not.
UAA_MULTILINE_START = linear_in_re(r"^\[\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")

# Jobs whose *.stdout.log / *.stderr.log are lager JSON (Diego, routing, networking, CAPI Go parts).
_LAGER_JOBS = frozenset({
    "gorouter", "rep", "garden", "bbs", "auctioneer", "route_emitter", "locket", "file_server", "ssh_proxy",
    "routing-api", "tcp_router", "route_registrar", "cc_uploader", "tps", "silk-daemon", "silk-controller",
    "silk-cni", "vxlan-policy-agent", "policy-server", "policy-server-internal", "netmon", "service-discovery-controller",
    "bosh-dns-adapter", "cfdot", "nats", "loggr-udp-forwarder",
})  # fmt: skip
_CC_JOBS = frozenset({"cloud_controller_ng", "cloud_controller_worker", "cloud_controller_clock", "cc_deployment_updater"})


def default_rule(relpath: str) -> Rule:
    """Built-in (format, multiline) for a path relative to the log root, e.g. 'gorouter/access.log'."""
    parts = PurePosixPath(relpath.lstrip("/")).parts
    if parts and parts[0] == ".":
        parts = parts[1:]
    if not parts:
        return Rule("auto")
    job, name = parts[0], parts[-1]
    if job == "gorouter" and name == "access.log":
        return Rule("gorouter_access")
    if job in _CC_JOBS and name.startswith(job) and name.endswith(".log"):
        return Rule("cloud_controller")
    if (job == "nginx_cc" and name == "nginx.access.log") or (job in _CC_JOBS and name == "nginx-access.log"):
        return Rule("cc_nginx_access")
    if job == "uaa" and name in ("uaa.log", "uaa_events.log"):
        return Rule("uaa", MultilineConfig(start=UAA_MULTILINE_START))
    if job == "bosh-dns" and name.startswith("bosh_dns"):
        return Rule("bosh_dns")
    if job in _LAGER_JOBS and name.endswith(".stdout.log"):
        return Rule("lager")
    return Rule("auto")
