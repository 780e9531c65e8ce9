"""Issue 13: least privilege and TLS against a real node with security on.

The agent's key may only create documents (a file-realm user whose role has `create_doc` on
logs-*); templates and indices come from `log-shipper setup` with an admin key. TLS is the node's
own (xpack.security.http.ssl), verified against the test CA.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from tests.support.agentproc import AgentProcess, wait_caught_up, write_config

pytestmark = pytest.mark.es


def _cfg(tmp: Path, name: str, node_url: str, ca: str, user: str, password: str, index: str) -> Path:
    root = tmp / "log"
    (root / "uaa").mkdir(parents=True, exist_ok=True)
    return write_config(tmp / f"{name}.json", node_url, root, tmp / "state", index,
                        elasticsearch={"username": user, "password": password, "ca_file": ca},
                        dead_letter={"kind": "index", "index": f"{index}-deadletter"},
                        fleet={"enabled": True, "interval_s": 5.0, "index": f"{index}-agents"})


def _admin(node, secure) -> Elasticsearch:
    return Elasticsearch(node.url, basic_auth=secure.admin, ca_certs=secure.ca_file, request_timeout=30)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120)


def _lines(path: Path, n: int) -> None:
    with open(path, "a") as f:
        f.writelines(f"[2026-12-01T10:00:{i % 60:02d}.000Z] uaa - 1 [main] .... INFO --- Audit: line {i}\n"
                     for i in range(n))


def _wait_count(es: Elasticsearch, index: str, n: int, timeout: float = 60) -> int:
    deadline, got = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        if es.indices.exists(index=index):
            es.indices.refresh(index=index)
            got = es.count(index=index)["count"]
            if got >= n:
                return got
        time.sleep(0.3)
    return got


def test_create_doc_key_ships_after_setup_with_an_admin_key(secure_es, tmp_path):
    node, secure, _ = secure_es
    index = f"logs-sec-{uuid.uuid4().hex[:8]}"
    pw, _role = secure.users["shipper"]
    admin_cfg = _cfg(tmp_path, "admin", node.url, secure.ca_file, *secure.admin, index)
    run_cfg = _cfg(tmp_path, "run", node.url, secure.ca_file, "shipper", pw, index)
    es = _admin(node, secure)

    setup = _cli("setup", "--config", str(admin_cfg))
    assert setup.returncode == 0, setup.stderr
    assert f"indices created: {index}, {index}-deadletter, {index}-agents" in setup.stdout
    assert es.indices.get_index_template(name=f"log-shipper-{index}")["index_templates"]

    log = tmp_path / "log" / "uaa" / "uaa.log"
    _lines(log, 300)
    agent = AgentProcess(run_cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(tmp_path / "state", [log])
        assert _wait_count(es, index, 300) == 300
        assert _wait_count(es, f"{index}-agents", 1) >= 1  # the fleet status with the same key
    finally:
        assert agent.stop() == 0
    text = agent.log()
    assert '"event":"template_not_managed"' in text and '"event":"es_refused"' not in text
    assert pw not in text
    # The key really is that narrow: it may not manage templates.
    writer = Elasticsearch(node.url, basic_auth=("shipper", pw), ca_certs=secure.ca_file)
    with pytest.raises(Exception, match="manage_index_templates"):
        writer.indices.put_index_template(name="x", index_patterns=["x*"])


def test_without_setup_the_agent_names_the_missing_step_and_ships_once_it_ran(secure_es, tmp_path):
    node, secure, _ = secure_es
    index = f"logs-sec-{uuid.uuid4().hex[:8]}"
    pw, _role = secure.users["shipper"]
    run_cfg = _cfg(tmp_path, "run", node.url, secure.ca_file, "shipper", pw, index)
    log = tmp_path / "log" / "uaa" / "uaa.log"
    _lines(log, 50)
    agent = AgentProcess(run_cfg, tmp_path / "agent.log").start()
    try:
        deadline = time.monotonic() + 60
        while '"event":"es_refused"' not in agent.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        refused = [orjson.loads(line) for line in agent.log().splitlines() if '"event":"es_refused"' in line]
        assert refused and "run `log-shipper setup` with an admin key" in refused[0]["hint"]
        es = _admin(node, secure)
        assert not es.indices.exists(index=index)  # nothing was created behind the operator's back
        # The operator runs setup; the agent, still retrying, ships everything exactly once.
        admin_cfg = _cfg(tmp_path, "admin", node.url, secure.ca_file, *secure.admin, index)
        assert _cli("setup", "--config", str(admin_cfg)).returncode == 0
        wait_caught_up(tmp_path / "state", [log], timeout=90)
        assert _wait_count(es, index, 50) == 50
    finally:
        agent.stop()


def test_tls_on_the_node_is_verified(secure_es, tmp_path):
    node, secure, wrong_ca = secure_es
    pw, _role = secure.users["shipper"]
    cfg = _cfg(tmp_path, "wrong", node.url, str(wrong_ca), "shipper", pw, f"logs-sec-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "log" / "uaa" / "uaa.log"
    _lines(log, 5)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        deadline = time.monotonic() + 60
        while '"event":"es_tls_failed"' not in agent.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert '"event":"es_tls_failed"' in agent.log()
        assert "CERTIFICATE_VERIFY_FAILED" in agent.log() or "certificate verify failed" in agent.log()
    finally:
        agent.stop()
