"""The fault proxy and the TLS proxy themselves, against the real node.

Faults are only worth testing the shipper with if they really happen; these tests pin that
each mode does what it says and that everything not faulted really reaches the node.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.request

import pytest
from elasticsearch import (
    ApiError,
    AuthenticationException,
    ConnectionError as EsConnectionError,
    ConnectionTimeout,
    Elasticsearch,
    SSLError,
)

from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.es


def client(url: str, **kwargs) -> Elasticsearch:
    # No retries: one call is exactly one request, so the proxy's counts are exact.
    return Elasticsearch(url, max_retries=0, **{"request_timeout": 30, **kwargs})


def index_ops(prefix: str, n: int) -> list[dict]:
    ops: list[dict] = []
    for i in range(n):
        ops += [{"index": {"_id": f"{prefix}{i}"}}, {"message": f"line {i}"}]
    return ops


def ids_in(es: Elasticsearch, index: str) -> set[str]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=1000, source=False)["hits"]["hits"]
    return {h["_id"] for h in hits}


def test_pass_through_bulk_is_indexed_over_one_keep_alive_connection(fault_proxy: FaultProxy, es, index_name):
    c = client(fault_proxy.url)
    for batch in range(3):
        assert c.bulk(operations=index_ops(f"b{batch}-", 10), index=index_name)["errors"] is False

    assert len(ids_in(es, index_name)) == 30
    assert fault_proxy.seen("/_bulk") == 3
    assert fault_proxy.connections == 1


def test_refuse_gives_connection_error_then_recovers_on_the_same_port(fault_proxy: FaultProxy):
    c = client(fault_proxy.url)
    c.cluster.health()  # leaves a pooled keep-alive connection that refuse() must cut too
    port = fault_proxy.port

    fault_proxy.refuse()
    with pytest.raises(EsConnectionError):
        c.cluster.health()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)

    fault_proxy.pass_through()
    assert fault_proxy.port == port
    assert c.cluster.health()["status"] in ("green", "yellow")


def test_drop_reads_the_request_and_closes_without_response(fault_proxy: FaultProxy, es, index_name):
    c = client(fault_proxy.url)
    fault_proxy.drop(n=1)

    with pytest.raises(EsConnectionError):
        c.bulk(operations=index_ops("dropped-", 5), index=index_name)
    assert fault_proxy.seen("/_bulk") == 1  # it was read (not refused) and then dropped

    assert c.bulk(operations=index_ops("kept-", 5), index=index_name)["errors"] is False
    assert ids_in(es, index_name) == {f"kept-{i}" for i in range(5)}  # the dropped one never got through


def test_status_429_twice_then_passes(fault_proxy: FaultProxy, es, index_name):
    c = client(fault_proxy.url)
    fault_proxy.status(429, n=2)
    assert c.cluster.health()["status"] in ("green", "yellow")  # only /_bulk is faulted

    for _ in range(2):
        with pytest.raises(ApiError) as e:
            c.bulk(operations=index_ops("x", 3), index=index_name)
        assert e.value.meta.status == 429
        assert e.value.body["error"]["type"] == "es_rejected_execution_exception"
        assert e.value.meta.headers["x-elastic-product"] == "Elasticsearch"

    assert c.bulk(operations=index_ops("x", 3), index=index_name)["errors"] is False
    assert len(ids_in(es, index_name)) == 3
    assert fault_proxy.seen("/_bulk") == 3


@pytest.mark.parametrize(
    "code, error_type",
    [(401, "security_exception"), (403, "cluster_block_exception"), (413, None), (503, "cluster_block_exception")],
)
def test_status_answers_with_the_nodes_error_shape(fault_proxy: FaultProxy, index_name, code, error_type):
    fault_proxy.status(code)
    with pytest.raises(ApiError) as e:
        client(fault_proxy.url).bulk(operations=index_ops("x", 1), index=index_name)

    assert e.value.meta.status == code
    assert e.value.meta.headers["content-type"] == "application/json"
    if error_type is None:
        assert not e.value.body  # the HTTP layer's 413 carries no body
    else:
        assert e.value.body["error"]["type"] == error_type
        assert e.value.body["status"] == code


def test_latency_delays_responses_until_cleared(fault_proxy: FaultProxy):
    fault_proxy.latency(0.5)
    t0 = time.monotonic()
    client(fault_proxy.url).cluster.health()
    assert time.monotonic() - t0 >= 0.5
    with pytest.raises(ConnectionTimeout):
        client(fault_proxy.url, request_timeout=0.2).cluster.health()

    fault_proxy.pass_through()
    t0 = time.monotonic()
    client(fault_proxy.url).cluster.health()
    assert time.monotonic() - t0 < 0.5


def test_item_429_rejects_exactly_the_selected_items_and_indexes_the_rest(fault_proxy: FaultProxy, es, index_name):
    es.index(index=index_name, id="gone-2", document={"message": "pre"})
    es.index(index=index_name, id="gone-4", document={"message": "pre"})
    ops: list[dict] = [
        {"index": {"_id": "a0"}}, {"message": "0"},
        {"create": {"_id": "a1"}}, {"message": "1"},
        {"delete": {"_id": "gone-2"}},  # rejected (3rd): must survive
        {"index": {"_index": index_name, "_id": "a3"}}, {"message": "3"},
        {"delete": {"_id": "gone-4"}},  # kept: must be deleted; no source line must not shift the pairs
        {"create": {"_id": "a5"}}, {"message": "5"},  # rejected (6th)
        {"index": {"_id": "a6"}}, {"message": "6"},
        {"index": {"_id": "a7"}}, {"message": "7"},
        {"index": {"_id": "a8"}}, {"message": "8"},  # rejected (9th)
        {"index": {"_id": "a9"}}, {"message": "9"},
    ]
    fault_proxy.item_429(every_nth=3, n=1)

    r = client(fault_proxy.url).bulk(operations=ops, index=index_name)

    assert r["errors"] is True
    assert [next(iter(i.values()))["status"] for i in r["items"]] == [201, 201, 429, 201, 200, 429, 201, 201, 429, 201]
    assert [next(iter(i)) for i in r["items"]] == ["index", "create", "delete", "index", "delete", "create",
                                                   "index", "index", "index", "index"]
    for item in (r["items"][2]["delete"], r["items"][5]["create"], r["items"][8]["index"]):
        assert item["error"]["type"] == "es_rejected_execution_exception"
        assert item["_index"] == index_name
    assert ids_in(es, index_name) == {"a0", "a1", "gone-2", "a3", "a6", "a7", "a9"}
    assert fault_proxy.rejected_items == 3

    # n=1: the retry of the rejected items goes through untouched.
    rejected = [{"delete": {"_id": "gone-2"}}, {"create": {"_id": "a5"}}, {"message": "5"}, {"index": {"_id": "a8"}}, {"message": "8"}]
    retry = client(fault_proxy.url).bulk(operations=rejected, index=index_name)
    assert retry["errors"] is False
    assert ids_in(es, index_name) == {"a0", "a1", "a3", "a5", "a6", "a7", "a8", "a9"}


def test_item_429_edits_a_gzip_request_body(fault_proxy: FaultProxy, es, index_name):
    ndjson = "".join(json.dumps(op) + "\n" for op in index_ops("g", 10)).encode()
    request = urllib.request.Request(
        f"{fault_proxy.url}/{index_name}/_bulk",
        data=gzip.compress(ndjson),
        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
    )
    fault_proxy.item_429(fraction=0.5, n=1)

    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["X-Elastic-Product"] == "Elasticsearch"
        body = json.loads(resp.read())  # plain JSON: the proxy asked the node for an uncompressed answer

    assert [i["index"]["status"] for i in body["items"]] == [201, 429] * 5
    assert ids_in(es, index_name) == {f"g{i}" for i in range(0, 10, 2)}

    # Pass-through forwards the gzip body as is; the node must still decode it.
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.loads(gzip.decompress(resp.read()))["errors"] is False
    assert ids_in(es, index_name) == {f"g{i}" for i in range(10)}


def test_tls_proxy_accepts_the_right_ca_and_password(tls_proxy, es, index_name):
    c = client(tls_proxy.url, ca_certs=tls_proxy.ca_file, basic_auth=(tls_proxy.username, tls_proxy.password))
    assert c.bulk(operations=index_ops("t", 4), index=index_name)["errors"] is False
    assert len(ids_in(es, index_name)) == 4


def test_tls_proxy_fails_verification_with_the_wrong_ca(tls_proxy):
    c = client(tls_proxy.url, ca_certs=tls_proxy.wrong_ca_file, basic_auth=(tls_proxy.username, tls_proxy.password))
    with pytest.raises(SSLError) as e:
        c.cluster.health()
    assert "CERTIFICATE_VERIFY_FAILED" in repr(e.value)  # str() is only "TLS error"


def test_tls_proxy_rejects_a_wrong_password(tls_proxy):
    c = client(tls_proxy.url, ca_certs=tls_proxy.ca_file, basic_auth=(tls_proxy.username, "not-the-password"))
    with pytest.raises(AuthenticationException) as e:
        c.cluster.health()
    assert e.value.meta.status == 401
