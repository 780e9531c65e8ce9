"""Issues 8 and 16: after an incident, each operator question is one query with exact answers, and the
words operators remember (an exception, a class, an error code, a guid) find their events."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from agent import analysis, template
from tests.support.agentproc import AgentProcess, all_messages, count, wait_caught_up, write_config

IDS = {0: "11111111-0000-4000-8000-000000000000", 1: "22222222-0000-4000-8000-000000000001"}


def gorouter(ts: str, status: int, rid: str) -> str:
    return (f'shop.apps.example.com - [{ts}] "GET /cart HTTP/1.1" {status} 0 62 "-" "curl/7.54.0" '
            f'"35.191.2.80:51628" "10.0.1.11:61002" x_forwarded_for:"142.105.202.35" x_forwarded_proto:"http" '
            f'vcap_request_id:"{rid}" response_time:0.011962 gorouter_time:0.000467 '
            f'app_id:"cabd9e08-384e-4689-b868-1ba3d5d838bf" app_index:"0" x_cf_routererror:"-"\n')


def cc_nginx(agent: str, n: int) -> str:
    return (f'api.sys.example.com - [27/Nov/2026:23:59:{n:02d} +0000] "GET /v3/apps?per_page=5000 HTTP/1.1" 200 1532 "-" '
            f'"{agent}" 203.0.113.7, 10.0.1.11 vcap_request_id:8d8bc2a0-3a6b-4c39-6f60-{n:012d} response_time:0.084\n')


def rep(epoch: str, level: int, msg: str) -> str:
    return (f'{{"timestamp":"{epoch}","source":"rep","message":"rep.{msg}","log_level":{level},'
            f'"data":{{"container-guid":"b703676b-6c00-4414-55bc-a36a1aa487d3"}}}}\n')


UAA_TRACE = (
    "[2026-11-27T23:59:00.123456Z] uaa - 4567 [http-nio-8080-exec-1] .... ERROR --- UaaException: boom\n"
    "java.lang.NullPointerException: token was null\n"
    + "".join(f"\tat org.cloudfoundry.identity.uaa.Frame{i}.call(Frame{i}.java:{i})\n" for i in range(40))
)
UAA_NEXT = "[2026-11-27T23:59:01.000000Z] uaa - 4567 [http-nio-8080-exec-2] ....  INFO --- Audit: TokenIssuedEvent ('x')\n"


def _ship(es_url: str, root: Path, tmp: Path, index: str, instance: int, group: str = "router") -> None:
    state = tmp / f"state-{group}-{instance}"
    cfg = write_config(tmp / f"c-{group}-{instance}.json", es_url, root, state, index,
                       bosh={"instance_group": group, "index": instance, "id": IDS[instance]})
    agent = AgentProcess(cfg, tmp / f"agent{instance}.log").start()
    try:
        wait_caught_up(state, [p for p in root.rglob("*.log")])
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def shipped(es_node, es, tmp_path_factory):
    """Two router instances' and one api instance's logs, shipped by the real agent."""
    index = f"logs-search-{uuid.uuid4().hex[:10]}"  # unique across the workers sharing the node
    tmp = tmp_path_factory.mktemp("search")
    for instance in (0, 1):
        root = tmp / f"root{instance}"
        (root / "gorouter").mkdir(parents=True)
        (root / "rep").mkdir()
        (root / "uaa").mkdir()
        (root / "cloud_controller_ng").mkdir()
        lines = []
        # instance 0: 502 x3 at 10:00, 500 x1 at 10:01; instance 1: 503 x2 at 10:00; plus 200s.
        bad = {0: [("10:00:05", 502)] * 3 + [("10:01:30", 500)], 1: [("10:00:40", 503)] * 2}[instance]
        for k, (t, status) in enumerate(bad + [("10:00:10", 200)] * 5):
            lines.append(gorouter(f"2026-11-27T{t}.355501523Z", status, f"rid-{instance}-{k}"))
        (root / "gorouter" / "access.log").write_text("".join(lines))
        # rep errors at 10:00:00 + 0s, 100s, 290s, 310s (outside a 5-minute window from 10:00), and an info.
        base = 1795773600  # 2026-11-27T10:00:00Z
        (root / "rep" / "rep.stdout.log").write_text("".join(
            [rep(f"{base + s}.100530624", 2, f"failed-{s}") for s in (0, 100, 290, 310)] + [rep(f"{base + 5}.5", 1, "ok")]))
        if instance == 0:
            (root / "uaa" / "uaa.log").write_text(UAA_TRACE + UAA_NEXT)
            agents = ["cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)"] * 5 + ["HashiCorp Terraform/1.6"] * 3 + ["curl/8.0"]
            (root / "cloud_controller_ng" / "nginx-access.log").write_text("".join(cc_nginx(a, n) for n, a in enumerate(agents)))
        _ship(es_node.url, root, tmp, index, instance)
    es.indices.refresh(index=index)
    return index


def test_uaa_stack_trace_is_one_event(es, shipped):
    hits = es.search(index=shipped, query={"match_phrase": {"message": "token was null"}})["hits"]["hits"]
    assert len(hits) == 1
    doc = hits[0]["_source"]
    assert doc["message"] == UAA_TRACE.rstrip("\n")
    assert "multiline" in doc["log.flags"]
    assert doc["log.level"] == "error"
    assert doc["@timestamp"] == "2026-11-27T23:59:00.123Z"
    assert count(es, shipped, {"term": {"bosh.job": "uaa"}}) == 2


def test_error_lines_of_one_job_on_one_instance_in_five_minutes(es, shipped):
    q = {"bool": {"filter": [
        {"term": {"bosh.job": "rep"}}, {"term": {"bosh.instance.id": IDS[1]}}, {"term": {"log.level": "error"}},
        {"range": {"@timestamp": {"gte": "2026-11-27T10:00:00Z", "lt": "2026-11-27T10:05:00Z"}}}]}}
    hits = es.search(index=shipped, query=q, sort=[{"@timestamp": "asc"}])["hits"]["hits"]
    assert [h["_source"]["@timestamp"] for h in hits] == [
        "2026-11-27T10:00:00.100Z", "2026-11-27T10:01:40.100Z", "2026-11-27T10:04:50.100Z"]


def test_gorouter_5xx_per_instance_per_minute(es, shipped):
    res = es.search(index=shipped, size=0, query={"bool": {"filter": [
        {"term": {"bosh.job": "gorouter"}}, {"range": {"http.response.status_code": {"gte": 500}}}]}},
        aggs={"inst": {"terms": {"field": "bosh.instance.index"}, "aggs": {
            "per_min": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1m", "min_doc_count": 1}}}}})
    got = {b["key"]: [(m["key_as_string"], m["doc_count"]) for m in b["per_min"]["buckets"]]
           for b in res["aggregations"]["inst"]["buckets"]}
    assert got == {"0": [("2026-11-27T10:00:00.000Z", 3), ("2026-11-27T10:01:00.000Z", 1)],
                   "1": [("2026-11-27T10:00:00.000Z", 2)]}


def test_cloud_controller_calls_ranked_by_user_agent(es, shipped):
    res = es.search(index=shipped, size=0, query={"term": {"bosh.job": "cloud_controller_ng"}},
                    aggs={"ua": {"terms": {"field": "user_agent.original"}}})
    ranked = [(b["key"], b["doc_count"]) for b in res["aggregations"]["ua"]["buckets"]]
    assert ranked == [("cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)", 5), ("HashiCorp Terraform/1.6", 3),
                      ("curl/8.0", 1)]


def test_timestamps_come_from_the_lines(es, shipped):
    docs = all_messages(es, shipped)
    gr = next(d for d in docs if 'vcap_request_id:"rid-0-0"' in d["message"])
    assert gr["@timestamp"] == "2026-11-27T10:00:05.355Z"
    assert gr["event.created"] != gr["@timestamp"]
    cc = next(d for d in docs if d["bosh.job"] == "cloud_controller_ng" and "6f60-000000000003" in d["message"])
    assert cc["@timestamp"] == "2026-11-27T23:59:03.000Z"
    assert cc["http.response.status_code"] == 200
    repd = next(d for d in docs if '"rep.ok"' in d["message"])
    assert repd["@timestamp"] == "2026-11-27T10:00:05.500Z" and repd["log.level"] == "info"


def _uaa_setup(tmp_path: Path, es_url: str, index: str):
    root = tmp_path / "log"
    (root / "uaa").mkdir(parents=True)
    # A long multiline timeout: only a restart or a rotation can end the event early.
    cfg = write_config(tmp_path / "c.json", es_url, root, tmp_path / "state", index,
                       formats=[{"glob": "uaa/*.log", "format": "uaa",
                                 "multiline": {"start": r"^\[\d{4}-", "timeout_s": 600.0}}])
    return root / "uaa" / "uaa.log", cfg


def test_multiline_event_cut_by_a_restart_is_shipped_whole_once(es, es_node, index_name, tmp_path):
    f, cfg = _uaa_setup(tmp_path, es_node.url, index_name)
    head = UAA_TRACE[: UAA_TRACE.index("Frame5.")]
    head = head[: head.rindex("\n") + 1]
    rest = UAA_TRACE[len(head):]
    f.write_text(UAA_NEXT + head)
    agent = AgentProcess(cfg, tmp_path / "a.log").start()
    deadline = time.monotonic() + 30
    while count(es, index_name) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent.stop() == 0  # the open event is cut here
    with open(f, "a") as fh:
        fh.write(rest + UAA_NEXT)
    agent = AgentProcess(cfg, tmp_path / "a.log").start()
    deadline = time.monotonic() + 30
    while count(es, index_name) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    agent.stop()
    msgs = [d["message"] for d in all_messages(es, index_name)]
    assert msgs.count(UAA_TRACE.rstrip("\n")) == 1
    assert sum("token was null" in m for m in msgs) == 1


def test_multiline_event_cut_by_a_rotation_is_shipped_whole_once(es, es_node, index_name, tmp_path):
    f, cfg = _uaa_setup(tmp_path, es_node.url, index_name)
    f.write_text(UAA_NEXT + UAA_TRACE)
    agent = AgentProcess(cfg, tmp_path / "a.log").start()
    deadline = time.monotonic() + 30
    while count(es, index_name) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.copyfile(f, f.with_name("uaa.log.1"))  # copytruncate
    with open(f, "r+") as fh:
        fh.truncate(0)
    time.sleep(0.5)
    with open(f, "a") as fh:
        fh.write(UAA_NEXT.replace("23:59:01", "23:59:02"))
    deadline = time.monotonic() + 30
    while count(es, index_name) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    agent.stop()
    msgs = [d["message"] for d in all_messages(es, index_name)]
    assert msgs.count(UAA_TRACE.rstrip("\n")) == 1, msgs


# -- Issue 16: the words an operator remembers ------------------------------------------------------
# One incident's logs across five VMs: UAA stack traces (multiline), Cloud Controller errors with error
# codes and request guids on two API instances, their nginx access lines, gorouter access lines, and
# rep's lager JSON. Each event has a name; a search answers the set of names it finds.

REQ = "8d8bc2a0-3a6b-4c39-6f60-26d0b1b8a5e1"  # one failing service-instance request, through every tier
ROUTER_REQ = "4f0f4f5e-8b9a-4d0b-9c7a-3d2b1e0f9a8c"
CONTAINER = "b703676b-6c00-4414-55bc-a36a1aa487d3"
SERVICE = "5e8a7c1f-2b3d-4e6f-9a0b-1c2d3e4f5a6b"


def uaa(t: str, thread: str, level: str, logger: str, text: str, *trace: str) -> str:
    return f"[2026-11-27T10:02:{t}Z] uaa - 4567 [{thread}] .... {level:>5} --- {logger}: {text}" + "".join(
        f"\n{line}" for line in trace)


def cc(t: str, level: str, message: str, guid: str, lineno: int = 23) -> str:
    return orjson.dumps({
        "timestamp": f"2026-11-27T10:02:{t}Z", "message": message, "log_level": level, "source": "cc.api",
        "data": {"request_guid": guid}, "thread_id": 47073419309700, "fiber_id": 47073420476820, "process_id": 3255,
        "file": "/var/vcap/packages/cloud_controller_ng/cloud_controller_ng/middleware/request_logs.rb",
        "lineno": lineno, "method": "call"}).decode()


def broker_error(code: int, error_code: str, description: str) -> str:
    return (f'Request failed: 502: {{"description"=>"{description}", "error_code"=>"{error_code}", "code"=>{code}, '
            f'"http"=>{{"uri"=>"https://broker.sys.example.com/v2/service_instances/{SERVICE}", "method"=>"PUT", "status"=>500}}}}')


def router(t: str, host: str, request: str, status: int, rid: str, error: str = "-") -> str:
    return (f'{host} - [2026-11-27T10:02:{t}.355501523Z] "{request} HTTP/1.1" {status} 0 67 "-" "cf/8.7.10+5b7ce3c.2024-04-04 '
            f'(go1.21.5; amd64 linux)" "35.191.2.80:51628" "10.0.1.11:61002" x_forwarded_for:"142.105.202.35" '
            f'x_forwarded_proto:"https" vcap_request_id:"{rid}" response_time:0.011962 gorouter_time:0.000467 '
            f'app_id:"cabd9e08-384e-4689-b868-1ba3d5d838bf" app_index:"0" x_cf_routererror:"{error}"')


def nginx(t: str, request: str, status: int, agent: str, rid: str) -> str:
    return (f'api.sys.example.com - [27/Nov/2026:10:02:{t} +0000] "{request} HTTP/1.1" {status} 1532 "-" "{agent}" '
            f"203.0.113.7, 10.0.1.11 vcap_request_id:{rid} response_time:0.084")


def lager(t: str, level: int, message: str, data: dict) -> str:
    return orjson.dumps({"timestamp": f"17957737{t}.100530624", "source": "rep", "message": message,
                         "log_level": level, "data": data}).decode()


TERRAFORM = "HashiCorp Terraform/1.6.0 (+https://www.terraform.io) terraform-provider-cloudfoundry/0.53.0"
CF_CLI = "cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)"

# (instance group, index, job directory/file): {event name: event text}
INCIDENT: dict[tuple[str, int, str], dict[str, str]] = {
    ("uaa", 0, "uaa/uaa.log"): {
        "uaa_npe": uaa("00.123456", "http-nio-8080-exec-7", "ERROR", "UaaAuthorizationEndpoint",
                       "Unable to create access token",
                       "java.lang.NullPointerException: Cannot invoke \"org.cloudfoundry.identity.uaa.zone.IdentityZone"
                       ".getId()\" because the return value of \"org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder.get()\""
                       " is null",
                       "\tat org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder.get(IdentityZoneHolder.java:58)",
                       "\tat org.cloudfoundry.identity.uaa.oauth.UaaTokenServices.createAccessToken(UaaTokenServices.java:412)",
                       "\tat org.springframework.security.oauth2.provider.token.AbstractTokenGranter.getAccessToken"
                       "(AbstractTokenGranter.java:72)",
                       "\tat java.base/java.lang.Thread.run(Thread.java:840)"),
        "uaa_token_debug": uaa("00.200000", "http-nio-8080-exec-7", "DEBUG", "UaaTokenServices",
                               "Issuing access token for client cf in zone uaa"),
        "uaa_zone": uaa("01.000000", "http-nio-8080-exec-2", "ERROR", "UaaExceptionTranslator", "Unhandled exception",
                        "org.cloudfoundry.identity.uaa.zone.ZoneDoesNotExistsException: Zone[nonexistent] not found.",
                        "\tat org.cloudfoundry.identity.uaa.zone.IdentityZoneResolvingFilter.doFilterInternal"
                        "(IdentityZoneResolvingFilter.java:71)"),
        "uaa_hikari": uaa("02.000000", "http-nio-8080-exec-3", "ERROR", "JdbcScimUserProvisioning", "Lookup failed",
                          "org.springframework.dao.DataAccessResourceFailureException: Could not open JDBC Connection",
                          "\tat org.cloudfoundry.identity.uaa.scim.jdbc.JdbcScimUserProvisioning.retrieveByUsername"
                          "(JdbcScimUserProvisioning.java:180)",
                          "Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available,"
                          " request timed out after 30000ms.",
                          "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)"),
        "uaa_audit": uaa("03.000000", "http-nio-8080-exec-4", "INFO", "Audit",
                         "TokenIssuedEvent ('[\"cloud_controller.read\",\"openid\"]'): principal=cf, "
                         "origin=[caller=cf, details=(remoteAddress=10.0.1.11)], identityZoneId=[uaa]"),
    },
    ("api", 0, "cloud_controller_ng/cloud_controller_ng.log"): {
        "cc0_started": cc("03.100000", "info", f'Started PUT "/v2/service_instances/{SERVICE}" for user: admin, ip: '
                          f"10.0.1.11 with vcap-request-id: {REQ}::{ROUTER_REQ} at 2026-11-27 10:02:03 UTC", REQ),
        "cc0_broker": cc("03.900000", "error", broker_error(10001, "CF-ServiceBrokerBadResponse",
                                                            "Service broker error: internal error"), REQ, 111),
        "cc0_completed": cc("04.000000", "info", f"Completed 502 vcap-request-id: {REQ}::{ROUTER_REQ}", REQ),
        "cc0_broker2": cc("05.000000", "error", broker_error(10001, "CF-ServiceBrokerBadResponse",
                                                             "The service broker returned an invalid response"),
                          "0c7d6e5f-1a2b-4c3d-8e9f-a0b1c2d3e4f5", 111),
        "cc0_notfound": cc("06.000000", "error", 'Request failed: 404: {"description"=>"The app could not be found", '
                           '"error_code"=>"CF-AppNotFound", "code"=>100004}', "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"),
    },
    ("api", 0, "cloud_controller_ng/nginx-access.log"): {
        "nginx_put": nginx("03", f"PUT /v2/service_instances/{SERVICE}?accepts_incomplete=true", 502, CF_CLI,
                           f"{REQ}::{ROUTER_REQ}"),
        "nginx_tf1": nginx("07", "GET /v3/service_instances?per_page=5000", 200, TERRAFORM,
                           "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"),
        "nginx_tf2": nginx("08", "GET /v3/apps?per_page=5000", 200, TERRAFORM, "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"),
    },
    ("api", 1, "cloud_controller_ng/cloud_controller_ng.log"): {
        "cc1_broker": cc("09.000000", "error", broker_error(10001, "CF-ServiceBrokerBadResponse",
                                                            "Service broker error: internal error"),
                         "2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b", 111),
        "cc1_info": cc("09.100000", "info", "Completed 200 vcap-request-id: 3f4a5b6c-7d8e-4f9a-8b1c-2d3e4f5a6b7c",
                       "3f4a5b6c-7d8e-4f9a-8b1c-2d3e4f5a6b7c"),
    },
    ("router", 0, "gorouter/access.log"): {
        "gr_cc": router("03", "api.sys.example.com", f"PUT /v2/service_instances/{SERVICE}?accepts_incomplete=true", 502,
                        REQ),
        "gr_shop_502a": router("10", "shop.apps.example.com", "GET /cart", 502, "c3d4e5f6-a7b8-4c9d-8e1f-2a3b4c5d6e7f",
                               "endpoint_failure"),
        "gr_shop_502b": router("11", "shop.apps.example.com", "GET /cart/items", 502,
                               "d4e5f6a7-b8c9-4d0e-9f2a-3b4c5d6e7f8a", "endpoint_failure"),
        "gr_shop_200": router("12", "shop.apps.example.com", "GET /", 200, "e5f6a7b8-c9d0-4e1f-8a3b-4c5d6e7f8a9b"),
        "gr_orders_503": router("13", "orders.apps.example.com", "POST /api/v1/orders", 503,
                                "f6a7b8c9-d0e1-4f2a-9b4c-5d6e7f8a9b0c", "no_endpoints"),
    },
    ("diego-cell", 0, "rep/rep.stdout.log"): {
        "rep_failed": lager("14", 2, "rep.executing-container-operation.ordinary-lrp-processor.process-reserved-container"
                            ".run-container.failed-creating-container",
                            {"container-guid": CONTAINER, "error": "mounting file: mounting file: exit status 2"}),
        "rep_metrics": lager("15", 1, "rep.container-metrics-reporter.emitting", {"session": "4"}),
    },
}
EVENTS = {name: text for files in INCIDENT.values() for name, text in files.items()}
NAMES = {text: name for name, text in EVENTS.items()}
assert len(NAMES) == len(EVENTS)


@pytest.fixture(scope="module")
def incident(es_node, es, tmp_path_factory):
    """The incident's logs shipped by the real agent, one run per VM: the index, its search variant, the
    directory with the agents' logs."""
    index = f"logs-incident-{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("incident")
    vms = sorted({(group, i) for group, i, _ in INCIDENT})
    for group, i in vms:
        root = tmp / f"{group}-{i}"
        for (g, n, rel), events in INCIDENT.items():
            if (g, n) == (group, i):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text("".join(e + "\n" for e in events.values()))
        _ship(es_node.url, root, tmp, index, i, group)
    assert count(es, index) == len(EVENTS)
    meta = es.indices.get_index_template(name=f"log-shipper-{index}")["index_templates"][0]["index_template"]["_meta"]
    return index, analysis.BY_NAME[meta["search"]], tmp


