"""The classifier of `_bulk` answers, with crafted answers: what each item status means."""

from __future__ import annotations

import orjson
import pytest

from agent.bulk import AllCreated, DeadLetter, OddAnswer, all_created, classify, docs_in


def body_of(n: int) -> bytes:
    """n create actions with their sources, as the encoder writes them."""
    out = b""
    for i in range(n):
        out += b'{"create":{"_id":"f1-%d"}}\n{"message":"line %d"}\n' % (i, i)
    return out


def pair(i: int) -> list[bytes]:
    return [b'{"create":{"_id":"f1-%d"}}' % i, b'{"message":"line %d"}' % i]


def answer(*statuses: int, errors: bool = True) -> dict:
    items = []
    for s in statuses:
        res: dict = {"status": s}
        if s >= 300:
            res["error"] = {"type": f"type_{s}", "reason": f"reason {s}"}
        items.append({"create": res})
    return {"errors": errors, "items": items}


def test_no_errors_means_every_document_indexed():
    out = classify(answer(201, 201, 201, errors=False), body_of(3))
    assert (out.indexed, out.duplicates, out.retry, out.refused, out.dead, out.pushed_back) == (3, 0, [], None, [], False)
    assert out.retry_body == b""


def test_409_is_a_duplicate_not_a_failure():
    out = classify(answer(201, 409, 409), body_of(3))
    assert (out.indexed, out.duplicates, out.retry, out.dead) == (1, 2, [], [])
    assert not out.pushed_back


def test_429_and_5xx_are_retried_in_request_order_and_429_pushes_back():
    out = classify(answer(201, 429, 201, 503, 500), body_of(5))
    assert out.indexed == 2
    assert out.retry == pair(1) + pair(3) + pair(4)
    assert out.retry_body == b"\n".join(pair(1) + pair(3) + pair(4)) + b"\n"
    assert out.pushed_back
    assert out.dead == [] and out.refused is None


def test_5xx_alone_retries_without_push_back():
    out = classify(answer(502, 201), body_of(2))
    assert out.retry == pair(0)
    assert not out.pushed_back


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_are_refused_and_retried_never_dead_lettered(status):
    out = classify(answer(201, status, status), body_of(3))
    assert out.retry == pair(1) + pair(2)
    assert out.refused == (status, {"type": f"type_{status}", "reason": f"reason {status}"})
    assert out.dead == []


def test_first_refusal_is_the_one_reported():
    out = classify(answer(403, 401), body_of(2))
    assert out.refused is not None and out.refused[0] == 403


def test_other_4xx_are_dead_letters_with_their_error():
    out = classify(answer(400, 201, 404), body_of(3))
    assert out.dead == [
        DeadLetter(*pair(0), {"type": "type_400", "reason": "reason 400"}),
        DeadLetter(*pair(2), {"type": "type_404", "reason": "reason 404"}),
    ]
    assert out.indexed == 1 and out.retry == [] and out.refused is None


def test_a_mix_of_every_kind():
    out = classify(answer(201, 409, 429, 400, 401, 403, 503, 200), body_of(8))
    assert out.indexed == 2
    assert out.duplicates == 1
    assert out.retry == pair(2) + pair(4) + pair(5) + pair(6)
    assert out.refused is not None and out.refused[0] == 401
    assert [d.action for d in out.dead] == [pair(3)[0]]
    assert out.pushed_back


def test_retry_body_is_a_valid_bulk_body_of_the_retried_documents():
    out = classify(answer(429, 201, 429), body_of(3))
    lines = out.retry_body.split(b"\n")
    assert lines[-1] == b"" and docs_in(out.retry_body) == 2
    assert [orjson.loads(line) for line in lines[:-1]] == [
        {"create": {"_id": "f1-0"}}, {"message": "line 0"}, {"create": {"_id": "f1-2"}}, {"message": "line 2"},
    ]


def test_docs_in_counts_action_source_pairs():
    assert docs_in(body_of(0)) == 0
    assert docs_in(bytearray(body_of(7))) == 7


# --- answers that do not say what became of each document: never taken as indexed ------------


