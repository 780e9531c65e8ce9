"""SIGTERM while the agent is still starting ends it cleanly: offsets saved, exit 0."""

from __future__ import annotations

from tests.support.agentproc import AgentProcess, write_config

FILES = 3000  # a first scan that takes a while, so the stop lands inside it


def test_sigterm_during_the_first_scan_stops_cleanly(tmp_path):
    """monit may stop a job it has just started. The stop used to hit the default SIGTERM action
    while the agent loaded and scanned (exit -15, nothing saved); now it is carried out at once."""
    root = tmp_path / "log"
    for i in range(FILES):
        d = root / f"job{i % 30}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.log").write_bytes(b"a line\n")
    # Port 9 (discard) is closed: the stop must not depend on Elasticsearch answering.
    cfg = write_config(tmp_path / "c.json", "http://127.0.0.1:9", root, tmp_path / "state", "logs-signals")
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    agent.wait_started()  # logged as the first scan begins
    assert agent.stop() == 0, agent.log()[-2000:]
    assert '"event":"stop"' in agent.log()