def found(es, index: str, query: dict) -> set[str]:
    hits = es.search(index=index, query=query, size=100, source=["message"])["hits"]["hits"]
    return {NAMES[h["_source"]["message"]] for h in hits}


# How Kibana sends what an operator types (KQL): a bare value is a multi_match over the index's
# default fields, a quoted one the same as a phrase, `field: value` a match (match_phrase if quoted).
def free(text: str) -> dict:
    if text.startswith('"'):
        return {"multi_match": {"query": text.strip('"'), "type": "phrase", "lenient": True}}
    return {"multi_match": {"query": text, "type": "best_fields", "lenient": True}}


def field(name: str, text: str) -> dict:
    if text.startswith('"'):
        return {"match_phrase": {name: text.strip('"')}}
    return {"match": {name: text}}


def lucene(text: str) -> dict:
    """Kibana's Lucene syntax: query_string with no field, so the index's default fields."""
    return {"query_string": {"query": text, "analyze_wildcard": True}}


def both(*queries: dict) -> dict:
    return {"bool": {"filter": list(queries)}}


NPE = {"uaa_npe"}
BROKER = {"cc0_broker", "cc0_broker2", "cc1_broker"}
ONE_REQUEST = {"cc0_started", "cc0_broker", "cc0_completed", "nginx_put", "gr_cc"}