@pytest.mark.parametrize("odd, why", [
    ("<html><body>Service Unavailable</body></html>", "not a JSON object but text"),
    (None, "not a JSON object but nothing"),
    ([{"create": {"status": 201}}], "not a JSON object but list"),
    ({"errors": True, "items": []}, "0 items for 2 documents"),
    ({"errors": False}, "no items list"),
    ({"errors": True, "items": None}, "no items list"),
    ({"errors": False, "items": [{"create": {"status": 201}}] * 3}, "3 items for 2 documents"),
    ({"errors": False, "items": [{"create": {"status": 201}}]}, "1 items for 2 documents"),
    ({"errors": True, "items": [{"create": {"status": 201}}, {"create": {"error": {"type": "x"}}}]}, "item 1 of 2"),
    ({"errors": True, "items": [{"create": {"status": "201"}}, {"create": {"status": 201}}]}, "item 0 of 2"),
    ({"errors": True, "items": [{"create": {"status": 201}}, {"create": {"status": 100}}]}, "item 1 of 2"),
    ({"errors": True, "items": [{"create": {"status": 201}}, {}]}, "item 1 of 2"),
    ({"errors": True, "items": [{"create": {"status": 201}}, "201"]}, "item 1 of 2"),
    ({"errors": True, "items": [{"create": {"status": 201}, "index": {"status": 201}}, {"create": {"status": 201}}]},
     "item 0 of 2"),
    ({"errors": True, "items": [{"create": {"status": 201}}, {"create": {"status": True}}]}, "item 1 of 2"),
])
def test_an_answer_that_does_not_account_for_every_document_is_odd(odd, why):
    with pytest.raises(OddAnswer, match=why):
        classify(odd, body_of(2))


def test_an_odd_item_after_failed_ones_still_fails_the_whole_answer():
    """Nothing is half-applied: dead letters before the odd item are not reported either."""
    bad = answer(400, 429, 201)
    bad["items"][2] = {"create": {}}
    with pytest.raises(OddAnswer, match="item 2 of 3"):
        classify(bad, body_of(3))


def test_items_are_believed_over_the_errors_flag():
    out = classify(answer(201, 429, errors=False), body_of(2))
    assert out.indexed == 1 and out.retry == pair(1)


def test_an_error_of_another_shape_is_kept_as_its_reason():
    a = answer(400, 400)
    a["items"][0]["create"]["error"] = "mapping failed"
    del a["items"][1]["create"]["error"]
    assert classify(a, body_of(2)).dead == [DeadLetter(*pair(0), {"reason": "mapping failed"}), DeadLetter(*pair(1), {})]


def _created_bytes(n: int) -> bytes:
    return b'{"errors":false,"items":[' + b",".join([b'{"create":{"status":201}}'] * n) + b"]}"


def test_the_exact_all_created_answer_is_recognised_unparsed_and_counted():
    assert all_created(_created_bytes(3)) == AllCreated(3)
    out = classify(all_created(_created_bytes(3)), body_of(3), 3)
    assert (out.indexed, out.retry, out.dead) == (3, [], [])
    assert orjson.loads(_created_bytes(3)) == answer(201, 201, 201, errors=False)  # the same answer, parsed


@pytest.mark.parametrize("data", [
    _created_bytes(3).replace(b"201", b"409", 1),
    _created_bytes(3).replace(b",", b" ,", 1),
    _created_bytes(3)[:-1],
    _created_bytes(3).replace(b"false", b"true"),
    b'{"errors":false,"items":[]}',
    _created_bytes(2) + b" ",
], ids=["a-409", "spaced", "cut", "errors-true", "empty", "trailing"])
def test_anything_but_the_exact_bytes_is_left_to_the_parser(data):
    assert all_created(data) is None


def test_when_the_answer_and_the_callers_count_disagree_the_body_decides():
    with pytest.raises(OddAnswer, match="2 items for 3 documents"):
        classify(AllCreated(2), body_of(3), 3)
    with pytest.raises(OddAnswer, match="2 items for 3 documents"):
        classify(AllCreated(2), body_of(3))  # no count given: the body is counted
    assert classify(AllCreated(3), body_of(3), 5).indexed == 3  # a wrong count does not lose the answer
