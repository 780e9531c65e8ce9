"""Kibana saved objects: valid, self-consistent, only naming mapped fields; and the import request.

There is no Kibana in this environment: the import is checked against a recording HTTP server,
which proves the request's shape (path, headers, multipart body), not Kibana's acceptance of the objects.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import http.server
import json
import re
import threading

import pytest

from agent import kibana, template

OBJECTS = [json.loads(line) for line in kibana.OBJECTS.read_text().splitlines() if line.strip()]
BY_ID = {(o["type"], o["id"]): o for o in OBJECTS}
MAPPED = set(template.FIELDS)


def test_objects_are_kibana_8_saved_objects_with_unique_ids():
    assert [o["type"] for o in OBJECTS].count("index-pattern") == 1
    assert {o["type"] for o in OBJECTS} == {"index-pattern", "search", "visualization", "dashboard"}
    assert len(BY_ID) == len(OBJECTS)
    for o in OBJECTS:
        assert o["coreMigrationVersion"].startswith("8.") and o["attributes"]["title"]


def test_data_view_covers_the_default_target():
    (dv,) = [o for o in OBJECTS if o["type"] == "index-pattern"]
    assert dv["attributes"]["title"] == "logs-bosh-*"
    assert re.fullmatch(dv["attributes"]["title"].replace("*", ".*"), "logs-bosh-default")
    assert dv["attributes"]["timeFieldName"] == "@timestamp"


def _embedded_json(o: dict) -> list[dict]:
    attrs = o["attributes"]
    out = [json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])] if "kibanaSavedObjectMeta" in attrs else []
    for name in ("visState", "panelsJSON", "optionsJSON", "uiStateJSON"):
        if name in attrs:
            out.append(json.loads(attrs[name]))
    return out


def test_references_resolve_and_every_ref_name_is_used():
    for o in OBJECTS:
        names = set()
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in BY_ID, (o["id"], ref)
            names.add(ref["name"])
        used = set()
        for doc in _embedded_json(o):
            items = doc if isinstance(doc, list) else [doc]
            for item in items:
                if isinstance(item, dict):
                    used |= {item[k] for k in ("indexRefName", "panelRefName") if k in item}
        if "savedSearchRefName" in o["attributes"]:
            used.add(o["attributes"]["savedSearchRefName"])
        assert used == names, o["id"]


def test_dashboard_has_the_three_charts():
    (dash,) = [o for o in OBJECTS if o["type"] == "dashboard"]
    titles = {BY_ID[(r["type"], r["id"])]["attributes"]["title"] for r in dash["references"]}
    assert {"Log volume by job", "Errors over time", "gorouter 5xx by instance"} <= titles
    panels = json.loads(dash["attributes"]["panelsJSON"])
    assert len({p["panelIndex"] for p in panels}) == len(panels) == len(dash["references"])


def _kql_fields(query: str) -> set[str]:
    return set(re.findall(r"([A-Za-z@][\w.@-]*)\s*(?::|>=|<=|>|<)", query))


def named_fields(o: dict) -> set[str]:
    attrs = o["attributes"]
    names = set(attrs.get("columns", [])) | {s[0] for s in attrs.get("sort", [])}
    if "timeFieldName" in attrs:
        names.add(attrs["timeFieldName"])
    for doc in _embedded_json(o):
        if isinstance(doc, dict) and "query" in doc:
            names |= _kql_fields(doc["query"]["query"])
        for agg in doc.get("aggs", []) if isinstance(doc, dict) else []:
            if "field" in agg["params"]:
                names.add(agg["params"]["field"])
    return names


def test_every_field_named_exists_in_the_template_mapping():
    named = set().union(*(named_fields(o) for o in OBJECTS))
    assert named - MAPPED == set()
    # The extraction finds fields in each place they occur, so the check above has something to check.
    assert {"@timestamp", "bosh.job", "log.level", "http.response.status_code", "user_agent.original", "bosh.instance.id"} <= named


def test_field_extraction_would_catch_an_unmapped_field():
    bad = json.loads(json.dumps(BY_ID[("search", "log-shipper-gorouter-5xx")]))
    bad["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"] = json.dumps(
        {"query": {"query": "status >= 500", "language": "kuery"}, "filter": []}
    )
    assert "status" in named_fields(bad) - MAPPED


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict] = []
    reply: tuple[int, bytes] = (200, b"{}")

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        # self.headers is case-insensitive, as HTTP header names are (urllib sends "Kbn-xsrf").
        type(self).requests.append({"path": self.path, "headers": self.headers, "body": self.rfile.read(length)})
        status, body = type(self).reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def recorder():
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder
    server.shutdown()
    server.server_close()


def test_import_posts_multipart_ndjson_with_xsrf_header(recorder):
    url, rec = recorder
    rec.reply = (200, json.dumps({"success": True, "successCount": len(OBJECTS)}).encode())
    answer = kibana.import_objects(url + "/", username="admin", password="s3cret", space="ops")
    assert answer["successCount"] == len(OBJECTS)
    (req,) = rec.requests
    assert req["path"] == "/s/ops/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["kbn-xsrf"] == "true"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + req["headers"]["Content-Type"].encode() + b"\r\n\r\n" + req["body"]
    )
    (part,) = list(msg.iter_parts())
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_filename() == "objects.ndjson"
    assert part.get_payload(decode=True) == kibana.OBJECTS.read_bytes()


def test_import_with_api_key_and_default_space(recorder):
    url, rec = recorder
    rec.reply = (200, b'{"success":true,"successCount":8}')
    kibana.import_objects(url, api_key="abc==")
    (req,) = rec.requests
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["Authorization"] == "ApiKey abc=="


def test_import_reports_refused_objects(recorder):
    url, rec = recorder
    rec.reply = (200, b'{"success":false,"successCount":7,"errors":[{"id":"x","type":"visualization","error":{"type":"missing_references"}}]}')
    with pytest.raises(kibana.KibanaImportError, match="visualization/x: missing_references"):
        kibana.import_objects(url)


def test_import_reports_http_errors_and_unreachable_kibana(recorder):
    url, rec = recorder
    rec.reply = (401, b'{"statusCode":401,"message":"Unauthorized"}')
    with pytest.raises(kibana.KibanaImportError, match="401.*Unauthorized"):
        kibana.import_objects(url)
    with pytest.raises(kibana.KibanaImportError, match="not reachable"):
        kibana.import_objects("http://127.0.0.1:9", timeout_s=2)