# (what the operator types, the events it must find: exactly these).
FREE_TEXT = [
    ("NullPointerException", NPE),
    ("java.lang.NullPointerException", NPE),
    ("IdentityZoneHolder", NPE),
    ("UaaTokenServices", {"uaa_npe", "uaa_token_debug"}),  # a frame's class, and the logger's name
    ('"UaaTokenServices.java:412"', NPE),
    ("ZoneDoesNotExistsException", {"uaa_zone"}),
    ("org.cloudfoundry.identity.uaa.zone.ZoneDoesNotExistsException", {"uaa_zone"}),
    ("SQLTransientConnectionException", {"uaa_hikari"}),
    ("DataAccessResourceFailureException", {"uaa_hikari"}),
    ("JdbcScimUserProvisioning", {"uaa_hikari"}),
    ("HikariPool", {"uaa_hikari"}),
    ("TokenIssuedEvent", {"uaa_audit"}),
    ("ServiceBrokerBadResponse", BROKER),
    ('"CF-ServiceBrokerBadResponse"', BROKER),
    ("AppNotFound", {"cc0_notfound"}),
    (f'"{REQ}"', ONE_REQUEST),
    ("endpoint_failure", {"gr_shop_502a", "gr_shop_502b"}),
    ("shop.apps.example.com", {"gr_shop_502a", "gr_shop_502b", "gr_shop_200"}),
    ("Terraform", {"nginx_tf1", "nginx_tf2"}),
    ('"failed-creating-container"', {"rep_failed"}),
    (f'"{CONTAINER}"', {"rep_failed"}),
    # Phrases, including ones that begin inside an identifier.
    ('"because the return value of"', NPE),
    ('"NullPointerException: Cannot invoke"', NPE),
    ('"Connection is not available"', {"uaa_hikari"}),
    ('"exit status 2"', {"rep_failed"}),
    # A route is a phrase of its segments: every path under it.
    ('"/v2/service_instances"', {"cc0_started", "cc0_broker", "cc0_broker2", "cc1_broker", "nginx_put", "gr_cc"}),
]


