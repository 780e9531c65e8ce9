"""The fleet view: each agent's status in Elasticsearch, and the table of every agent's latest.

Every `fleet.interval_s` an agent writes one small document about itself into the status index:
its BOSH identity, health and reasons, and per job what `log-shipper offsets` shows (lag, oldest
unshipped byte, bytes lost) plus what it shipped in the interval. `log-shipper fleet` reads the
latest document of every agent from any machine with access to the cluster and ranks them worst
first: an agent whose status stopped coming is silent, whatever it said last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from elasticsearch import Elasticsearch

from agent.offsets import FileOffset

# Worst first: the order of the `fleet` table and of an agent's own state.
STATES = ("silent", "lost", "behind", "refused", "healthy")
SILENT_AFTER_INTERVALS = 3
TEMPLATE_VERSION = 1

_KW = {"type": "keyword", "ignore_above": 1024}
_LONG = {"type": "long"}
_FLOAT = {"type": "float"}
_DATE = {"type": "date"}

MAPPING = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "agent": {"properties": {"id": _KW, "version": _KW}},
        "host": {"properties": {"name": _KW}},
        "bosh": {"properties": {
            "director": _KW, "deployment": _KW, "job": _KW,
            "instance": {"properties": {"group": _KW, "index": _LONG, "id": _KW, "az": _KW}},
        }},
        "status": {"properties": {
            "state": _KW, "reasons": {"type": "text", "norms": False}, "interval_s": _FLOAT,
            "lag_bytes": _LONG, "oldest_unshipped_age_s": _FLOAT, "lost_bytes": _LONG,
            "lost_recent_bytes": _LONG, "lost_at": _DATE, "refused": {"type": "boolean"},
            "dead_letters": _LONG, "shipped_bytes": _LONG, "shipped_lines": _LONG, "files": _LONG,
            # Per job: nested, so one job's figures are never summed with another's.
            "jobs": {"type": "nested", "properties": {
                "name": _KW, "lag_bytes": _LONG, "oldest_unshipped_age_s": _FLOAT, "lost_bytes": _LONG,
                "lost_at": _DATE, "shipped_bytes": _LONG, "shipped_lines": _LONG, "files": _LONG,
            }},
        }},
    },
}


def template_body(index: str) -> dict:
    # Above the log template (200): a target such as logs-bosh matches logs-bosh-agents too.
    return {"index_patterns": [f"{index}*"], "priority": 250, "version": TEMPLATE_VERSION,
            "_meta": {"managed_by": "log-shipper"},
            "template": {"settings": {"number_of_replicas": 0}, "mappings": MAPPING}}


def install_template(es: Elasticsearch, index: str) -> None:
    es.indices.put_index_template(name=f"log-shipper-fleet-{index}", **template_body(index))


# -- the agent's side: one status document per interval ------------------------------------

@dataclass
class Shipped:
    """Lines and file bytes acknowledged per job since the last status."""

    by_job: dict[str, list[int]] = field(default_factory=dict)

    def add(self, job: str, lines: int, nbytes: int) -> None:
        counts = self.by_job.setdefault(job, [0, 0])
        counts[0] += lines
        counts[1] += nbytes

    def take(self) -> dict[str, list[int]]:
        taken, self.by_job = self.by_job, {}
        return taken


@dataclass
class Facts:
    """What the agent knows about itself at one moment, as `offsets` and `/healthz` show it."""

    files: list[FileOffset]
    reasons: list[str]
    refused: bool
    dead_letters: int
    shipped: dict[str, list[int]]


def state_of(files: list[FileOffset], reasons: list[str], refused: bool, lost_window_s: float) -> str:
    """Lost (bytes rotated away unread recently) > behind (any lag or stuck reason) > refused > healthy."""
    if any(f.lost_bytes and f.lost_age_s is not None and f.lost_age_s <= lost_window_s for f in files):
        return "lost"
    if any(not r.startswith("Elasticsearch has refused") and "rotated away" not in r for r in reasons):
        return "behind"
    return "refused" if refused or reasons else "healthy"


def status_doc(identity: dict, facts: Facts, job_of: Callable[[str], str], interval_s: float,
               lost_window_s: float, now: float) -> dict:
    """The status document: `identity` holds agent.*, host.name and bosh.* members already."""
    jobs: dict[str, dict] = {}
    for f in facts.files:
        j = jobs.setdefault(job_of(f.path), _job_row())
        j["files"] += 1
        j["lag_bytes"] += f.lag_bytes
        j["oldest_unshipped_age_s"] = max(j["oldest_unshipped_age_s"], f.oldest_unshipped_age_s)
        j["lost_bytes"] += f.lost_bytes
        if f.lost_bytes and f.lost_age_s is not None:
            j["_lost_at"] = max(j.get("_lost_at", 0.0), now - f.lost_age_s)
    for job, (lines, nbytes) in facts.shipped.items():
        j = jobs.setdefault(job, _job_row())
        j["shipped_lines"] += lines
        j["shipped_bytes"] += nbytes
    rows = []
    for name in sorted(jobs):
        j = jobs[name]
        lost_at = j.pop("_lost_at", None)
        rows.append({"name": name, **j, **({"lost_at": _iso(lost_at)} if lost_at else {})})
    lost_times = [now - f.lost_age_s for f in facts.files if f.lost_bytes and f.lost_age_s is not None]
    status = {
        "state": state_of(facts.files, facts.reasons, facts.refused, lost_window_s),
        "reasons": facts.reasons,
        "interval_s": interval_s,
        "files": len(facts.files),
        "lag_bytes": sum(r["lag_bytes"] for r in rows),
        "oldest_unshipped_age_s": max((r["oldest_unshipped_age_s"] for r in rows), default=0.0),
        "lost_bytes": sum(r["lost_bytes"] for r in rows),
        "lost_recent_bytes": sum(f.lost_bytes for f in facts.files
                                 if f.lost_bytes and f.lost_age_s is not None and f.lost_age_s <= lost_window_s),
        "refused": facts.refused,
        "dead_letters": facts.dead_letters,
        "shipped_lines": sum(r["shipped_lines"] for r in rows),
        "shipped_bytes": sum(r["shipped_bytes"] for r in rows),
        "jobs": rows,
    }
    if lost_times:
        status["lost_at"] = _iso(max(lost_times))
    return {"@timestamp": _iso(now), **identity, "status": status}


def _job_row() -> dict:
    return {"files": 0, "lag_bytes": 0, "oldest_unshipped_age_s": 0.0, "lost_bytes": 0,
            "shipped_lines": 0, "shipped_bytes": 0}


def bulk_body(index: str, agent_id: str, doc: dict, now: float) -> bytes:
    """One `create` action: the `_id` is the agent's and the interval's, so a replay is a 409."""
    action = {"create": {"_index": index, "_id": f"{agent_id}-{int(now)}"}}
    return orjson.dumps(action) + b"\n" + orjson.dumps(doc) + b"\n"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


# -- the operator's side: `log-shipper fleet` ----------------------------------------------

@dataclass
class AgentRow:
    state: str
    deployment: str
    instance: str  # group/index
    instance_id: str
    az: str
    agent_id: str
    lag_bytes: int
    oldest_unshipped_age_s: float
    lost_bytes: int
    lost_recent_bytes: int
    last_status_age_s: float
    reason: str
    jobs: list[dict]


def latest(es: Elasticsearch, index: str, deployment: str | None = None, size: int = 10000) -> list[dict]:
    """The newest status document of every agent (field collapsing on agent.id)."""
    query = {"term": {"bosh.deployment": deployment}} if deployment else {"match_all": {}}
    resp = es.search(index=f"{index}*", query=query, collapse={"field": "agent.id"},
                     sort=[{"@timestamp": "desc"}], size=size, ignore_unavailable=True, allow_no_indices=True)
    return [h["_source"] for h in resp["hits"]["hits"]]


def rows(docs: Iterable[dict], now: float) -> list[AgentRow]:
    out = []
    for d in docs:
        st = d.get("status", {})
        age = now - _epoch(d.get("@timestamp", ""))
        silent = age > SILENT_AFTER_INTERVALS * float(st.get("interval_s") or 60.0)
        state = "silent" if silent else st.get("state", "healthy")
        inst = d.get("bosh", {}).get("instance", {})
        reasons = st.get("reasons") or []
        reason = f"no status for {age:.0f}s" if silent else (reasons[0] if reasons else "")
        out.append(AgentRow(
            state=state, deployment=d.get("bosh", {}).get("deployment", ""),
            instance=f"{inst.get('group', '')}/{inst.get('index', '')}", instance_id=inst.get("id", ""),
            az=inst.get("az", ""), agent_id=d.get("agent", {}).get("id", ""),
            lag_bytes=st.get("lag_bytes", 0), oldest_unshipped_age_s=st.get("oldest_unshipped_age_s", 0.0),
            lost_bytes=st.get("lost_bytes", 0), lost_recent_bytes=st.get("lost_recent_bytes", 0),
            last_status_age_s=round(age, 1), reason=reason, jobs=st.get("jobs", []),
        ))
    rank = {s: i for i, s in enumerate(STATES)}
    return sorted(out, key=lambda r: (rank.get(r.state, 0), -r.lost_recent_bytes, -r.oldest_unshipped_age_s,
                                      r.deployment, r.instance))


def table(agents: list[AgentRow]) -> str:
    lines = [f"{'STATE':<8} {'DEPLOYMENT':<20} {'INSTANCE':<28} {'AZ':<6} {'LAG':>12} {'OLDEST_S':>9} "
             f"{'LOST':>12} {'SEEN_S':>7}  REASON"]
    for a in agents:
        lines.append(f"{a.state:<8} {a.deployment[:20]:<20} {a.instance[:28]:<28} {a.az[:6]:<6} {a.lag_bytes:>12} "
                     f"{a.oldest_unshipped_age_s:>9.0f} {a.lost_bytes:>12} {a.last_status_age_s:>7.0f}  {a.reason[:120]}")
    return "\n".join(lines)


def _epoch(iso: str) -> float:
    import calendar

    try:
        base, frac = iso.rstrip("Z").split(".") if "." in iso else (iso.rstrip("Z"), "0")
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)
    except ValueError:
        return 0.0
