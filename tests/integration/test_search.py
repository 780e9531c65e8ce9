"""Issue 8: after an incident, each operator question is one query with exact answers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

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


def _ship(es_url: str, root: Path, tmp: Path, index: str, instance: int) -> None:
    state = tmp / f"state-{instance}"
    cfg = write_config(tmp / f"c{instance}.json", es_url, root, state, index,
                       bosh={"instance_group": "router", "index": instance, "id": IDS[instance]})
    agent = AgentProcess(cfg, tmp / f"agent{instance}.log").start()
    try:
        wait_caught_up(state, [p for p in root.rglob("*.log")])
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def shipped(es_node, es, tmp_path_factory):
    """Two router instances' and one api instance's logs, shipped by the real agent."""
    index = "logs-search-" + tmp_path_factory.mktemp("x").name[-6:].lower().replace("_", "")
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