@pytest.mark.parametrize("typed, want", FREE_TEXT, ids=[t for t, _ in FREE_TEXT])
def test_free_text_finds_exactly_the_events_with_that_word(es, incident, typed, want):
    index, _, _ = incident
    assert found(es, index, free(typed)) == want


@pytest.mark.parametrize("typed, want", [
    ("NullPointerException", NPE),
    ("IdentityZoneHolder AND UaaTokenServices", NPE),
    ("bosh.job:uaa AND ZoneDoesNotExistsException", {"uaa_zone"}),
    ('"CF-ServiceBrokerBadResponse" AND bosh.instance.index:1', {"cc1_broker"}),
    ('"failed-creating-container"', {"rep_failed"}),
])
def test_lucene_syntax_searches_the_same_default_fields(es, incident, typed, want):
    index, _, _ = incident
    assert found(es, index, lucene(typed)) == want


def test_field_queries_on_the_message(es, incident):
    index, variant, _ = incident
    # On the minimal node a part is in message.words; where analysis-common is, message itself has it.
    words = "message.words" if variant is analysis.CORE else "message"
    assert found(es, index, field(words, "IdentityZoneHolder")) == NPE
    assert found(es, index, field(words, "ServiceBrokerBadResponse")) == BROKER
    assert found(es, index, field("message", "java.lang.NullPointerException")) == NPE
    assert found(es, index, field("message", '"Connection is not available"')) == {"uaa_hikari"}
    assert found(es, index, field("message", f'"{CONTAINER}"')) == {"rep_failed"}
    assert found(es, index, field("cf.cloud_controller.message", '"CF-ServiceBrokerBadResponse"')) == BROKER
    assert found(es, index, field(f"cf.cloud_controller.message{variant.subfields[0] if variant.subfields else ''}",
                                  "ServiceBrokerBadResponse")) == BROKER


