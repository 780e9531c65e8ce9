"""Issue 7: the agent tells operators when it falls behind, loses bytes or is refused, and recovers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agentproc import AgentProcess, count, wait_caught_up, write_config
from tests.support.esnode import free_port


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _wait_health(port: int, status: int, timeout: float = 60, reason: str = "") -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            code, body = _healthz(port)
        except OSError:
            code, body = None, None
        last = (code, body)
        if code == status and (not reason or any(reason in r for r in body["reasons"])):
            return body
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}; last {last}")


def _check(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30)


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _lines(path: Path, start: int, n: int, tag: str = "x") -> None:
    with open(path, "a") as f:
        f.writelines(f"{tag} line {i}\n" for i in range(start, start + n))


@pytest.fixture
def setup_dirs(tmp_path):
    root = tmp_path / "log"
    for job in ("gorouter", "uaa", "cloud_controller_ng"):
        (root / job).mkdir(parents=True)
    return root, tmp_path / "state"


def test_lagging_behind_a_paused_node_is_unhealthy_until_it_catches_up(fault_proxy, es, index_name, setup_dirs, tmp_path):
    root, state = setup_dirs
    port = free_port()
    cfg = write_config(tmp_path / "c.json", fault_proxy.url, root, state, index_name,
                       health={"enabled": True, "port": port, "max_lag_age_s": 2.0})
    f = root / "gorouter" / "access.log"
    _lines(f, 0, 100)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(state, [f])
        assert _wait_health(port, 200)["healthy"] is True
        assert _check(cfg).returncode == 0

        fault_proxy.refuse()
        _lines(f, 100, 50)
        body = _wait_health(port, 503, reason="behind")
        assert any("behind" in r and str(f) in r for r in body["reasons"]), body
        res = _check(cfg)
        assert res.returncode == 1 and "behind" in res.stderr
        m = _metrics(port)
        assert m[("log_shipper_file_lag_bytes", (("path", str(f)),))] > 0

        fault_proxy.pass_through()
        _wait_health(port, 200)
        wait_caught_up(state, [f])
        assert _check(cfg).returncode == 0
        assert count(es, index_name) == 150
    finally:
        agent.stop()


def test_refused_writes_make_it_unhealthy_and_it_recovers(fault_proxy, es, index_name, setup_dirs, tmp_path):
    root, state = setup_dirs
    port = free_port()
    cfg = write_config(tmp_path / "c.json", fault_proxy.url, root, state, index_name,
                       health={"enabled": True, "port": port, "refused_for_s": 1.0, "max_lag_age_s": 600.0},
                       formats=[{"glob": "**", "format": "raw"}])
    f = root / "uaa" / "uaa.log"
    fault_proxy.status(401)
    _lines(f, 0, 20)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        body = _wait_health(port, 503, reason="refused")
        assert any("refused" in r and "401" in r for r in body["reasons"]), body
        assert _metrics(port)[("log_shipper_retries_total", (("cause", "http_401"),))] >= 1
        fault_proxy.pass_through()
        _wait_health(port, 200)
        wait_caught_up(state, [f])
        assert count(es, index_name) == 20
    finally:
        agent.stop()
    assert '"event":"es_refused"' in agent.log()


def test_bytes_lost_to_rotation_while_stopped_are_reported(fault_proxy, es, index_name, setup_dirs, tmp_path):
    root, state = setup_dirs
    port = free_port()
    cfg = write_config(tmp_path / "c.json", fault_proxy.url, root, state, index_name,
                       health={"enabled": True, "port": port, "lost_window_s": 3600.0, "max_lag_age_s": 600.0},
                       formats=[{"glob": "**", "format": "raw"}])
    f = root / "cloud_controller_ng" / "cloud_controller_ng.log"
    _lines(f, 0, 10)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    wait_caught_up(state, [f])
    fault_proxy.refuse()  # the agent falls behind: it sees these lines but cannot ship them
    _lines(f, 10, 40, tag="unshipped")
    shipped = sum(len(f"x line {i}\n") for i in range(10))
    lost = f.stat().st_size - shipped
    # Until the agent has read them (its entry knows the size): only bytes it saw are its to count.
    read = ("log_shipper_bytes_read_total", (("job", "cloud_controller_ng"),))
    deadline = time.monotonic() + 60
    while _metrics(port).get(read) != f.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metrics(port).get(read) == f.stat().st_size
    assert agent.stop() == 0
    # copytruncate with no copy kept (logrotate `rotate 0`) while the agent is down.
    f.write_bytes(b"")
    _lines(f, 0, 5, tag="after")
    fault_proxy.pass_through()

    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        body = _wait_health(port, 503)
        assert any(f"{lost} bytes rotated away unread" in r for r in body["reasons"]), body
        assert _metrics(port)[("log_shipper_lost_bytes_total", (("job", "cloud_controller_ng"),))] == lost
        wait_caught_up(state, [f])
    finally:
        agent.stop()
    res = _check(cfg)  # agent stopped: the same rules, from the registry and the files
    assert res.returncode == 1 and "rotated away unread" in res.stderr
    assert count(es, index_name, {"match": {"message": "unshipped"}}) == 0
    assert count(es, index_name, {"match": {"message": "after"}}) == 5
    assert '"event":"bytes_lost"' in agent.log()


def test_metrics_and_volume_agree_with_elasticsearch_and_the_files(es_node, es, index_name, setup_dirs, tmp_path):
    root, state = setup_dirs
    port = free_port()
    cfg = write_config(tmp_path / "c.json", es_node.url, root, state, index_name,
                       health={"enabled": True, "port": port}, price_per_gib=2.0,
                       formats=[{"glob": "**", "format": "raw"}])
    sizes = {"gorouter": 300, "uaa": 200, "cloud_controller_ng": 100}
    files = []
    for job, n in sizes.items():
        f = root / job / f"{job}.log"
        _lines(f, 0, n, tag=job * 3)
        files.append(f)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(state, files)
        m = _metrics(port)
    finally:
        agent.stop()
    for job, n in sizes.items():
        indexed = count(es, index_name, {"term": {"bosh.job": job}})
        assert indexed == n
        assert m[("log_shipper_lines_acked_total", (("job", job),))] == indexed
        assert m[("log_shipper_bytes_acked_total", (("job", job),))] == (root / job / f"{job}.log").stat().st_size

    out = subprocess.run([sys.executable, "-m", "agent.cli", "volume", "--config", str(cfg), "--json"],
                         capture_output=True, check=True, timeout=30).stdout
    producers = {p["job"]: p for p in orjson.loads(out)["producers"]}
    total = sum(f.stat().st_size for f in files)
    assert list(producers) == [f.parent.name for f in sorted(files, key=lambda f: -f.stat().st_size)]  # biggest first
    for f in files:
        p = producers[f.parent.name]
        assert p["bytes"] == f.stat().st_size
        assert p["lines"] == sizes[f.parent.name]
        assert p["share"] == round(f.stat().st_size / total, 4)
        assert p["cost"] == round(f.stat().st_size / 1024**3 * 2.0, 4)
    table = subprocess.run([sys.executable, "-m", "agent.cli", "volume", "--config", str(cfg)],
                           capture_output=True, text=True, check=True, timeout=30).stdout
    assert table.splitlines()[2].startswith(next(iter(producers)))


def test_endpoint_refuses_a_non_loopback_address_unless_allowed(tmp_path):
    cfg = write_config(tmp_path / "c.json", "http://127.0.0.1:9", tmp_path, tmp_path / "s", "logs-x",
                       health={"enabled": True, "host": "0.0.0.0"})
    res = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "health.host: 0.0.0.0 is not a loopback address" in res.stderr
    cfg = write_config(tmp_path / "c.json", "http://127.0.0.1:9", tmp_path, tmp_path / "s", "logs-x",
                       health={"enabled": True, "host": "0.0.0.0", "allow_non_loopback": True})
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
