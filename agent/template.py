"""The index template (and lifecycle) that gives log documents explicit, stable field types.

Installed by `log-shipper setup` and at agent start: idempotent and versioned. The template carries
VERSION in its `version` and `_meta`; `install` writes only when what the cluster has is missing or older,
so many agents starting at once do not fight, and a newer agent's template is never downgraded.

Everything here works on the minimal Elasticsearch distribution (server + x-pack-core): `flattened`,
data stream lifecycle and composable templates are core; ILM is used only when the cluster has it, and
the text analysis that finds words inside identifiers is picked by what the cluster has (agent/analysis.py).
"""

from __future__ import annotations

from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError

from agent import analysis
from agent.analysis import Variant
from agent.formats._common import DATA_DEPTH_LIMIT

# 2: words inside identifiers are searchable (issue 16).
VERSION = 2
MANAGED_BY = "log-shipper"
# Above the stack's built-in `logs-*-*` template (priority 100), which would otherwise claim logs-bosh-*.
PRIORITY = 200
DEFAULT_RETENTION = "30d"


def _kw(ignore_above: int = 1024) -> dict:
    # A keyword longer than Lucene's 32766-byte term limit would make Elasticsearch refuse the whole
    # document; ignore_above keeps the document and only skips indexing that one value.
    return {"type": "keyword", "ignore_above": ignore_above}


_DATE = {"type": "date"}
_LONG = {"type": "long"}
_INT = {"type": "integer"}
# Log text; its analysis (analyzers, sub-fields) comes from the cluster's variant, see properties().
_TEXT = {"type": "text"}
# Component `data` objects: any keys, all values as keywords, one mapping entry however many keys appear.
_DATA = {"type": "flattened", "depth_limit": DATA_DEPTH_LIMIT, "ignore_above": 1024}

# Every field the agent writes, by dotted name. The mapping is `dynamic: false`, so a field missing
# here is kept in _source but not searchable: tests check every format's output against this list.
FIELDS: dict[str, dict] = {
    "@timestamp": _DATE,
    "event.created": _DATE,
    "event.duration": _LONG,
    "event.action": _kw(),
    "message": _TEXT,
    "tags": _kw(),
    "error.message": _TEXT,
    "log.offset": _LONG,
    "log.file.path": _kw(),
    "log.flags": _kw(),
    "log.level": _kw(),
    "log.logger": _kw(),
    "log.origin.file.name": _kw(),
    "log.origin.file.line": _INT,
    "log.origin.function": _kw(),
    "host.name": _kw(),
    "host.hostname": _kw(),
    # An empty or odd address from config must not cost the document.
    "host.ip": {"type": "ip", "ignore_malformed": True},
    "agent.name": _kw(),
    "agent.type": _kw(),
    "agent.version": _kw(),
    "agent.id": _kw(),
    "bosh.director": _kw(),
    "bosh.environment": _kw(),
    "bosh.deployment": _kw(),
    "bosh.instance.group": _kw(),
    "bosh.instance.index": _kw(),
    "bosh.instance.id": _kw(),
    "bosh.instance.az": _kw(),
    "bosh.job": _kw(),
    "process.pid": _LONG,
    "process.thread.id": _LONG,
    "process.thread.name": _kw(),
    "http.version": _kw(),
    "http.request.method": _kw(),
    "http.request.id": _kw(),
    "http.request.referrer": _kw(2048),
    "http.request.body.bytes": _LONG,
    "http.response.status_code": _INT,
    "http.response.body.bytes": _LONG,
    "http.response.bytes": _LONG,
    "url.original": _kw(8191),
    "url.domain": _kw(),
    "url.scheme": _kw(),
    "user_agent.original": _kw(),
    "source.address": _kw(),
    "destination.address": _kw(),
    "trace.id": _kw(),
    "span.id": _kw(),
    "dns.question.name": _kw(),
    "dns.question.type": _kw(),
    "dns.response_code": _kw(),
    "cf.app.id": _kw(),
    "cf.app.instance_index": _kw(),
    "cf.app.instance_id": _kw(),
    "cf.lager.data": _DATA,
    "cf.cloud_controller.data": _DATA,
    "cf.cloud_controller.message": _TEXT,
    "cf.gorouter_access.x_forwarded_for": _kw(),
    "cf.gorouter_access.gorouter_time_ns": _LONG,
    "cf.gorouter_access.route_service_url": _kw(2048),
    "cf.gorouter_access.router_error": _kw(),
    "cf.cc_nginx_access.x_forwarded_for": _kw(),
    "cf.bosh_dns.handler": _kw(),
    "cf.bosh_dns.recursor": _kw(),
}