# The README's "Searching after an incident" queries, as Kibana sends them, with what each returns.
README_QUERIES = [
    ("a stack trace by exception name", free("NullPointerException"), NPE),
    ("a class anywhere in UAA's traces", both(field("bosh.job", "uaa"), free("IdentityZoneHolder")), NPE),
    ("UAA's database trouble", both(field("bosh.job", "uaa"), free("HikariPool")), {"uaa_hikari"}),
    ("CC errors by error code on one instance",
     both(field("bosh.job", "cloud_controller_ng"), field("bosh.instance.index", "0"), free("ServiceBrokerBadResponse")),
     {"cc0_broker", "cc0_broker2"}),
    ("one request through every tier", free(f'"{REQ}"'), ONE_REQUEST),
    ("gorouter 5xx for one route",
     both(field("bosh.job", "gorouter"), field("url.domain", "shop.apps.example.com"),
          {"range": {"http.response.status_code": {"gte": 500}}}), {"gr_shop_502a", "gr_shop_502b"}),
    ("gorouter 5xx for one path",
     both(field("bosh.job", "gorouter"), field("url.domain", "shop.apps.example.com"),
          {"range": {"http.response.status_code": {"gte": 500}}}, free('"/cart/items"')), {"gr_shop_502b"}),
    ("gorouter errors by kind", both(field("bosh.job", "gorouter"), free("endpoint_failure")),
     {"gr_shop_502a", "gr_shop_502b"}),
    ("one Diego container", free(f'"{CONTAINER}"'), {"rep_failed"}),
    ("CC API calls of one client", both(field("bosh.job", "cloud_controller_ng"), free("Terraform")),
     {"nginx_tf1", "nginx_tf2"}),
]


