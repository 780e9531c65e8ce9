"""The index template against the real Elasticsearch node: idempotent install, field types per format."""

from __future__ import annotations

import orjson
import pytest
from elasticsearch import Elasticsearch

from agent import analysis, template
from agent.formats import FORMATS
from agent.formats._common import DATA_DEPTH_LIMIT
from tests.unit import test_formats as samples

# (format, real sample line) for every format that yields fields.
SAMPLES = [
    ("gorouter_access", samples.GOROUTER_2021),
    ("gorouter_access", samples.GOROUTER_2019),
    ("cc_nginx_access", samples.CC_NGINX),
    ("cloud_controller", samples.CC_2016),
    ("cloud_controller", samples.CC_2020),
    ("lager", samples.REP_EPOCH),
    ("lager", samples.REP_ERROR),
    ("uaa", samples.UAA_AUDIT),
    ("bosh_dns", samples.BOSH_DNS),
    ("rfc3339", b"2026-11-27T23:59:00.123Z ERROR boom"),
    ("raw", b"garbage"),
]


@pytest.fixture
def cleanup(es: Elasticsearch, index_name: str):
    yield
    # A data stream cannot be deleted on the minimal node (no data-streams REST module), and its template
    # and write index stay with it (400): the node is thrown away at the end of the session anyway.
    es.options(ignore_status=(400, 404)).indices.delete(index=f"{index_name}*", expand_wildcards="all")
    es.options(ignore_status=(400, 404)).indices.delete_index_template(name=template.template_name(index_name))


def document(fmt: str, line: bytes, offset: int) -> bytes:
    """A document as the pipeline builds it: constant head, the format's members, per-file tail."""
    ts, members = FORMATS[fmt](line)
    read_time = "2026-11-28T00:00:00.000Z"
    return (
        b'{"@timestamp":' + orjson.dumps(ts or read_time) + b',"event.created":"' + read_time.encode() + b'"'
        b',"message":' + orjson.dumps(line.decode("utf-8", "replace")) + b',"log.offset":%d' % offset
        + members
        + b',"log.file.path":"/var/vcap/sys/log/x/x.log","bosh.job":"x","bosh.deployment":"cf",'
        b'"bosh.instance.index":"0","host.ip":"10.0.1.11","log.flags":["multiline"]}'
    )


def emitted_fields() -> set[str]:
    names: set[str] = set()
    for fmt, line in SAMPLES:
        _, members = FORMATS[fmt](line)
        names |= set(orjson.loads(b'{"a":0' + members + b"}")) - {"a"}
    return names


def test_every_field_a_format_emits_is_mapped():
    assert emitted_fields() - set(template.FIELDS) == set()
    # And the samples do exercise fields of every kind, so the check above is not vacuous.
    assert {"cf.lager.data", "http.response.status_code", "dns.question.name", "process.pid"} <= emitted_fields()


def test_install_is_idempotent_and_versioned(es, index_name, cleanup):
    first = template.install(es, "index", index_name)
    assert first.startswith(f"installed v{template.VERSION}"), first
    again = template.install(es, "index", index_name)
    assert again.startswith(f"up to date (v{template.VERSION})"), again
    got = es.indices.get_index_template(name=template.template_name(index_name))["index_templates"][0]
    assert got["index_template"]["index_patterns"] == [f"{index_name}*"]
    assert got["index_template"]["_meta"] == {"managed_by": "log-shipper", "version": template.VERSION,
                                              "search": analysis.detect(es)[0].name}
    assert got["index_template"]["priority"] == template.PRIORITY


def test_install_upgrades_older_and_leaves_newer_alone(es, index_name, cleanup):
    name = template.template_name(index_name)
    old = template.template_body(f"{index_name}*", False)
    old["_meta"]["version"] = old["version"] = 0
    es.indices.put_index_template(name=name, body=old)
    assert template.install(es, "index", index_name).startswith(f"installed v{template.VERSION} (was v0)")

    newer = template.template_body(f"{index_name}*", False)
    newer["_meta"]["version"] = newer["version"] = template.VERSION + 5
    es.indices.put_index_template(name=name, body=newer)
    assert template.install(es, "index", index_name).startswith(f"up to date (v{template.VERSION + 5})")
    got = es.indices.get_index_template(name=name)["index_templates"][0]["index_template"]
    assert got["_meta"]["version"] == template.VERSION + 5


def test_lifecycle_note_matches_the_cluster(es, index_name, cleanup):
    result = template.install(es, "data_stream", index_name)
    got = es.indices.get_index_template(name=template.template_name(index_name))["index_templates"][0]
    if template.ilm_available(es):
        assert f"ILM policy {template.template_name(index_name)}" in result
        assert got["index_template"]["template"]["settings"]["index"]["lifecycle"]["name"]
    else:
        # The minimal test distribution has no ILM: a clear note, and data stream lifecycle instead.
        assert "no ILM on this cluster: data stream lifecycle keeps 30d" in result
        assert got["index_template"]["template"]["lifecycle"]["data_retention"] == "30d"


