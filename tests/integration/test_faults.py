"""Issue 4's promise: whatever Elasticsearch (or the network) does, once the fault ends every
line written is indexed exactly once. The real agent runs as a subprocess against the real
node, through the fault proxy or the TLS proxy; nothing here fakes Elasticsearch."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agentproc import AgentProcess, all_messages, count, registry_entries, wait_caught_up, write_config
from tests.support.esnode import free_port
from tests.support.faultproxy import FaultProxy

FILES = ("gorouter/gorouter.stdout.log", "uaa/uaa.log")


# --- helpers ------------------------------------------------------------------------------


def _files(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "sys" / "log"
    files = [root / f for f in FILES]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
    return root, files


def _write(files: list[Path], start: int, n: int, tag: str = "") -> list[str]:
    """n lines per file, numbered from `start`; returns the messages written."""
    out = []
    for f in files:
        with open(f, "a", encoding="utf-8") as fh:
            for i in range(start, start + n):
                msg = f"{tag}line {i:06d} of {f.parent.name}: ünïcode 🚀"
                fh.write(msg + "\n")
                out.append(msg)
    return out


def _config(tmp_path: Path, hosts: list[str], root: Path, index: str, **overrides) -> Path:
    overrides.setdefault("formats", [{"glob": "**", "format": "raw"}])
    es = {"hosts": hosts, "request_timeout_s": 10, **overrides.pop("elasticsearch", {})}
    return write_config(tmp_path / "config.json", hosts[0], root, tmp_path / "state", index,
                        elasticsearch=es, **overrides)


def _wait(what: str, cond, timeout: float = 60.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _events(agent: AgentProcess) -> list[dict]:
    out = []
    for line in agent.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    return out


def _has_event(agent: AgentProcess, event: str, **fields) -> bool:
    return any(e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in _events(agent))


def _assert_exactly_once(es, index: str, expected: list[str]) -> None:
    docs = all_messages(es, index, ["message"])
    got = Counter(d["message"] for d in docs)
    dupes = {m: n for m, n in got.items() if n > 1}
    assert not dupes, f"indexed more than once: {list(dupes.items())[:5]}"
    missing = set(expected) - set(got)
    assert not missing, f"{len(missing)} lines never indexed, e.g. {sorted(missing)[:3]}"
    assert len(docs) == len(expected), f"{len(docs)} documents for {len(expected)} lines"


def _settled(es, index: str, tmp_path: Path, files: list[Path], expected: list[str], timeout: float = 90) -> None:
    """Registry caught up with the files, then the index holds every line exactly once."""
    wait_caught_up(tmp_path / "state", files, timeout=timeout)
    _assert_exactly_once(es, index, expected)


def _no_errors(agent: AgentProcess) -> None:
    bad = [e for e in _events(agent) if e.get("level") == "error"]
    assert not bad, bad


# --- transport faults -----------------------------------------------------------------------


def test_outage_while_lines_are_written_then_back(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    expected = _write(files, 0, 300)
    fault_proxy.refuse()
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _wait("the agent to report retries", lambda: _has_event(agent, "bulk_retry"))
        expected += _write(files, 300, 300)  # more lines arrive during the outage
        time.sleep(1.0)
        expected += _write(files, 600, 200)
        assert count(es, index_name) == 0
        assert agent.alive()
        fault_proxy.pass_through()
        _settled(es, index_name, tmp_path, files, expected)
        expected += _write(files, 800, 50)  # and it keeps shipping afterwards
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


def test_connection_dropped_mid_request(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    fault_proxy.drop(n=3, paths=("/_bulk",))
    expected = _write(files, 0, 500)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        assert fault_proxy.seen("/_bulk") >= 4  # three dropped, then the ones that got through
        assert _has_event(agent, "bulk_retry")
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


def test_latency_beyond_the_request_timeout_replays_without_duplicates(es, fault_proxy, index_name, tmp_path):
    """The node indexes the batch, but the answer comes too late: the agent times out and sends it
    again. Those documents are there already (409 on create), so nothing is indexed twice."""
    root, files = _files(tmp_path)
    expected = _write(files, 0, 10)
    cfg = _config(tmp_path, [fault_proxy.url], root, index_name, elasticsearch={"request_timeout_s": 1.0})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)  # template installed, first lines in
        fault_proxy.latency(2.5)
        expected += _write(files, 10, 400)
        _wait("documents indexed behind the slow proxy", lambda: count(es, index_name) > 0, timeout=90)
        _wait("a timed-out request to be retried", lambda: _has_event(agent, "bulk_retry"))
        fault_proxy.pass_through()
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


def test_plain_latency_only_slows_things_down(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    fault_proxy.latency(0.5)
    expected = _write(files, 0, 300)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        expected += _write(files, 300, 300)
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    assert not _has_event(agent, "bulk_retry")


def test_a_slow_node_that_keeps_acknowledging_never_sends_batches_to_the_spool(es, fault_proxy, index_name, tmp_path):
    """Issue 12: the spool is for a node that takes nothing. A node slow to answer (1.5 s a
    request) but answering, with the in-flight budget spent the whole time, is waited for."""
    root, files = _files(tmp_path)
    fault_proxy.latency(1.5)
    expected = _write(files, 0, 2_000)  # ~40 batches of ~100 documents, 2 in flight
    batch = {"max_docs": 500, "max_bytes": 65536, "max_inflight_bytes": 131072, "concurrency": 2}
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name, batch=batch),
                         tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected, timeout=120)
    finally:
        assert agent.stop() == 0
    assert fault_proxy.seen() >= 20  # the budget was spent over and over, each answer 1.5 s late
    assert not _has_event(agent, "spooling"), agent.log()[-2000:]
    assert not any(p.name.endswith(".seg") for p in (tmp_path / "state" / "spool").glob("*"))


# --- Elasticsearch pushing back -------------------------------------------------------------


def test_whole_request_429s_are_retried(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    fault_proxy.status(429, n=4)
    expected = _write(files, 0, 400)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        assert fault_proxy.seen("/_bulk") >= 5
        retries = [e for e in _events(agent) if e.get("event") == "bulk_retry"]
        assert retries and "http_429" in retries[0]["msg"]
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


def test_per_item_429s_are_retried_and_the_rest_kept(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    fault_proxy.item_429(every_nth=3, n=5)
    expected = _write(files, 0, 600)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        assert fault_proxy.rejected_items > 0
        assert _has_event(agent, "bulk_retry")
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


def test_413_splits_the_batch_and_still_indexes_once(es, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    expected = _write(files, 0, 1000)
    fault_proxy.status(413, n=1)
    # One big batch so the split halves are real batches of the same documents.
    cfg = _config(tmp_path, [fault_proxy.url], root, index_name, batch={"flush_interval_s": 2.0})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        assert _has_event(agent, "bulk_too_large")
        assert fault_proxy.seen("/_bulk") >= 3  # the refused one, then two halves
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_keeps_retrying_logs_clearly_and_drops_nothing(es, fault_proxy, index_name, tmp_path, status):
    root, files = _files(tmp_path)
    fault_proxy.status(status)  # until fixed
    expected = _write(files, 0, 300)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _wait("es_refused in the agent log", lambda: _has_event(agent, "es_refused", status=status))
        refused = next(e for e in _events(agent) if e.get("event") == "es_refused")
        assert refused["level"] == "error"
        assert "credentials" in refused["msg"] and "nothing dropped" in refused["msg"]
        seen = fault_proxy.seen("/_bulk")
        _wait("the agent to keep retrying", lambda: fault_proxy.seen("/_bulk") > seen + 1)
        expected += _write(files, 300, 100)
        assert count(es, index_name) == 0
        assert agent.alive()
        fault_proxy.pass_through()  # credentials fixed
        _settled(es, index_name, tmp_path, files, expected)
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
    finally:
        assert agent.stop() == 0


def test_write_block_on_the_real_node_is_waited_out_not_dead_lettered(es, es_node, index_name, tmp_path):
    """A real refusal from the node itself: an index write block (what a full disk sets) answers
    every bulk item with 403 cluster_block_exception. That is temporary: retry, never dead-letter."""
    es.indices.create(index=index_name)
    es.indices.put_settings(index=index_name, settings={"index.blocks.write": True})
    root, files = _files(tmp_path)
    expected = _write(files, 0, 200)
    agent = AgentProcess(_config(tmp_path, [es_node.url], root, index_name), tmp_path / "agent.log").start()
    try:
        _wait("es_refused in the agent log", lambda: _has_event(agent, "es_refused"))
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
        assert count(es, index_name) == 0
        es.indices.put_settings(index=index_name, settings={"index.blocks.write": False})
        _settled(es, index_name, tmp_path, files, expected)
        assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
    finally:
        assert agent.stop() == 0


# --- documents refused for good -------------------------------------------------------------

LAGER_LINE = '{"timestamp":"1700000000.123456789","source":"rep","message":"rep.started","log_level":1,"data":{}}'


@pytest.mark.parametrize("kind", ["file", "index"])
def test_mapping_conflict_dead_letters_one_line_and_ships_the_rest(es, es_node, index_name, tmp_path, kind):
    """The real node refuses one document: the target already maps log.level as an integer, and
    only the one lager line carries a log.level ("info"). It lands in the dead-letter target with
    its error; the lines around it are indexed."""
    es.indices.create(index=index_name, mappings={"properties": {"log": {"properties": {"level": {"type": "integer"}}}}})
    dead_index = f"{index_name}-dead"
    root, files = _files(tmp_path)
    before = _write(files[:1], 0, 100)
    with open(files[0], "a") as f:
        f.write(LAGER_LINE + "\n")
    after = _write(files[:1], 100, 100)
    cfg = _config(tmp_path, [es_node.url], root, index_name, formats=[{"glob": "**", "format": "lager"}],
                  dead_letter={"kind": kind, "index": dead_index})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files[:1], before + after)
        assert _has_event(agent, "dead_lettered", count=1)
        if kind == "file":
            lines = (tmp_path / "state" / "dead-letter.jsonl").read_bytes().splitlines()
            dead = [orjson.loads(line) for line in lines]
        else:
            assert not (tmp_path / "state" / "dead-letter.jsonl").exists()
            dead = [d for d in all_messages(es, dead_index)]
        assert len(dead) == 1
        assert dead[0]["error.type"] == "document_parsing_exception" or "pars" in dead[0]["error.type"]
        assert "log.level" in dead[0]["error.message"]
        original = orjson.loads(dead[0]["event.original"])
        assert original["message"] == LAGER_LINE
        assert original["log.level"] == "info"
        # Restarting does not send it again: the offset moved past it.
        assert agent.stop() == 0
        agent = AgentProcess(cfg, tmp_path / "agent.log").start()
        more = _write(files[:1], 200, 10)
        _settled(es, index_name, tmp_path, files[:1], before + after + more)
        # The log file is appended to across both runs: still only the one dead letter.
        assert sum(1 for e in _events(agent) if e.get("event") == "dead_lettered") == 1
    finally:
        assert agent.stop() == 0


# --- TLS, auth, failover --------------------------------------------------------------------


def test_tls_with_basic_auth_right_ca(es, tls_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    expected = _write(files, 0, 300)
    cfg = _config(tmp_path, [tls_proxy.url], root, index_name,
                  elasticsearch={"ca_file": str(tls_proxy.ca_file), "username": tls_proxy.username,
                                 "password": tls_proxy.password})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    _no_errors(agent)
    assert tls_proxy.password not in agent.log()


def test_tls_wrong_ca_fails_clearly_then_ships_everything_once_fixed(es, tls_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    expected = _write(files, 0, 300)
    es_cfg = {"ca_file": str(tls_proxy.wrong_ca_file), "username": tls_proxy.username, "password": tls_proxy.password}
    cfg = _config(tmp_path, [tls_proxy.url], root, index_name, elasticsearch=es_cfg)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _wait("a TLS verification error in the agent log",
              lambda: any("CERTIFICATE_VERIFY_FAILED" in orjson.dumps(e).decode() for e in _events(agent)))
        tls = next(e for e in _events(agent) if "CERTIFICATE_VERIFY_FAILED" in orjson.dumps(e).decode())
        assert tls["level"] == "error" and tls["event"] == "es_tls_failed", tls
        assert "ca_file" in tls["msg"]
        assert count(es, index_name) == 0
        assert agent.alive()
    finally:
        assert agent.stop() == 0
    assert tls_proxy.password not in agent.log()

    es_cfg["ca_file"] = str(tls_proxy.ca_file)
    cfg = _config(tmp_path, [tls_proxy.url], root, index_name, elasticsearch=es_cfg)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        expected += _write(files, 300, 50)
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    assert tls_proxy.password not in agent.log()


def test_tls_wrong_password_is_refused_and_never_logged(es, tls_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    _write(files, 0, 50)
    wrong = "not-the-" + tls_proxy.password
    cfg = _config(tmp_path, [tls_proxy.url], root, index_name,
                  elasticsearch={"ca_file": str(tls_proxy.ca_file), "username": tls_proxy.username, "password": wrong})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _wait("es_refused in the agent log", lambda: _has_event(agent, "es_refused", status=401))
        assert count(es, index_name) == 0
    finally:
        assert agent.stop() == 0
    assert wrong not in agent.log()
    assert tls_proxy.password not in agent.log()


def test_failover_to_the_next_host(es, es_node, fault_proxy, index_name, tmp_path):
    root, files = _files(tmp_path)
    fault_proxy.refuse()
    expected = _write(files, 0, 400)
    agent = AgentProcess(_config(tmp_path, [fault_proxy.url, es_node.url], root, index_name),
                         tmp_path / "agent.log").start()
    try:
        _settled(es, index_name, tmp_path, files, expected)
        expected += _write(files, 400, 200)
        _settled(es, index_name, tmp_path, files, expected)
    finally:
        assert agent.stop() == 0
    _no_errors(agent)


# --- odd answers from Elasticsearch (issue 14) -----------------------------------------------

HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in to continue</body></html>"
MIB = 1024 * 1024


@dataclass
class OddCase:
    fault: Callable[[FaultProxy], None]  # how the proxy answers /_bulk
    cause: str  # the retry cause the agent reports
    event: str  # the log event that names the problem
    forwarded: bool = False  # the node really indexes the documents; only the answer is wrong


UNUSABLE = ("unusable_answer", "bulk_answer_unusable")
ODD_ANSWERS = {
    "invalid_json": OddCase(lambda p: p.answer(b'{"errors":false,"items":[{"create":{"status":201}'), *UNUSABLE),
    "text_html": OddCase(lambda p: p.answer(HTML, content_type="text/html"), *UNUSABLE),
    "unknown_content_type": OddCase(
        lambda p: p.answer(b"\x00\xff\xfe", content_type="application/octet-stream"), *UNUSABLE),
    "errors_without_items": OddCase(lambda p: p.answer(b'{"errors":true,"items":[]}'), *UNUSABLE),
    "more_items_than_documents": OddCase(
        lambda p: p.mangle(lambda r: {**r, "items": r["items"] + r["items"][:1]}), *UNUSABLE, forwarded=True),
    "fewer_items_than_documents": OddCase(
        lambda p: p.mangle(lambda r: {**r, "items": r["items"][:-1]}), *UNUSABLE, forwarded=True),
    "item_without_status": OddCase(
        lambda p: p.mangle(lambda r: {**r, "errors": False, "items": [{"create": {}}] + r["items"][1:]}),
        *UNUSABLE, forwarded=True),
    "answer_of_400_mb": OddCase(lambda p: p.huge(400 * MIB), "answer_too_large", "bulk_answer_too_large"),
    "answer_of_400_mb_chunked": OddCase(lambda p: p.huge(400 * MIB, chunked=True),
                                        "answer_too_large", "bulk_answer_too_large"),
    "answer_trickled_a_byte_at_a_time": OddCase(lambda p: p.trickle(0.5), "deadline", "bulk_deadline_passed"),
}


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _retries(port: int, cause: str) -> float:
    text = _get(port, "/metrics")[1].decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "log_shipper_retries_total" and s.labels.get("cause") == cause)


def _healthz(port: int) -> tuple[int, list[str]]:
    code, body = _get(port, "/healthz")
    return code, orjson.loads(body)["reasons"]


def _acked(tmp_path: Path, files: list[Path]) -> dict[str, int]:
    names = {str(f) for f in files}
    return {e["path"]: e["offset"] for e in registry_entries(tmp_path / "state") if e["path"] in names}


@pytest.mark.parametrize("case", list(ODD_ANSWERS))
def test_an_odd_answer_is_retried_never_acknowledged_never_fatal(es, fault_proxy, index_name, tmp_path, case):
    """Whatever comes back instead of a proper bulk answer, the agent stays up, acknowledges
    nothing, says what is wrong, and once a real answer comes back ships every line exactly once."""
    odd = ODD_ANSWERS[case]
    cause, event = odd.cause, odd.event
    root, files = _files(tmp_path)
    expected = _write(files, 0, 200)
    port = free_port()
    cfg = _config(tmp_path, [fault_proxy.url], root, index_name, elasticsearch={"request_timeout_s": 2.0},
                  health={"enabled": True, "port": port, "max_lag_age_s": 2.0})
    odd.fault(fault_proxy)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        _wait(f"retries with cause {cause}", lambda: _port_up(port) and _retries(port, cause) >= 3, timeout=90)
        _wait("/healthz to say bulk requests fail",
              lambda: any("no bulk request has succeeded" in r for r in _healthz(port)[1]))
        assert _healthz(port)[0] == 503
        named = [e for e in _events(agent) if e.get("event") == event]
        assert named and named[0].get("hint"), named
        assert any(cause in e.get("msg", "") for e in _events(agent) if e.get("event") == "bulk_retry")
        assert agent.alive()
        _wait("the registry to list both files", lambda: len(_acked(tmp_path, files)) == len(files))
        assert _acked(tmp_path, files) == {str(f): 0 for f in files}  # nothing acknowledged
        if not odd.forwarded:  # scripted answers: the node never saw a document
            assert count(es, index_name) == 0
        fault_proxy.pass_through()
        expected += _write(files, 200, 100)
        _settled(es, index_name, tmp_path, files, expected)
        _wait("/healthz healthy again", lambda: _healthz(port)[0] == 200)
        assert agent.alive()
    finally:
        assert agent.stop() == 0
    assert not _has_event(agent, "sender_crashed")


def _port_up(port: int) -> bool:
    try:
        return _get(port, "/healthz")[0] in (200, 503)
    except OSError:
        return False