@pytest.mark.parametrize("what, query, want", README_QUERIES, ids=[w for w, _, _ in README_QUERIES])
def test_readme_queries(es, incident, what, query, want):
    index, _, _ = incident
    assert found(es, index, query) == want


def test_readme_aggregations_who_calls_the_cc_api_and_the_noisiest_job(es, incident):
    index, _, _ = incident
    res = es.search(index=index, size=0, query=both(field("bosh.job", "cloud_controller_ng"),
                                                    {"exists": {"field": "http.request.method"}}),
                    aggs={"ua": {"terms": {"field": "user_agent.original"}}})
    assert [(b["key"], b["doc_count"]) for b in res["aggregations"]["ua"]["buckets"]] == [(TERRAFORM, 2), (CF_CLI, 1)]
    res = es.search(index=index, size=0, aggs={"job": {"terms": {"field": "bosh.job"}}})
    jobs = [(b["key"], b["doc_count"]) for b in res["aggregations"]["job"]["buckets"]]
    assert jobs == [("cloud_controller_ng", 10), ("gorouter", 5), ("uaa", 5), ("rep", 2)]


def test_stack_traces_are_whole_events_with_every_frame_searchable(es, incident):
    index, _, _ = incident
    hits = es.search(index=index, query=free("AbstractTokenGranter"))["hits"]["hits"]
    assert [h["_source"]["message"] for h in hits] == [EVENTS["uaa_npe"]]
    assert "multiline" in hits[0]["_source"]["log.flags"]