TEXT_FIELDS = [name for name, spec in FIELDS.items() if spec["type"] == "text"]
KEYWORD_FIELDS = [name for name, spec in FIELDS.items() if spec["type"] == "keyword"]


def properties(variant: Variant) -> dict:
    """FIELDS as nested `properties`, the shape Elasticsearch returns and expects."""
    root: dict = {}
    for dotted, spec in FIELDS.items():
        *parents, leaf = dotted.split(".")
        node = root
        for p in parents:
            node = node.setdefault(p, {"properties": {}})["properties"]
        node[leaf] = dict(variant.text) if spec is _TEXT else dict(spec)
    return root


def search_settings(variant: Variant) -> dict:
    """What free text without a field (Kibana's default) searches: never numbers or dates, which a
    non-lenient query_string would refuse to parse a word for."""
    return {"index.query.default_field": variant.default_fields(TEXT_FIELDS, KEYWORD_FIELDS)}


def template_name(target_name: str) -> str:
    return f"{MANAGED_BY}-{target_name}"


def template_body(
    pattern: str,
    data_stream: bool,
    *,
    variant: Variant = analysis.CORE,
    ilm_policy: str | None = None,
    retention: str = DEFAULT_RETENTION,
) -> dict:
    settings: dict[str, Any] = {
        # Logs compress well and are read rarely: disk matters more than the CPU to decompress.
        "index.codec": "best_compression",
        "index.number_of_shards": 1,
        **search_settings(variant),
    }
    if variant.settings:
        settings["analysis"] = variant.settings
    template: dict[str, Any] = {
        "settings": settings,
        "mappings": {"dynamic": False, "date_detection": False, "properties": properties(variant)},
    }
    if ilm_policy:
        settings["index.lifecycle.name"] = ilm_policy
    elif data_stream:
        template["lifecycle"] = {"data_retention": retention}
    body: dict[str, Any] = {
        "index_patterns": [pattern],
        "priority": PRIORITY,
        "version": VERSION,
        "_meta": {"managed_by": MANAGED_BY, "version": VERSION, "search": variant.name},
        "template": template,
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def ilm_policy_body(retention: str = DEFAULT_RETENTION) -> dict:
    return {
        "_meta": {"managed_by": MANAGED_BY, "version": VERSION},
        "phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}},
            "delete": {"min_age": retention, "actions": {"delete": {}}},
        },
    }


def ilm_available(es: Elasticsearch) -> bool:
    """False on clusters without the ILM module: the minimal distribution answers 405 on GET /_ilm/status."""
    try:
        es.ilm.get_status()
    except ApiError as e:
        if e.status_code in (400, 404, 405, 410, 501):
            return False
        raise
    return True