def _bulk(es: Elasticsearch, target: str, docs: list[bytes]) -> dict:
    body = b"".join(b'{"create":{}}\n' + d + b"\n" for d in docs)
    return es.bulk(index=target, body=body, refresh=True).body


def _leaf_types(mapping: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for name, spec in mapping.get("properties", {}).items():
        full = f"{prefix}{name}"
        if "type" in spec:
            out[full] = spec["type"]
        out.update(_leaf_types(spec, full + "."))
    return out


@pytest.mark.parametrize("kind", ["index", "data_stream"])
def test_documents_of_every_format_index_with_the_template_types(es, index_name, cleanup, kind):
    template.install(es, kind, index_name)
    result = _bulk(es, index_name, [document(fmt, line, i) for i, (fmt, line) in enumerate(SAMPLES)])
    assert not result["errors"], [i for i in result["items"] if i["create"].get("error")]
    backing = {i["create"]["_index"] for i in result["items"]}
    assert len(backing) == 1
    if kind == "data_stream":
        assert backing.pop().startswith(f".ds-{index_name}-")

    mapping = es.indices.get_mapping(index=index_name).body
    (only,) = mapping.values()
    types = _leaf_types(only["mappings"])
    for field in emitted_fields() | {"@timestamp", "event.created", "message", "log.offset", "log.file.path", "log.flags", "bosh.job", "host.ip"}:
        assert types.get(field) == template.FIELDS[field]["type"], field
    assert only["mappings"]["dynamic"] == "false"

    # The types do their job: numeric range, flattened key lookup, keyword term on a normalised level.
    def count(query: dict) -> int:
        return es.count(index=index_name, query=query)["count"]

    assert count({"range": {"http.response.status_code": {"gte": 200, "lt": 300}}}) == 3
    assert count({"term": {"cf.lager.data.container-state": "reserved"}}) == 1
    assert count({"term": {"log.level": "error"}}) == 2
    assert count({"range": {"event.duration": {"gt": 80_000_000}}}) == 1
    assert count({"range": {"@timestamp": {"gte": "2026-11-27T23:59:00.123Z", "lte": "2026-11-27T23:59:00.123Z"}}}) == 1


def test_deepest_data_the_agent_keeps_is_accepted(es, index_name, cleanup):
    template.install(es, "index", index_name)
    inner = b"1"
    for _ in range(DATA_DEPTH_LIMIT - 1):
        inner = b'{"a":' + inner + b"}"
    line = b'{"timestamp":"1700000000.5","log_level":1,"data":{"a":' + inner + b"}}"
    _, members = FORMATS["lager"](line)
    assert b"cf.lager.data" in members
    assert not _bulk(es, index_name, [document("lager", line, 0)])["errors"]


def test_install_adds_fields_to_an_index_that_existed_before(es, index_name, cleanup):
    es.index(index=index_name, document={"early": "x"}, refresh=True)
    result = template.install(es, "index", index_name)
    assert f"existing {index_name} mapping updated" in result
    types = _leaf_types(es.indices.get_mapping(index=index_name)[index_name]["mappings"])
    assert types["http.response.status_code"] == "integer" and types["cf.lager.data"] == "flattened"


def test_install_reports_an_existing_index_it_cannot_fix(es, index_name, cleanup):
    # Written before any template: dynamic mapping made bosh.job text, which cannot become keyword.
    es.index(index=index_name, document={"bosh.job": "early"}, refresh=True)
    result = template.install(es, "index", index_name)
    assert result.startswith(f"installed v{template.VERSION}")
    assert "mapper [bosh.job] cannot be changed from type [text] to [keyword]" in result


def test_an_index_made_before_v2_gains_word_search_for_documents_indexed_after(es, index_name, cleanup):
    # What the v1 template made: message as standard-analysed text, no default fields.
    es.indices.create(index=index_name, mappings={"dynamic": False, "properties": {"message": {"type": "text", "norms": False}}})
    es.index(index=index_name, document={"message": "java.lang.NullPointerException: before"}, refresh=True)
    result = template.install(es, "index", index_name)
    assert f"existing {index_name} mapping updated (search analysis core)" in result
    es.index(index=index_name, document={"message": "java.lang.NullPointerException: after"}, refresh=True)
    hits = es.search(index=index_name, query={"multi_match": {"query": "NullPointerException", "lenient": True}})["hits"]["hits"]
    assert [h["_source"]["message"] for h in hits] == ["java.lang.NullPointerException: after"]
    assert es.count(index=index_name, query={"query_string": {"query": "java.lang.NullPointerException"}})["count"] == 2
    default = es.indices.get_settings(index=index_name)[index_name]["settings"]["index"]["query"]["default_field"]
    assert default == analysis.CORE.default_fields(template.TEXT_FIELDS, template.KEYWORD_FIELDS)
