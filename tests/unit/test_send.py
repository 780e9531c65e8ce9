"""Sender pieces that need no Elasticsearch: PushBack's AIMD concurrency, error descriptions, splitting."""

from __future__ import annotations

import threading

from elastic_transport import TlsError

from agent.send import PushBack, _halves, describe, redact


def test_pushback_halves_on_push_back_and_grows_back_by_one_per_ten_successes():
    pb = PushBack(8)
    assert pb.limit == 8
    pb.pushed_back()
    assert pb.limit == 4
    pb.pushed_back()
    pb.pushed_back()
    assert pb.limit == 1
    pb.pushed_back()
    assert pb.limit == 1  # never below one request in flight
    for _ in range(9):
        pb.succeeded()
    assert pb.limit == 1  # additive increase needs a run of ten
    pb.succeeded()
    assert pb.limit == 2
    for _ in range(5):
        pb.succeeded()
    pb.pushed_back()  # a push-back resets the run
    assert pb.limit == 1
    for _ in range(9):
        pb.succeeded()
    assert pb.limit == 1
    for _ in range(200):
        pb.succeeded()
    assert pb.limit == 8  # back to the ceiling, and no further


def test_pushback_bounds_requests_in_flight_and_wakes_waiters_when_it_grows():
    pb = PushBack(2)
    pb.pushed_back()  # limit 1
    entered = threading.Event()
    pb.__enter__()

    def second():
        with pb:
            entered.set()

    t = threading.Thread(target=second, daemon=True)
    t.start()
    assert not entered.wait(0.3)  # held back: one in flight already
    assert pb.active == 1
    for _ in range(10):
        pb.succeeded()  # limit grows to 2: the waiter may go
    assert entered.wait(10)
    t.join(10)
    pb.__exit__(None, None, None)
    assert pb.active == 0


def test_describe_names_the_tls_root_cause_and_masks_credentials():
    e = TlsError("TLS error")
    e.__cause__ = OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "CERTIFICATE_VERIFY_FAILED" in describe(e)
    assert describe(ValueError("https://user:s3cret@es:9200 down")) == "https://***@es:9200 down"
    assert "s3cret" not in redact("http://u:s3cret@h")
    # A password may hold an @: everything up to the last one before the host is userinfo.
    assert redact("http://shipper:Pa55@word@host:9200/x") == "http://***@host:9200/x"
    assert redact("see https://es:9200/_bulk and http://a@b/c@d") == "see https://es:9200/_bulk and http://***@b/c@d"


def test_halves_cut_a_bulk_body_at_a_document_boundary():
    body = b"".join(b'{"create":{"_id":"f-%d"}}\n{"m":%d}\n' % (i, i) for i in range(5))
    first, second = _halves(bytearray(body))
    assert first + second == body
    assert first.count(b"\n") == 4 and second.count(b"\n") == 6  # 2 documents, then 3
    assert _halves(b'{"create":{}}\n{"m":1}\n') == []  # one document cannot be split


def test_dead_letter_file_is_private_and_bounded(tmp_path):
    from agent.config import DeadLetterConfig
    from agent.send import DeadLetters

    dl = DeadLetters(None, DeadLetterConfig(kind="file", max_file_bytes=4096), str(tmp_path))
    for i in range(40):
        dl.put([(b'{"message":"refused %d %s"}' % (i, b"x" * 100), {"type": "mapper_parsing_exception", "reason": "bad"})])
    live, old = tmp_path / "dead-letter.jsonl", tmp_path / "dead-letter.jsonl.1"
    assert live.stat().st_mode & 0o777 == 0o600 and old.exists()
    assert live.stat().st_size <= 4096 and old.stat().st_size <= 4096
    assert b"refused 39" in live.read_bytes()  # the newest is always kept
