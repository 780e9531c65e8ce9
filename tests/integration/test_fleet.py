"""Issue 18: every agent's status in Elasticsearch, and `log-shipper fleet` ranking them worst first.

Four real agents with their own BOSH identities against the real node: one healthy, one behind a
node that refuses its log documents (per-item 403 through the fault proxy, its status documents
pass), one that lost bytes to a rotation while it was down, one killed for good.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.support.agentproc import AgentProcess, count, registry_entries, wait_caught_up, write_config
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.es

INTERVAL = 2.0


def _fleet(es_url: str, index: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "fleet", "--es", es_url, "--index", index, *extra],
                          capture_output=True, text=True, timeout=60)


def _offsets(cfg: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "offsets", "--json", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=True)
    return orjson.loads(out.stdout)["files"]


class Vm:
    """One BOSH VM: a log root, a state dir and an agent with that VM's identity."""

    def __init__(self, tmp: Path, name: str, es_url: str, index: str, fleet_index: str, **over):
        self.name = name
        self.root = tmp / name / "sys" / "log"
        (self.root / "gorouter").mkdir(parents=True)
        (self.root / "bbs").mkdir(parents=True)
        self.state = tmp / name / "data"
        self.cfg = write_config(
            tmp / name / "config.json", es_url, self.root, self.state, index,
            bosh={"director": "d", "deployment": f"cf-{name}", "instance_group": name, "index": 0,
                  "id": f"{name}-{uuid.uuid4()}", "az": "z1", "ip": "10.0.0.1"},
            fleet={"enabled": True, "interval_s": INTERVAL, "index": fleet_index},
            health={"enabled": False, "max_lag_age_s": 2.0, "refused_for_s": 1.0, "lost_window_s": 8.0},
            **over)
        self.agent: AgentProcess | None = None

    def write(self, rel: str, n: int, tag: str) -> Path:
        path = self.root / rel
        with open(path, "a") as f:
            f.writelines(f"{tag} {self.name} line {i} " + "x" * 40 + "\n" for i in range(n))
        return path

    def start(self) -> AgentProcess:
        self.agent = AgentProcess(self.cfg, self.cfg.with_name("agent.log")).start()
        return self.agent


def _statuses(es, fleet_index: str, deployment: str) -> list[dict]:
    es.indices.refresh(index=f"{fleet_index}*", ignore_unavailable=True, allow_no_indices=True)
    resp = es.search(index=f"{fleet_index}*", query={"term": {"bosh.deployment": deployment}},
                     sort=[{"@timestamp": "desc"}], size=100, ignore_unavailable=True, allow_no_indices=True)
    return [h["_source"] for h in resp["hits"]["hits"]]


