"""The classifier of `_bulk` answers, with crafted answers: what each item status means."""

from __future__ import annotations

import orjson
import pytest

from agent.bulk import DeadLetter, classify, docs_in


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
