"""Which text analysis the template gets, and what each variant's template says (issue 16).

The cluster is a stand-in here (one module's logic: the choice); the variants' behaviour in a real
node is tests/integration/test_search.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, NotFoundError

from agent import analysis, template


def api_error(status: int, cls=ApiError) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "127.0.0.1", 9200))
    return cls(f"status {status}", meta, {"error": {"reason": f"status {status}"}})


ANALYSIS_COMMON_TOKENS = {"tokens": [{"token": t} for t in ("at", "java.lang.nullpointerexception", "java", "lang",
                                                            "nullpointerexception")]}


@dataclass
class Indices:
    analyze_answer: object
    installed: dict | None = None
    put: list = field(default_factory=list)
    analyzed: list = field(default_factory=list)

    def analyze(self, **kw):
        self.analyzed.append(kw)
        if isinstance(self.analyze_answer, Exception):
            raise self.analyze_answer
        return self.analyze_answer

    def get_index_template(self, name):
        if self.installed is None:
            raise api_error(404, NotFoundError)
        return {"index_templates": [{"name": name, "index_template": self.installed}]}

    def put_index_template(self, name, body):
        self.put.append(body)
        self.installed = body

    def exists(self, index):
        return False


class Ilm:
    def get_status(self):
        raise api_error(405)


@dataclass
class Cluster:
    indices: Indices
    ilm: Ilm = field(default_factory=Ilm)


def cluster(analyze_answer, installed=None) -> Cluster:
    return Cluster(Indices(analyze_answer, installed))


def test_analysis_common_present_gives_identifiers():
    es = cluster(ANALYSIS_COMMON_TOKENS)
    assert analysis.detect(es) == (analysis.IDENTIFIERS, "analysis-common present")
    (asked,) = es.indices.analyzed
    # The check runs the very chain the template would use, not a module name.
    assert asked["tokenizer"]["type"] == "pattern"
    assert [f if isinstance(f, str) else f["type"] for f in asked["filter"]] == ["lowercase", "truncate", "pattern_capture", "unique"]


@pytest.mark.parametrize("answer, reason", [
    (api_error(400), "no analysis-common on this cluster"),
    (api_error(403), "cannot check the cluster's analyzers (403 on _analyze)"),
    ({"tokens": [{"token": "at"}, {"token": "java.lang.nullpointerexception"}]}, "analysis-common answered unexpected tokens"),
])
def test_anything_less_gives_core(answer, reason):
    variant, why = analysis.detect(cluster(answer))
    assert variant is analysis.CORE
    assert why.startswith(reason)


def test_other_errors_are_not_taken_for_a_missing_module():
    with pytest.raises(ApiError):
        analysis.detect(cluster(api_error(503)))


def test_install_says_which_variant_the_cluster_got():
    es = cluster(api_error(400))
    said = template.install(es, "index", "logs-bosh-default")
    assert said.startswith(f"installed v{template.VERSION};")
    assert "search analysis core (no analysis-common on this cluster)" in said
    assert es.indices.installed["_meta"]["search"] == "core"
    assert "analysis" not in es.indices.installed["template"]["settings"]


def test_install_upgrades_core_to_identifiers_when_the_cluster_gains_analysis_common():
    es = cluster(api_error(400))
    template.install(es, "index", "logs-bosh-default")
    assert template.install(es, "index", "logs-bosh-default").startswith(f"up to date (v{template.VERSION}); ")
    es.indices.analyze_answer = ANALYSIS_COMMON_TOKENS
    said = template.install(es, "index", "logs-bosh-default")
    assert said.startswith(f"installed v{template.VERSION} (was v{template.VERSION}, search core)")
    assert "search analysis identifiers (analysis-common present)" in said
    assert es.indices.installed["_meta"]["search"] == "identifiers"
    assert len(es.indices.put) == 2
    # And back: a cluster that lost the module must not keep a template whose analyzers it cannot build.
    es.indices.analyze_answer = api_error(400)
    back = template.install(es, "index", "logs-bosh-default")
    assert back.startswith(f"installed v{template.VERSION} (was v{template.VERSION}, search identifiers)")
    assert es.indices.installed["_meta"]["search"] == "core"


def test_a_newer_template_is_left_alone_whatever_the_variant():
    newer = template.template_body("logs-bosh-default*", False)
    newer["_meta"]["version"] = template.VERSION + 1
    es = cluster(ANALYSIS_COMMON_TOKENS, installed=newer)
    assert template.install(es, "index", "logs-bosh-default").startswith(f"up to date (v{template.VERSION + 1})")
    assert es.indices.put == []


def _mapping(variant, dotted: str) -> dict:
    node = {"properties": template.properties(variant)}
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def test_identifiers_template_analyses_every_text_field_with_its_analyzers():
    body = template.template_body("x*", False, variant=analysis.IDENTIFIERS)
    settings = body["template"]["settings"]
    assert set(settings["analysis"]["analyzer"]) == {analysis.TEXT_ANALYZER, analysis.SEARCH_ANALYZER}
    assert template.TEXT_FIELDS == ["message", "error.message", "cf.cloud_controller.message"]
    for f in template.TEXT_FIELDS:
        m = _mapping(analysis.IDENTIFIERS, f)
        assert (m["analyzer"], m["search_analyzer"]) == (analysis.TEXT_ANALYZER, analysis.SEARCH_ANALYZER)
        assert "fields" not in m
    default = settings["index.query.default_field"]
    assert default[:3] == template.TEXT_FIELDS and "bosh.job" in default and "http.request.id" in default


def test_core_template_adds_words_subfields_and_searches_them_by_default():
    body = template.template_body("x*", False, variant=analysis.CORE)
    settings = body["template"]["settings"]
    assert "analysis" not in settings
    for f in template.TEXT_FIELDS:
        words = _mapping(analysis.CORE, f)["fields"]["words"]
        assert (words["analyzer"], words["search_analyzer"]) == ("simple", "standard")
    default = settings["index.query.default_field"]
    assert {"message", "message.words", "error.message.words", "cf.cloud_controller.message.words"} <= set(default)
    # Only text and keyword fields: a word against a number field would fail a non-lenient query_string.
    types = {template.FIELDS[f]["type"] for f in default if f in template.FIELDS}
    assert types == {"text", "keyword"}
