"""The sender's reading of the real node's `_bulk` answers: the all-created answer is recognised by
its bytes (no decode of one object per document), anything else is parsed and classified."""

from __future__ import annotations

from agent import bulk
from agent.config import ElasticsearchConfig
from agent.send import BULK_PARAMS, client


def _body(index: str, ids: list[str]) -> bytes:
    return b"".join(b'{"create":{"_index":"%s","_id":"%s"}}\n{"message":"m %s"}\n' % (index.encode(), i.encode(), i.encode())
                    for i in ids)


def _post(es, body: bytes):
    return es.perform_request("POST", "/_bulk", body=body, params=BULK_PARAMS,
                              headers={"content-type": "application/x-ndjson", "accept": "application/json"}).body


def test_the_real_nodes_all_created_answer_takes_the_byte_path(es_node, index_name):
    es = client(ElasticsearchConfig(hosts=[es_node.url]))
    ids = [f"f-{i}" for i in range(500)]
    answer = _post(es, _body(index_name, ids))
    assert answer == bulk.AllCreated(500)  # Elasticsearch writes exactly the bytes all_created expects
    assert bulk.classify(answer, _body(index_name, ids), 500).indexed == 500
    again = _post(es, _body(index_name, ids[:3] + ["f-new"]))  # three replays: 409s, parsed
    assert isinstance(again, dict)
    out = bulk.classify(again, _body(index_name, ids[:3] + ["f-new"]))
    assert (out.indexed, out.duplicates) == (1, 3)