def _saved_query(object_id: str) -> str:
    from agent import kibana

    for line in kibana.OBJECTS.read_text().splitlines():
        o = orjson.loads(line)
        if o["id"] == object_id:
            return orjson.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    raise AssertionError(object_id)


def test_saved_searches_find_their_events(es, incident):
    index, _, _ = incident
    # Each saved KQL query, as Kibana sends it; the strings are checked so the two cannot drift apart.
    assert _saved_query("log-shipper-stack-traces") == "log.flags: multiline and log.level: (error or fatal)"
    traces = both(field("log.flags", "multiline"), {"bool": {"should": [field("log.level", "error"), field("log.level", "fatal")],
                                                           "minimum_should_match": 1}})
    assert found(es, index, traces) == {"uaa_npe", "uaa_zone", "uaa_hikari"}
    assert found(es, index, both(traces, free("IdentityZoneHolder"))) == NPE

    assert _saved_query("log-shipper-cc-error-codes") == "bosh.job: cloud_controller_ng and log.level: error and error_code"
    codes = both(field("bosh.job", "cloud_controller_ng"), field("log.level", "error"), free("error_code"))
    assert found(es, index, codes) == BROKER | {"cc0_notfound"}
    assert found(es, index, both(codes, free("ServiceBrokerBadResponse"), field("bosh.instance.index", "0"))) == {
        "cc0_broker", "cc0_broker2"}


