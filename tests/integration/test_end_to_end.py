"""Issue 2's promise: lines in /var/vcap/sys/log-shaped files end up in the real node, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agentproc import AgentProcess, all_messages, count, wait_caught_up, write_config

JOBS = {"gorouter": "gorouter.stdout.log", "cloud_controller_ng": "cloud_controller_ng.log", "uaa": "uaa.log"}


def _write(path: Path, start: int, n: int) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(f"line {i:06d} of {path.parent.name}: grüße, 日本語, emoji 🚀\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "sys" / "log"
    for job in JOBS:
        (r / job).mkdir(parents=True)
    return r


def test_ships_every_line_once_across_restarts(es, es_node, index_name, root, tmp_path):
    files = [root / job / name for job, name in JOBS.items()]
    for n, f in zip((4000, 3500, 2500), files):
        _write(f, 0, n)
    cfg = write_config(tmp_path / "config.json", es_node.url, root, tmp_path / "state", index_name,
                       formats=[{"glob": "**", "format": "raw"}])
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    wait_caught_up(tmp_path / "state", files)
    assert count(es, index_name) == 10_000

    docs = all_messages(es, index_name)
    by_job = {}
    for d in docs:
        by_job.setdefault(d["bosh.job"], []).append(d)
    assert {j: len(v) for j, v in by_job.items()} == {"gorouter": 4000, "cloud_controller_ng": 3500, "uaa": 2500}
    sample = next(d for d in by_job["uaa"] if d["log.offset"] == 0)
    assert sample["message"] == "line 000000 of uaa: grüße, 日本語, emoji 🚀"
    assert sample["log.file.path"] == str(files[2])
    assert sample["bosh.deployment"] == "cf"
    assert sample["bosh.instance.group"] == "router"
    assert sample["bosh.instance.index"] == 2
    assert sample["bosh.instance.az"] == "z1"
    assert sample["bosh.director"] == "test-director"
    assert sample["host.ip"] == "10.0.0.12"
    assert sample["agent.name"] == "log-shipper"
    # Offsets are byte positions: the second line starts after the first line's bytes.
    second = next(d for d in by_job["uaa"] if d["message"].startswith("line 000001 "))
    assert second["log.offset"] == len(sample["message"].encode()) + 1
    assert len({d["_id"] for d in docs}) == 10_000

    assert agent.stop() == 0
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    wait_caught_up(tmp_path / "state", files)
    assert count(es, index_name) == 10_000

    _write(files[0], 4000, 500)
    wait_caught_up(tmp_path / "state", files)
    assert agent.stop() == 0
    assert count(es, index_name) == 10_500
    assert count(es, index_name, {"match_phrase": {"message": "line 004499 of gorouter"}}) == 1
    assert '"level":"error"' not in agent.log()
