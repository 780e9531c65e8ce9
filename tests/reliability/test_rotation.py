"""Issue 3: no loss, no duplicates under real logrotate, outages, deletion and kill -9.

Each test runs the real agent against the real node while a writer appends numbered lines
to several jobs' logs and the real logrotate rotates them (BOSH stanza: copytruncate,
compress, size-triggered, run in a loop as cron would). Then every line still on disk
(live files and rotated copies, decompressed) must be indexed exactly once.
"""

from __future__ import annotations

import random
import subprocess
import time

import pytest

from tests.reliability.harness import LOGROTATE, Scenario, line, logrotate_conf
from tests.support.agentproc import AgentProcess, registry_entries, wait_caught_up, write_config


def test_copytruncate(es, es_node, index_name, tmp_path):
    sc = Scenario("copytruncate", es, es_node.url, index_name, tmp_path)
    sc.start_agent()
    sc.start_rotator()
    sc.start_writer(lines_per_s=400)
    time.sleep(12)
    sc.stop_load()
    s = sc.tally()
    assert s.extra["rotations"] >= 20
    sc.assert_clean(s)


def test_copytruncate_while_agent_is_behind(es, index_name, tmp_path, fault_proxy):
    # A tiny in-flight budget and a slow, then absent, then slow node: the agent falls
    # well behind and must finish old content from x.log.N.gz.
    sc = Scenario("copytruncate_agent_behind", es, fault_proxy.url, index_name, tmp_path,
                  batch={"max_docs": 100, "max_bytes": 16384, "max_inflight_bytes": 32768, "concurrency": 1})
    sc.start_agent()
    sc.start_rotator()
    sc.start_writer(lines_per_s=300)
    time.sleep(2)
    fault_proxy.refuse()
    time.sleep(5)
    fault_proxy.pass_through()
    fault_proxy.latency(0.3)
    time.sleep(5)
    sc.stop_load()
    fault_proxy.pass_through()
    s = sc.tally(timeout=45)
    from_gz = sc.agent.log().count('.gz"')
    s.extra["read_from_gz"] = from_gz
    assert from_gz > 0, "the agent never had to read from a compressed copy: not behind enough"
    sc.assert_clean(s)


def test_rename_rotation(es, es_node, index_name, tmp_path):
    sc = Scenario("rename_create", es, es_node.url, index_name, tmp_path)
    sc.start_agent()
    sc.start_rotator(copytruncate=False)
    sc.start_writer(lines_per_s=400, keep_open=False)
    time.sleep(12)
    sc.stop_load()
    s = sc.tally()
    assert s.extra["rotations"] >= 20
    sc.assert_clean(s)


def test_deletion_while_reading(es, index_name, tmp_path, fault_proxy):
    sc = Scenario("deletion", es, fault_proxy.url, index_name, tmp_path,
                  batch={"max_docs": 100, "max_bytes": 16384, "max_inflight_bytes": 32768, "concurrency": 1})
    sc.start_agent()
    fault_proxy.latency(0.2)  # the agent lags, so files are deleted before it has read them
    sc.start_writer(lines_per_s=400, keep_open=False, delete_every_s=1.0)
    time.sleep(10)
    sc.stop_load()
    fault_proxy.pass_through()
    s = sc.tally(timeout=45)
    assert s.extra["deleted_lines"] > 1000
    sc.assert_clean(s)


@pytest.mark.parametrize("copytruncate", [True, False], ids=["copytruncate", "rename"])
def test_kill_9_storm_during_rotation(es, es_node, index_name, tmp_path, copytruncate):
    """Issue 25: kill -9 at random moments every 1-4 s for a minute while the real logrotate
    rotates every file about twice a second; gorouter's and Cloud Controller's lines open
    alike, as their JSON does, uaa's do not. Every line on disk indexed exactly once."""
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    sc = Scenario("kill_9_storm", es, es_node.url, index_name, tmp_path,
                  json_jobs=frozenset({"gorouter", "cloud_controller_ng"}))
    sc.start_agent()
    sc.start_rotator(copytruncate=copytruncate)
    sc.start_writer(lines_per_s=400, keep_open=copytruncate)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(rnd.uniform(1.0, 4.0))
        sc.kill_agent()
        time.sleep(rnd.uniform(0.0, 0.5))
        sc.start_agent()
    sc.stop_load()
    s = sc.tally(timeout=60)
    s.extra["seed"] = seed
    assert s.extra["rotations"] >= 40 and sc.kills >= 15, s.row()
    sc.assert_clean(s)


def test_copy_deleted_while_stopped_counts_lost_bytes(es, index_name, tmp_path, fault_proxy):
    """Stopped mid-rotation and the rotated copy is gone before restart: the loss is reported."""
    root = tmp_path / "sys" / "log"
    (root / "uaa").mkdir(parents=True)
    f = root / "uaa" / "uaa.log"
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "config.json", fault_proxy.url, root, state, index_name,
                       formats=[{"glob": "**", "format": "raw"}])
    n = 0

    def write(k: int) -> None:
        nonlocal n
        with open(f, "ab") as out:
            out.write(b"".join(line("uaa", i) for i in range(n, n + k)))
        n += k

    write(50)
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    wait_caught_up(state, [f])
    # Slow acknowledgements: the registry records a size beyond the acknowledged offset.
    fault_proxy.latency(1.5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        write(5)
        time.sleep(0.1)
        entry = next((e for e in registry_entries(state) if e["path"] == str(f) and not e["gone"]), None)
        if entry and entry["size"] > entry["offset"]:
            break
    else:
        raise AssertionError(f"registry never lagged: {registry_entries(state)}")
    agent.kill()
    entry = next(e for e in registry_entries(state) if e["fid"] == entry["fid"])
    unacked = entry["size"] - entry["offset"]
    assert unacked > 0

    conf = tmp_path / "logrotate.conf"
    conf.write_text(logrotate_conf(root, rotate=0, size="1"))
    # rotate 0: copy, truncate, drop the copy. (logrotate 3.21 then exits 1 complaining that the
    # copy it just dropped cannot be compressed; the outcome is what matters.)
    subprocess.run([LOGROTATE, "-s", str(tmp_path / "lr.state"), str(conf)], capture_output=True)
    assert [p.name for p in (root / "uaa").iterdir()] == ["uaa.log"] and f.stat().st_size == 0

    fault_proxy.pass_through()
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    write(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        old = next(e for e in registry_entries(state) if e["fid"] == entry["fid"])
        if old["lost_bytes"]:
            break
        time.sleep(0.2)
    assert old["lost_bytes"] == unacked, old
    assert old["gone"]
    wait_caught_up(state, [f])  # the new content of the live file is shipped as usual
    assert agent.stop() == 0
    assert '"bytes_lost"' in agent.log()