def test_setup_and_the_agent_log_say_which_search_analysis_the_cluster_got(es, es_node, incident, index_name, tmp_path):
    _, variant, logs = incident
    # The oracle is the node's module list, not the detection under test.
    modules = {m["name"] for n in es.nodes.info(metric="plugins")["nodes"].values() for m in n["modules"]}
    expected = analysis.IDENTIFIERS if "analysis-common" in modules else analysis.CORE
    assert variant is expected
    said = [orjson.loads(line)["msg"] for log in logs.glob("agent*.log") for line in log.read_text().splitlines()
            if line.startswith("{") and orjson.loads(line)["event"] == "template"]
    assert len(said) == len({(g, i) for g, i, _ in INCIDENT}) and all(f"search analysis {expected.name}" in m for m in said)
    assert sum(m.startswith(f"index template installed v{template.VERSION}") for m in said) == 1

    cfg = write_config(tmp_path / "c.json", es_node.url, tmp_path, tmp_path / "state", index_name)
    setup = [sys.executable, "-m", "agent.cli", "setup", "--config", str(cfg)]
    first = subprocess.run(setup, capture_output=True, text=True, check=True).stdout
    reason = "analysis-common present" if expected is analysis.IDENTIFIERS else "no analysis-common on this cluster"
    assert f"search analysis {expected.name} ({reason}): " in first
    again = subprocess.run(setup, capture_output=True, text=True, check=True).stdout
    assert again.startswith(f"up to date (v{template.VERSION})") and f"search analysis {expected.name}" in again