def install(es: Elasticsearch, target_kind: str, target_name: str, *, retention: str = DEFAULT_RETENTION) -> str:
    """Install or upgrade the template (and ILM policy) for the target; says what it did, one line."""
    data_stream = target_kind == "data_stream"
    name = template_name(target_name)
    # A data stream is one name; a plain index may be rolled or dated by the operator (name-000001, ...).
    pattern = target_name if data_stream else f"{target_name}*"
    notes: list[str] = []

    policy = None
    if not ilm_available(es):
        notes.append("no ILM on this cluster: " + (f"data stream lifecycle keeps {retention}" if data_stream else "retention is up to the operator"))
    elif data_stream:
        policy = name
        notes.append(_install_policy(es, policy, retention))
    else:
        # ILM on a plain index without a rollover alias could only delete the whole index at once.
        notes.append("ILM present but target is a plain index: no policy attached; use a data stream for retention")

    variant, why = analysis.detect(es)
    current, installed_search = _installed(es, name)
    if current is not None and (current > VERSION or (current == VERSION and installed_search == variant.name)):
        status = f"up to date (v{current})"
        notes.append(f"search analysis {installed_search or 'unknown'}")
    else:
        body = template_body(pattern, data_stream, variant=variant, ilm_policy=policy, retention=retention)
        es.indices.put_index_template(name=name, body=body)
        was = f" (was v{current}" + (f", search {installed_search}" if current == VERSION else "") + ")"
        status = f"installed v{VERSION}" + (was if current is not None else "")
        notes.append(f"search analysis {variant.name} ({why}): {variant.description}")
        notes.append(_update_existing(es, target_name))
    return "; ".join([status, *(n for n in notes if n)])


def installed_version(es: Elasticsearch, name: str) -> int | None:
    return _installed(es, name)[0]


def _installed(es: Elasticsearch, name: str) -> tuple[int | None, str | None]:
    """The installed template's version and search variant (None, None when there is none)."""
    try:
        found = es.indices.get_index_template(name=name)
    except NotFoundError:
        return None, None
    for t in found.get("index_templates", []):
        meta = t["index_template"].get("_meta") or {}
        v = meta.get("version", t["index_template"].get("version"))
        return (int(v) if isinstance(v, int) else 0), meta.get("search")
    return None, None


def _install_policy(es: Elasticsearch, name: str, retention: str) -> str:
    try:
        current = es.ilm.get_lifecycle(name=name)[name]["policy"].get("_meta", {}).get("version", 0)
    except NotFoundError:
        current = None
    if current is not None and current >= VERSION:
        return f"ILM policy {name} up to date"
    es.ilm.put_lifecycle(name=name, policy=ilm_policy_body(retention))
    return f"ILM policy {name} installed"


def _update_existing(es: Elasticsearch, target_name: str) -> str:
    """A template applies to new indices only; add the new fields to a target that already exists.

    Analyzers cannot be added to an open index, so an index made without the identifiers analyzers
    gets the core variant's `words` sub-fields, which need only built-in analyzers."""
    if not es.indices.exists(index=target_name):
        return ""
    indices = es.indices.get_settings(index=target_name).body.values()  # a data stream: its backing indices
    has_ours = all(analysis.TEXT_ANALYZER in _analyzers(i) for i in indices)
    variant = analysis.IDENTIFIERS if has_ours else analysis.CORE
    try:
        es.indices.put_mapping(index=target_name, dynamic=False, properties=properties(variant))
        es.indices.put_settings(index=target_name, settings=search_settings(variant))
    except ApiError as e:
        # E.g. a field mapped dynamically before the template existed, with another type.
        reason = e.body.get("error", {}).get("reason") if isinstance(e.body, dict) else None
        return f"existing {target_name} keeps its old mapping ({reason or e.message}); the template applies to its next index"
    return f"existing {target_name} mapping updated (search analysis {variant.name})"


def _analyzers(index_settings: dict) -> dict:
    return index_settings.get("settings", {}).get("index", {}).get("analysis", {}).get("analyzer", {})


def create_indices(es: Elasticsearch, names: list[str]) -> list[str]:
    """Create plain indices that do not exist yet, with the templates in place: the agent's key
    may only create documents (create_doc), not indices. Says what it created."""
    made = []
    for name in names:
        if not es.indices.exists(index=name):
            es.indices.create(index=name)
            made.append(name)
    return made
