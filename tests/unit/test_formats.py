"""Format extraction against real Cloud Foundry log lines (sources named per sample)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import from_dict
from agent.rules import default_rule
from agent.formats import (
    FORMATS,
    UNPARSED,
    auto,
    bosh_dns,
    cc_nginx_access,
    cloud_controller,
    gorouter_access,
    lager,
    rfc3339,
    uaa,
)
from agent.formats._common import from_epoch_text, from_epoch_value, iso_at, seconds_to_ns, unescape


def fields(fmt: str, line: bytes) -> tuple[str | None, dict]:
    """Run a format and decode its members the way the pipeline embeds them: inside a JSON object."""
    ts, members = FORMATS[fmt](line)
    doc = orjson.loads(b'{"message":"x"' + members + b"}")
    del doc["message"]
    return ts, doc


# cloudfoundry/cf-networking-onboarding, http-routes/120-incoming-http-requests-pt-5.markdown (gorouter 2021).
GOROUTER_2021 = (
    b'APP_A_ROUTE - [2021-02-18T21:22:32.355501523Z] "GET / HTTP/1.1" 200 0 62 "-" "curl/7.54.0" '
    b'"35.191.2.80:51628" "10.0.1.11:61002" x_forwarded_for:"142.105.202.35, 35.227.211.74, 35.191.2.80" '
    b'x_forwarded_proto:"http" vcap_request_id:"6cb8b8de-bc85-4479-5f90-1c3a52d88d84" response_time:0.011962 '
    b'gorouter_time:0.000467 app_id:"cabd9e08-384e-4689-b868-1ba3d5d838bf" app_index:"0" x_cf_routererror:"-" '
    b'x_b3_traceid:"9d30688835227cf3" x_b3_spanid:"9d30688835227cf3" x_b3_parentspanid:"-" '
    b'b3:"9d30688835227cf3-9d30688835227cf3"'
)
# An RTR line quoted in a public incident write-up (2019 gorouter: millisecond time with a numeric offset).
GOROUTER_2019 = (
    b'cf-vault-kabu.cfapps.io - [2019-08-22T09:54:04.399+0000] "PUT /v1/auth/token/roles/'
    b'cf-7ecb3781-d8e2-4748-962d-fa798e921e95 HTTP/1.1" 204 95 0 "-" "Go-http-client/1.1" "10.10.2.116:20552" '
    b'"10.10.149.220:61244" x_forwarded_for:"54.196.151.35, 10.10.2.116" x_forwarded_proto:"http" '
    b'vcap_request_id:"c066efb4-d680-4ed9-6fb0-2e87d6b2f054" response_time:0.012431279 '
    b'app_id:"35af1b55-e515-49af-b8e9-9b7677a92a86" app_index:"0" x_b3_traceid:"0b83426fd070343d" '
    b'x_b3_spanid:"0b83426fd070343d" x_b3_parentspanid:"-" b3:"0b83426fd070343d-0b83426fd070343d"'
)

# The 2021 line in today's routing-release layout (instance_id added, access_log_record.go): the usual path.
GOROUTER_USUAL = GOROUTER_2021.replace(b'app_index:"0" ', b'app_index:"0" instance_id:"1e44ee86-2977-4b88-88e1-63ee0b0c267c" ')


def test_gorouter_access_2021_line():
    ts, f = fields("gorouter_access", GOROUTER_2021)
    assert ts == "2021-02-18T21:22:32.355Z"
    assert f == {
        "url.domain": "APP_A_ROUTE",
        "http.request.method": "GET",
        "url.original": "/",
        "http.version": "1.1",
        "http.response.status_code": 200,
        "http.request.body.bytes": 0,
        "http.response.body.bytes": 62,
        "user_agent.original": "curl/7.54.0",
        "source.address": "35.191.2.80:51628",
        "destination.address": "10.0.1.11:61002",
        "cf.gorouter_access.x_forwarded_for": "142.105.202.35, 35.227.211.74, 35.191.2.80",
        "url.scheme": "http",
        "http.request.id": "6cb8b8de-bc85-4479-5f90-1c3a52d88d84",
        "event.duration": 11_962_000,
        "cf.gorouter_access.gorouter_time_ns": 467_000,
        "cf.app.id": "cabd9e08-384e-4689-b868-1ba3d5d838bf",
        "cf.app.instance_index": "0",
        "trace.id": "9d30688835227cf3",
        "span.id": "9d30688835227cf3",
    }


def test_gorouter_access_2019_line_with_offset_and_nanosecond_duration():
    ts, f = fields("gorouter_access", GOROUTER_2019)
    assert ts == "2019-08-22T09:54:04.399Z"
    assert f["http.request.method"] == "PUT"
    assert f["url.original"] == "/v1/auth/token/roles/cf-7ecb3781-d8e2-4748-962d-fa798e921e95"
    assert f["http.response.status_code"] == 204
    assert (f["http.request.body.bytes"], f["http.response.body.bytes"]) == (95, 0)
    assert f["event.duration"] == 12_431_279
    assert "cf.gorouter_access.gorouter_time_ns" not in f


def test_gorouter_access_go_escapes_and_dashes():
    # Values as gorouter writes them with strconv.Quote: escaped quote, \xNN byte, status "-".
    line = (
        b'h - [2026-11-27T23:59:00.123456789Z] "GET /a?q=\\"x\\" HTTP/1.1" "-" 0 0 "-" "ua \\xff\\u00e9" "-" "-" '
        b'x_forwarded_for:"-" x_forwarded_proto:"-" vcap_request_id:"-" response_time:"-" gorouter_time:"-" '
        b'app_id:"-" app_index:"-" instance_id:"-" route_service_url:"-" x_cf_routererror:"endpoint_failure"'
    )
    ts, f = fields("gorouter_access", line)
    assert ts == "2026-11-27T23:59:00.123Z"
    assert f["url.original"] == '/a?q="x"'
    assert f["user_agent.original"] == "ua \ufffd\u00e9"
    assert "http.response.status_code" not in f and "event.duration" not in f and "cf.app.id" not in f
    assert f["cf.gorouter_access.router_error"] == "endpoint_failure"


def _same_as_exact(fast, exact, line: bytes) -> None:
    """The fast path returns what the exact path returns for `line`, or raises where it raises."""
    try:
        want = exact(line)
    except Exception as e:  # the encoder's backstop turns this into UNPARSED either way
        with pytest.raises(type(e)):
            fast(line)
        return
    assert fast(line) == want


# gorouter_access copies plain values between quotes and keeps `_extract_exact` for everything else:
# edits that move a line across that boundary, one at a time, on the two real lines.
_GOROUTER_EDITS = [
    (b"", b""),
    (b" 200 ", b" 000 "), (b" 200 ", b' "-" '), (b" 0 62 ", b" 007 62 "), (b" 0 62 ", b" 0 18446744073709551615 "),
    (b" 0 62 ", b" 0 18446744073709551616 "), (b"APP_A_ROUTE", b""), (b"APP_A_ROUTE", b'a"b'), (b"APP_A_ROUTE", b"caf\xc3\xa9"),
    (b"T21:22:32.355501523Z", b"t21:22:32.355Z"), (b"T21:22:32.355501523Z", b"T21:22:32,355Z"),
    (b"T21:22:32.355501523Z", b"T21:22:32Z"), (b"T21:22:32.355501523Z", b"T21:22:32.3Z"),
    (b"T21:22:32.355501523Z", b"T21:22:32.355+01:00"), (b"2021-02-18T", b"2021-02-30T"), (b"2021-02-18T", b"0999-02-18T"),
    (b'"curl/7.54.0"', b'"cu\\"rl\\x41\\u00e9"'), (b'"curl/7.54.0"', b'"\\xff"'), (b'"curl/7.54.0"', b'""'),
    (b'"curl/7.54.0"', b'"caf\xc3\xa9 \xe2\x80\xa8 \x7f"'), (b'"curl/7.54.0"', b'"caf\xc3"'), (b'"curl/7.54.0"', b'"a\tb"'),
    (b'"-" "curl', b'"r\\"x" "curl'), (b"GET / HTTP/1.1", b"GET / HTTP/"), (b"GET / HTTP/1.1", b"GET /a b HTTP/1.1"),
    (b"GET / HTTP/1.1", b"GET /\\x41 HTTP/1.1"), (b"GET / HTTP/1.1", b"-"), (b'"10.0.1.11:61002"', b'"-"'),
    (b"response_time:0.011962", b"response_time:1234567890.5"), (b"response_time:0.011962", b"response_time:0."),
    (b"response_time:0.011962", b"response_time:0.5x"), (b"response_time:0.011962", b'response_time:"0.5"'),
    (b"response_time:0.011962", b"response_time:123456789.0000000019"), (b'app_index:"0"', b'app_index:"-"'),
    (b'app_index:"0"', b'app_index:""'), (b'x_forwarded_proto:"http"', b'x_forwarded_proto:"\xc3\xa9"'),
    (b" x_b3_traceid", b"  x_b3_traceid"), (b'b3:"9d30688835227cf3-', b'b3:"a\\"b" app_id:"dup'),
    (b'b3:"9d30688835227cf3-', b'b3:"x" route_service_url:"http://rs'),
]


@pytest.mark.parametrize("old,new", _GOROUTER_EDITS)
def test_gorouter_access_fast_path_is_the_exact_path(old, new):
    line = GOROUTER_2021.replace(old, new, 1)
    assert old in GOROUTER_2021 and line != GOROUTER_2021 or not old
    _same_as_exact(gorouter_access.extract, gorouter_access._extract_exact, line)
    _same_as_exact(gorouter_access.extract, gorouter_access._extract_exact, GOROUTER_2019.replace(old, new, 1))
    _same_as_exact(gorouter_access.extract, gorouter_access._extract_exact, GOROUTER_USUAL.replace(old, new, 1))


def test_gorouter_access_usual_lines_take_the_fast_path(monkeypatch):
    agent_quoted = GOROUTER_2021.replace(b'"curl/7.54.0"', b'"Mozilla \\"x\\" caf\xc3\xa9"')
    want = [gorouter_access.extract(x) for x in (GOROUTER_2021, GOROUTER_2019, agent_quoted)]

    def exact(line):
        raise AssertionError("took the exact path")

    monkeypatch.setattr(gorouter_access, "_extract_exact", exact)
    assert [gorouter_access.extract(x) for x in (GOROUTER_2021, GOROUTER_2019, agent_quoted)] == want


def test_gorouter_access_todays_layout_takes_the_usual_path(monkeypatch):
    agent_quoted = GOROUTER_USUAL.replace(b'"curl/7.54.0"', b'"Mozilla \\"x\\" caf\xc3\xa9"')
    error = GOROUTER_USUAL.replace(b'x_cf_routererror:"-"', b'x_cf_routererror:"endpoint_failure"')
    lines = (GOROUTER_USUAL, agent_quoted, error)
    want = [gorouter_access._extract_exact(x) for x in lines]

    def fast(line):
        raise AssertionError("took the fast path")

    monkeypatch.setattr(gorouter_access, "_extract_fast", fast)
    assert [gorouter_access.extract(x) for x in lines] == want


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([GOROUTER_2021, GOROUTER_2019, GOROUTER_USUAL]), st.integers(0, 600),
       st.binary(max_size=4) | st.lists(st.sampled_from(b'\\" -:.09aZ\x00\x7f\xc3\xa9\xff'), max_size=4).map(bytes))
def test_gorouter_access_fast_path_is_the_exact_path_on_mutations(base, at, junk):
    at = min(at, len(base))
    line = base[:at] + junk + base[at + len(junk) :]
    _same_as_exact(gorouter_access.extract, gorouter_access._extract_exact, line)


# capi-release jobs/cloud_controller_ng/spec, cc.nginx_access_log_format default:
#   $host - [$time_local] "$request" $status $bytes_sent "$http_referer" "$http_user_agent"
#   $proxy_add_x_forwarded_for vcap_request_id:$upstream_http_x_vcap_request_id response_time:$upstream_response_time
# No captured line was found in public sources; this one is written to that exact format.
CC_NGINX = (
    b'api.sys.example.com - [27/Nov/2026:23:59:00 +0000] "GET /v3/apps?per_page=5000 HTTP/1.1" 200 1532 "-" '
    b'"cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)" 203.0.113.7, 10.0.1.11 '
    b"vcap_request_id:8d8bc2a0-3a6b-4c39-6f60-26d0b1b8a5e1::4f0f4f5e-8b9a-4d0b-9c7a-3d2b1e0f9a8c response_time:0.084"
)


def test_cc_nginx_access_line():
    ts, f = fields("cc_nginx_access", CC_NGINX)
    assert ts == "2026-11-27T23:59:00.000Z"
    assert f == {
        "url.domain": "api.sys.example.com",
        "http.request.method": "GET",
        "url.original": "/v3/apps?per_page=5000",
        "http.version": "1.1",
        "http.response.status_code": 200,
        "http.response.bytes": 1532,
        "user_agent.original": "cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)",
        "source.address": "203.0.113.7",
        "cf.cc_nginx_access.x_forwarded_for": "203.0.113.7, 10.0.1.11",
        "http.request.id": "8d8bc2a0-3a6b-4c39-6f60-26d0b1b8a5e1::4f0f4f5e-8b9a-4d0b-9c7a-3d2b1e0f9a8c",
        "event.duration": 84_000_000,
    }


def test_cc_nginx_access_local_offset_and_several_upstreams():
    line = CC_NGINX.replace(b"+0000", b"-0500").replace(b"response_time:0.084", b"response_time:0.010, 0.002")
    ts, f = fields("cc_nginx_access", line)
    assert ts == "2026-11-28T04:59:00.000Z"
    assert f["event.duration"] == 12_000_000


# cloud_controller_ng JSON, from logsearch-for-cloudfoundry's parsing spec (epoch float timestamp).
CC_2016 = (
    b'{"timestamp":1458655387.3279622,"message":"Completed 200 vcap-request-id: e3d06207-b178-4dd4-7ac8-'
    b'99eb89dbeae4::bb4989dc-d0c3-4680-84a0-e9515db0ccb8","log_level":"info","source":"cc.api","data":{},'
    b'"thread_id":47073419309700,"fiber_id":47073422165060,"process_id":3255,"file":"/var/vcap/packages/'
    b'cloud_controller_ng/cloud_controller_ng/middleware/request_logs.rb","lineno":23,"method":"call"}'
)
# From a cf-for-k8s script's documented output (CC with RFC 3339 timestamps, data.request_guid).
CC_2020 = (
    b'{"timestamp":"2020-08-18T05:13:26.497412807Z","message":"Started GET \\"/v2/service_usage_events\\" for user: '
    b"usage_service_client, ip: 127.0.0.1 with vcap-request-id: 9baab644-95a9-4047-b006-7b8d10a2ad2e::1422266c-"
    b'6695-4b75-b554-6c8ad4704e6f at 2020-08-18 05:13:26 UTC","log_level":"info","source":"cc.api","data":'
    b'{"request_guid":"9baab644-95a9-4047-b006-7b8d10a2ad2e::1422266c-6695-4b75-b554-6c8ad4704e6f"},'
    b'"thread_id":47334664681180,"fiber_id":47334690531200,"process_id":1,"file":"/cloud_controller_ng/'
    b'middleware/request_logs.rb","lineno":28,"method":"call"}'
)


def test_cloud_controller_epoch_line():
    ts, f = fields("cloud_controller", CC_2016)
    assert ts == "2016-03-22T14:03:07.327Z"
    assert f == {
        "log.level": "info",
        "log.logger": "cc.api",
        "cf.cloud_controller.message": "Completed 200 vcap-request-id: e3d06207-b178-4dd4-7ac8-99eb89dbeae4"
        "::bb4989dc-d0c3-4680-84a0-e9515db0ccb8",
        "process.pid": 3255,
        "process.thread.id": 47073419309700,
        "log.origin.file.name": "/var/vcap/packages/cloud_controller_ng/cloud_controller_ng/middleware/request_logs.rb",
        "log.origin.file.line": 23,
        "log.origin.function": "call",
    }


def test_cloud_controller_rfc3339_line_with_request_guid():
    ts, f = fields("cloud_controller", CC_2020)
    assert ts == "2020-08-18T05:13:26.497Z"
    assert f["http.request.id"] == "9baab644-95a9-4047-b006-7b8d10a2ad2e::1422266c-6695-4b75-b554-6c8ad4704e6f"
    assert f["cf.cloud_controller.data"] == {"request_guid": f["http.request.id"]}
    assert f["cf.cloud_controller.message"].startswith('Started GET "/v2/service_usage_events"')


# cloud_controller checks the usual fields in one go and serialises them in one orjson.dumps; `_members`
# is the one-member-at-a-time path, which every other line takes.
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CC_2016, CC_2020]), st.integers(0, 500),
       st.lists(st.sampled_from(b'\\"{}[]:,.09-aZ \xc3\xa9'), max_size=4).map(bytes))
def test_cloud_controller_one_dumps_is_the_member_by_member_path(base, at, junk):
    at = min(at, len(base))
    line = base[:at] + junk + base[at + len(junk) :]
    ts, members = cloud_controller.extract(line)
    if members is not UNPARSED:
        assert members == cloud_controller._members(orjson.loads(line))


@pytest.mark.parametrize("old,new", [(b'"process_id":3255', b'"process_id":0'), (b'"process_id":3255', b'"process_id":-1'),
                                     (b'"lineno":23', b'"lineno":9223372036854775808'), (b'"method":"call"', b'"method":""'),
                                     (b'"method":"call"', b'"method":true'), (b'"file":"/var', b'"file2":"/var'),
                                     (b'"log_level":"info"', b'"log_level":"WARNING"'), (b'"data":{}', b'"data":{"error":"e"}')])
def test_cloud_controller_unusual_fields_take_the_general_path(old, new):
    line = CC_2016.replace(old, new)
    assert line != CC_2016
    assert cloud_controller.extract(line)[1] == cloud_controller._members(orjson.loads(line))


def test_cloud_controller_usual_lines_take_one_dumps(monkeypatch):
    want = [cloud_controller.extract(x) for x in (CC_2016, CC_2020)]
    monkeypatch.setattr(cloud_controller, "_members", None)
    assert [cloud_controller.extract(x) for x in (CC_2016, CC_2020)] == want


# diego-release docs (logging.format.timestamp), both lager generations, and a rep error from a public issue.
REP_EPOCH = (
    b'{"timestamp":"1522171784.100530624","source":"rep","message":"rep.started","log_level":1,'
    b'"data":{"cell-id":"7f84c2ea-ce4a-43cc-920d-db8d8d66f58e"}}'
)
REP_RFC3339 = (
    b'{"timestamp":"2018-03-26T23:57:03.5858943Z","level":"info","source":"rep","message":"rep.started",'
    b'"data":{"cell-id":"347c58b7-0c4a-419f-8126-21e0882d6b15"}}'
)
REP_ERROR = (
    b'{"timestamp":"1469141083.442837954","source":"rep","message":"rep.executing-container-operation.'
    b"ordinary-lrp-processor.process-reserved-container.run-container.failed-creating-container\","
    b'"log_level":2,"data":{"container-guid":"b703676b-6c00-4414-55bc-a36a1aa487d3","container-state":"reserved",'
    b'"error":"mounting file: mounting file: exit status 2","guid":"b703676b-6c00-4414-55bc-a36a1aa487d3"}}'
)


def test_lager_epoch_generation():
    ts, f = fields("lager", REP_EPOCH)
    assert ts == "2018-03-27T17:29:44.100Z"
    assert f == {
        "log.level": "info",
        "log.logger": "rep",
        "event.action": "rep.started",
        "cf.lager.data": {"cell-id": "7f84c2ea-ce4a-43cc-920d-db8d8d66f58e"},
    }


def test_lager_rfc3339_generation():
    ts, f = fields("lager", REP_RFC3339)
    assert ts == "2018-03-26T23:57:03.585Z"
    assert f["log.level"] == "info" and f["event.action"] == "rep.started"
    assert f["cf.lager.data"] == {"cell-id": "347c58b7-0c4a-419f-8126-21e0882d6b15"}


def test_lager_error_level_and_error_message():
    ts, f = fields("lager", REP_ERROR)
    assert ts == "2016-07-21T22:44:43.442Z"
    assert f["log.level"] == "error"
    assert f["error.message"] == "mounting file: mounting file: exit status 2"
    assert f["cf.lager.data"]["container-state"] == "reserved"


def test_lager_float_timestamp_keeps_written_milliseconds():
    # gorouter's zap writes a float; 1700000000.123 is 1700000000.12299990654 in binary.
    ts, f = fields("lager", b'{"log_level":3,"timestamp":1700000000.123,"message":"gorouter.x","source":"vcap.gorouter","data":{}}')
    assert ts == "2023-11-14T22:13:20.123Z"
    assert f == {"log.level": "fatal", "log.logger": "vcap.gorouter", "event.action": "gorouter.x"}


# lager serialises its picked fields in one orjson.dumps; `_members` is the one-member-at-a-time path.
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([REP_EPOCH, REP_RFC3339, REP_ERROR]), st.integers(0, 400),
       st.lists(st.sampled_from(b'\\"{}[]:,.09aZ \xc3\xa9'), max_size=4).map(bytes))
def test_lager_one_dumps_is_the_member_by_member_path(base, at, junk):
    at = min(at, len(base))
    line = base[:at] + junk + base[at + len(junk) :]
    ts, members = lager.extract(line)
    if members is not UNPARSED:
        assert members == lager._members(orjson.loads(line))


def test_lager_usual_lines_take_one_dumps(monkeypatch):
    want = [lager.extract(x) for x in (REP_EPOCH, REP_RFC3339, REP_ERROR)]
    monkeypatch.setattr(lager, "_members", None)
    assert [lager.extract(x) for x in (REP_EPOCH, REP_RFC3339, REP_ERROR)] == want


@pytest.mark.parametrize("data", [b'{"a":' + b"[" * n + b"1" + b"]" * n + b"}" for n in (200, 254, 255, 300)]
                         + [b'{"s":"' + b"{" * 30 + b'"}', b'{"a":' * 20 + b"1" + b"}" * 20])
def test_lager_data_orjson_cannot_write_or_flattened_refuses_is_dropped_alone(data):
    line = b'{"timestamp":"1700000000.5","log_level":"info","source":"s","data":' + data + b"}"
    ts, members = lager.extract(line)
    assert ts == "2023-11-14T22:13:20.500Z" and members.startswith(b',"log.level":"info","log.logger":"s"')
    assert members == lager._members(orjson.loads(line))


# UAA: the logsearch-for-cloudfoundry audit sample (space-separated time), and the newer RFC 3339 patterns.
UAA_AUDIT = (
    b"[2015-08-25 04:57:46.033] uaa - 4176 [http-bio-8080-exec-4] ....  INFO --- Audit: UserAuthenticationSuccess "
    b"('admin'): principal=f63e0165-b85a-40d3-9ef7-78c6698ccb2c, origin=[remoteAddress=52.19.1.74, clientId=cf], "
    b"identityZoneId=[uaa]"
)


def test_uaa_audit_line():
    ts, f = fields("uaa", UAA_AUDIT)
    assert ts == "2015-08-25T04:57:46.033Z"
    assert f == {
        "log.level": "info",
        "process.pid": 4176,
        "process.thread.name": "http-bio-8080-exec-4",
        "log.logger": "Audit",
        "event.action": "UserAuthenticationSuccess",
    }


def test_uaa_rfc3339_microseconds_and_stack_trace():
    line = (
        b"[2026-11-27T23:59:00.123456Z] uaa - 4567 [http-nio-8080-exec-1] .... ERROR --- UaaException: boom\n"
        b"java.lang.IllegalStateException: boom\n\tat org.cloudfoundry.identity.uaa.X.y(X.java:1)"
    )
    ts, f = fields("uaa", line)
    assert ts == "2026-11-27T23:59:00.123Z"
    assert f["log.level"] == "error" and f["log.logger"] == "UaaException" and "event.action" not in f


UAA_RFC3339 = b"[2026-11-27T23:59:00.123456Z] uaa - 4567 [http-nio-8080-exec-1] .... ERROR --- UaaException: boom\n\tat x"


# uaa copies the usual head's values between quotes and keeps `_extract_general` for everything else.
@settings(max_examples=400, deadline=None)
@given(st.sampled_from([UAA_AUDIT, UAA_RFC3339]), st.integers(0, 120),
       st.binary(max_size=3) | st.lists(st.sampled_from(b'\\" -:.,09aTZ[]\x00\x7f\xc3\xa9\xff'), max_size=3).map(bytes))
def test_uaa_fast_path_is_the_general_path_on_mutations(base, at, junk):
    at = min(at, len(base))
    line = base[:at] + junk + base[at + len(junk) :]
    _same_as_exact(uaa.extract, uaa._extract_general, line)


def test_uaa_usual_lines_take_the_fast_path(monkeypatch):
    lines = [UAA_AUDIT, UAA_RFC3339, UAA_AUDIT.replace(b"] uaa", b"Z] uaa")]
    want = [uaa.extract(x) for x in lines]
    monkeypatch.setattr(uaa, "_extract_general", None)
    assert [uaa.extract(x) for x in lines] == want and want[2] == want[0]


def test_uaa_default_rule_joins_stack_traces():
    rule = default_rule("uaa/uaa.log")
    ml = rule.multiline
    assert rule.format == "uaa" and ml is not None and ml.start
    import re

    start = re.compile(ml.start.encode())
    assert start.match(UAA_AUDIT)
    assert start.match(b"[2026-11-27T23:59:00.123Z] uaa - 1 [main] ....  INFO --- X: y")
    assert not start.match(b"\tat org.cloudfoundry.identity.uaa.X.y(X.java:1)")
    assert not start.match(b"Caused by: java.io.IOException")
    # The rule is valid config as written.
    from_dict({"formats": [{"glob": "uaa/uaa.log", "format": rule.format, "multiline": {"start": ml.start}}]})


# bosh-dns, from cf-networking-onboarding (bosh-utils logger, Go LstdFlags time).
BOSH_DNS = b"[RequestLoggerHandler] 2019/10/03 20:49:43 INFO - handlers.DiscoveryHandler Request [1] [amelia.meow.] 0 160000ns"


def test_bosh_dns_request_line():
    ts, f = fields("bosh_dns", BOSH_DNS)
    assert ts == "2019-10-03T20:49:43.000Z"
    assert f == {
        "log.level": "info",
        "log.logger": "RequestLoggerHandler",
        "cf.bosh_dns.handler": "handlers.DiscoveryHandler",
        "dns.question.type": "A",
        "dns.question.name": "amelia.meow.",
        "dns.response_code": "NOERROR",
        "event.duration": 160000,
    }


def test_bosh_dns_other_lines_and_rfc3339_logger():
    ts, f = fields("bosh_dns", b"[main] 2019/10/03 20:49:43 ERROR - failed to load records: open x: no such file")
    assert ts == "2019-10-03T20:49:43.000Z" and f == {"log.level": "error", "log.logger": "main"}
    ts, f = fields("bosh_dns", b"[ForwardHandler] 2021-04-21T10:03:25Z WARN - forwarding failed")
    assert ts == "2021-04-21T10:03:25.000Z" and f == {"log.level": "warn", "log.logger": "ForwardHandler"}


def test_rfc3339_with_offset_and_level():
    ts, f = fields("rfc3339", b"2026-11-28T00:59:00.123456+01:00 [error] something failed")
    assert ts == "2026-11-27T23:59:00.123Z" and f == {"log.level": "error"}
    ts, f = fields("rfc3339", b"2026-11-27T23:59:00Z starting up")
    assert ts == "2026-11-27T23:59:00.000Z" and f == {}


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"raw", "auto"}))
def test_every_format_tags_garbage_unparsed(fmt):
    assert FORMATS[fmt](b"not a log line at all") == (None, UNPARSED)
    assert FORMATS[fmt](b"") == (None, UNPARSED)


def test_auto_never_tags_plain_text_and_uses_what_it_finds():
    assert auto(b"Starting nginx...") == (None, b"")
    assert auto(b"{not json") == (None, b"")
    assert auto(b"[not a time]") == (None, b"")
    assert auto(b"2026-11-27T23:59:00.5Z WARN disk") == ("2026-11-27T23:59:00.500Z", b',"log.level":"warn"')
    assert auto(REP_EPOCH)[0] == "2018-03-27T17:29:44.100Z"


def test_impossible_dates_are_unparsed_not_errors():
    assert FORMATS["rfc3339"](b"2026-02-30T00:00:00Z x") == (None, UNPARSED)
    assert FORMATS["lager"](b'{"timestamp":"99999999999999","log_level":1}') == (None, UNPARSED)
    assert FORMATS["lager"](b'{"timestamp":true}') == (None, UNPARSED)


def test_time_helpers_are_exact():
    assert iso_at(b"2026-01-01T00:30:00.9999-01:00") == ("2026-01-01T01:30:00.999Z", 30)
    assert iso_at(b"2026-01-01T00:30:00+05:30")[0] == "2025-12-31T19:00:00.000Z"
    assert from_epoch_value("1700000000.123456789") == "2023-11-14T22:13:20.123Z"
    assert from_epoch_value(1700000000) == "2023-11-14T22:13:20.000Z"
    assert seconds_to_ns(b"0.000000001") == 1 and seconds_to_ns(b"60") == 60_000_000_000
    assert seconds_to_ns(b"-") is None
    assert unescape(b"a\\tb\\\\c\\x41") == "a\tb\\cA"


@pytest.mark.parametrize("cut", [b"\\x", b"\\x4", b"\\u12", b"\\U0001", b"\\9", b"\\"])
def test_an_escape_cut_short_is_kept_as_written_never_raises(cut):
    """Found by the mutation fuzz: a lone \\x (cc_nginx_access host) raised in int()."""
    assert unescape(b"a" + cut + b"z") == "a" + cut[1:].decode() + "z"


def _repr_time(v: float) -> str | None:
    """The reference for float times: the millisecond of the shortest decimal that round-trips."""
    return from_epoch_text(repr(v))


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=0, max_value=3e11) | st.integers(0, 253402300799 * 1000).map(lambda ms: ms / 1000)
       | st.integers(0, 253402300799 * 10**6).map(lambda us: us / 10**6) | st.sampled_from([1e-5, 1e-4, 5e-324, -0.0, 0.0]))
def test_float_times_keep_the_written_millisecond(v):
    assert from_epoch_value(v) == _repr_time(v)


def test_float_times_near_a_millisecond_boundary():
    for v in (1700000000.123, 1700000000.9999999, 1700000001.0000001, 1458655387.3279622, 253402300799.999, 0.0001):
        assert from_epoch_value(v) == _repr_time(v)
        assert from_epoch_value(-v) is None


@pytest.mark.parametrize(
    ("relpath", "fmt"),
    [
        ("gorouter/access.log", "gorouter_access"),
        ("gorouter/gorouter.stdout.log", "lager"),
        ("cloud_controller_ng/cloud_controller_ng.log", "cloud_controller"),
        ("cloud_controller_worker/cloud_controller_worker.log", "cloud_controller"),
        ("cloud_controller_ng/nginx-access.log", "cc_nginx_access"),
        ("nginx_cc/nginx.access.log", "cc_nginx_access"),
        ("uaa/uaa.log", "uaa"),
        ("bosh-dns/bosh_dns.stdout.log", "bosh_dns"),
        ("rep/rep.stdout.log", "lager"),
        ("garden/garden.stdout.log", "lager"),
        ("nginx_cc/nginx.error.log", "auto"),
        ("some-job/whatever.log", "auto"),
        ("/gorouter/access.log", "gorouter_access"),
    ],
)
def test_default_rule(relpath, fmt):
    rule = default_rule(relpath)
    assert rule.format == fmt and rule.format in FORMATS
    assert (rule.multiline is not None) == (fmt == "uaa")


# The modules' own functions (FORMATS holds them as they are; the encoder is the backstop): a parser bug must fail here.
PARSERS = {
    "auto": auto,
    "lager": lager.extract,
    "cloud_controller": cloud_controller.extract,
    "cc_nginx_access": cc_nginx_access.extract,
    "gorouter_access": gorouter_access.extract,
    "uaa": uaa.extract,
    "bosh_dns": bosh_dns.extract,
    "rfc3339": rfc3339.extract,
}


def test_every_registered_format_is_fuzzed():
    assert set(FORMATS) - {"raw"} == set(PARSERS)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_yield_valid_members(fmt, line):
    ts, members = PARSERS[fmt](line)
    assert ts is None or (len(ts) == 24 and ts.endswith("Z"))
    orjson.loads(b'{"a":1' + members + b"}")


# Mutations of real lines reach deep into each parser, where pure random bytes would stop at the first check.
_REAL = [GOROUTER_2021, GOROUTER_2019, GOROUTER_USUAL, CC_NGINX, CC_2016, CC_2020, REP_EPOCH, REP_RFC3339, REP_ERROR, UAA_AUDIT, BOSH_DNS]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), st.sampled_from(_REAL), st.integers(0, 400), st.binary(max_size=8))
def test_mutated_real_lines_never_raise(fmt, base, at, junk):
    at = min(at, len(base))
    line = base[:at] + junk + base[at + len(junk) :]
    ts, members = PARSERS[fmt](line)
    orjson.loads(b'{"a":1' + members + b"}")
    assert ts is None or ts.endswith("Z")


@pytest.mark.parametrize("fmt", ["lager", "cloud_controller"])
def test_data_too_deep_for_flattened_is_dropped_but_line_kept(fmt):
    deep = b'{"a":' * 21 + b"1" + b"}" * 21
    line = b'{"timestamp":"1700000000.5","log_level":"info","data":' + deep + b"}"
    ts, f = fields(fmt, line)
    assert ts == "2023-11-14T22:13:20.500Z" and not any(k.endswith(".data") for k in f)
    ok = b'{"a":' * 19 + b"1" + b"}" * 19
    ts, f = fields(fmt, line.replace(deep, ok))
    assert any(k.endswith(".data") for k in f)