def _wait_state(es_url: str, fleet_index: str, want: dict[str, str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        r = _fleet(es_url, fleet_index, "--json")
        if r.stdout.strip().startswith("["):
            got = {a["deployment"]: a["state"] for a in orjson.loads(r.stdout)}
            if all(got.get(d) == s for d, s in want.items()):
                return orjson.loads(r.stdout)
        time.sleep(0.5)
    raise AssertionError(f"fleet never showed {want}; last {got}")


def test_fleet_ranks_silent_lost_behind_healthy_then_all_recover(es, es_node, index_name, tmp_path):
    fleet_index = f"logs-test-agents-{uuid.uuid4().hex[:8]}"
    refusing = FaultProxy(es_node.url).start()
    refusing.item_403(index_name)  # log documents refused; status documents pass
    down = FaultProxy(es_node.url).start()
    down.refuse()
    vms = {
        "healthy": Vm(tmp_path, "healthy", es_node.url, index_name, fleet_index),
        "behind": Vm(tmp_path, "behind", refusing.url, index_name, fleet_index),
        "lossy": Vm(tmp_path, "lossy", down.url, index_name, fleet_index),
        "killed": Vm(tmp_path, "killed", es_node.url, index_name, fleet_index),
    }
    try:
        for vm in vms.values():
            vm.write("gorouter/access.log", 200, "a")
            vm.write("bbs/bbs.log", 50, "u")
            vm.start()
        healthy, lossy, killed = vms["healthy"], vms["lossy"], vms["killed"]
        wait_caught_up(healthy.state, [healthy.root / "gorouter/access.log", healthy.root / "bbs/bbs.log"])

        # lossy: its node is down; once it knows the file (entry on disk), kill -9, and while it is
        # away logrotate-style truncation with no copy left destroys what it never shipped.
        deadline = time.monotonic() + 30
        while not any(e["size"] > 0 for e in registry_entries(lossy.state)) and time.monotonic() < deadline:
            time.sleep(0.2)
        lossy.agent.kill()
        doomed = (lossy.root / "gorouter/access.log").stat().st_size
        os.truncate(lossy.root / "gorouter/access.log", 0)
        lossy.write("gorouter/access.log", 10, "after")
        down.pass_through()
        lossy.start()

        # killed: once its status is in the index, gone for good.
        deadline = time.monotonic() + 30
        while not _statuses(es, fleet_index, "cf-killed") and time.monotonic() < deadline:
            time.sleep(0.3)
        killed.agent.kill()

        agents = _wait_state(es_node.url, fleet_index, {"cf-healthy": "healthy", "cf-behind": "behind",
                                                        "cf-lossy": "lost", "cf-killed": "silent"})
        assert [a["state"] for a in agents] == ["silent", "lost", "behind", "healthy"]  # worst first
        by = {a["deployment"]: a for a in agents}
        assert by["cf-lossy"]["lost_bytes"] == doomed
        assert by["cf-behind"]["lag_bytes"] > 0 and "refused" in " ".join(
            _statuses(es, fleet_index, "cf-behind")[0]["status"]["reasons"])
        table = _fleet(es_node.url, fleet_index)
        assert table.returncode == 1
        assert table.stdout.splitlines()[1].split()[:2] == ["silent", "cf-killed"]
        only = _fleet(es_node.url, fleet_index, "--deployment", "cf-healthy")
        assert only.returncode == 0 and "cf-behind" not in only.stdout

        # The status carries exactly what `offsets` shows on that VM (quiet files: the same moment).
        for name in ("healthy", "lossy"):
            rows = _offsets(vms[name].cfg)
            st = _statuses(es, fleet_index, f"cf-{name}")[0]["status"]
            assert st["lag_bytes"] == sum(r["lag_bytes"] for r in rows)
            assert st["lost_bytes"] == sum(r["lost_bytes"] for r in rows)
            jobs = {j["name"]: j for j in st["jobs"]}
            assert set(jobs) == {"gorouter", "bbs"}
            for job in jobs:
                assert jobs[job]["lost_bytes"] == sum(r["lost_bytes"] for r in rows if f"/{job}/" in r["path"])
        # Cheap: each status document is well under 1 KB per job.
        doc = _statuses(es, fleet_index, "cf-healthy")[0]
        assert len(orjson.dumps(doc)) < 1024 * len(doc["status"]["jobs"])
        shipped = sum(d["status"]["shipped_lines"] for d in _statuses(es, fleet_index, "cf-healthy"))
        assert shipped == 250  # every acknowledged line is counted in exactly one interval

        # Recovery: the node takes the logs again, the loss ages out of the window, the killed VM returns.
        refusing.pass_through()
        killed.start()
        agents = _wait_state(es_node.url, fleet_index, {f"cf-{n}": "healthy" for n in vms}, timeout=90)
        assert _fleet(es_node.url, fleet_index).returncode == 0
        assert count(es, index_name) == 250 * 3 + 50 + 10  # lossy: its bbs log and what came after the loss
    finally:
        for vm in vms.values():
            if vm.agent is not None and vm.agent.alive():
                vm.agent.stop()
        refusing.stop()
        down.stop()
