"""Run the real agent as a subprocess in tests, and read what it shipped."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from elasticsearch import Elasticsearch

from agent import registry


def write_config(path: Path, es_url: str, root: Path, state: Path, index: str, **overrides) -> Path:
    cfg = {
        "elasticsearch": {"hosts": [es_url], "request_timeout_s": 10},
        "inputs": {"root": str(root)},
        "state_dir": str(state),
        "target": {"kind": "index", "name": index},
        "bosh": {"director": "test-director", "deployment": "cf", "instance_group": "router", "index": 2,
                 "id": "6f1c1c1e-0000-4000-8000-000000000002", "az": "z1", "ip": "10.0.0.12"},
        "reader": {"idle_flush_s": 1.0, "rescan_interval_s": 2.0, "close_removed_after_s": 1.0},
        "batch": {"flush_interval_s": 0.2},
        "registry": {"flush_interval_s": 0.2},
        "health": {"enabled": False},
        "dead_letter": {"kind": "file"},
        # Status documents would add requests that fault tests count; tests/integration/test_fleet.py turns it on.
        "fleet": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path.write_bytes(orjson.dumps(cfg))
    return path


@dataclass
class AgentProcess:
    config: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    env: dict = field(default_factory=dict)
    cwd: Path | None = None

    def start(self) -> AgentProcess:
        self._log = open(self.log_path, "ab")
        self._log_from = self._log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=self.cwd,
        )
        return self

    def wait_started(self, timeout: float = 60) -> None:
        """Until this run (not an earlier one into the same log) has logged its start, as its
        first scan begins: from then on SIGTERM is handled."""
        deadline = time.monotonic() + timeout
        while b'"event":"start"' not in self.log_path.read_bytes()[self._log_from:]:
            assert self.alive(), self.log()[-3000:]
            assert time.monotonic() < deadline, f"the agent did not start in {timeout}s"
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM: the agent flushes and saves offsets."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def registry_entries(state: Path) -> list[dict]:
    """The registry on disk, as the agent would load it (a torn last checkpoint dropped)."""
    return [dataclasses.asdict(e) for e in registry.load(str(state)).values()]


def wait_caught_up(state: Path, files: list[Path], timeout: float = 60) -> None:
    """Until the registry's committed offsets reach every file's size (all acknowledged)."""
    deadline = time.monotonic() + timeout
    want = {str(f): f.stat().st_size for f in files}
    while time.monotonic() < deadline:
        got: dict[str, int] = {}
        for e in registry_entries(state):
            if not e["gone"] and e["path"] in want:
                got[e["path"]] = max(got.get(e["path"], 0), e["offset"])
        if all(got.get(p, -1) >= size for p, size in want.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"agent did not catch up in {timeout}s: want {want}, registry {registry_entries(state)}")


def count(es: Elasticsearch, index: str, query: dict | None = None) -> int:
    if not es.indices.exists(index=index):
        return 0
    # An index the agent has just created may not have its shard started yet (search 503).
    es.cluster.health(index=index, wait_for_status="yellow", timeout="30s")
    es.indices.refresh(index=index)
    return es.count(index=index, query=query or {"match_all": {}})["count"]


def all_messages(es: Elasticsearch, index: str, fields: list[str] | None = None) -> list[dict]:
    """Every document's _source (selected fields), read through one scroll: a consistent view.
    Paging by search_after on `_doc` without one read some documents twice and missed as many
    when a segment merge reordered the index between pages (an outage test: 1,594 of each)."""
    es.cluster.health(index=index, wait_for_status="yellow", timeout="30s")
    es.indices.refresh(index=index)
    page = es.search(index=index, size=5000, sort=["_doc"], source=fields or True, scroll="2m")
    out = []
    try:
        while hits := page["hits"]["hits"]:
            out += [h["_source"] | {"_id": h["_id"]} for h in hits]
            page = es.scroll(scroll_id=page["_scroll_id"], scroll="2m")
    finally:
        es.clear_scroll(scroll_id=page["_scroll_id"])
    return out
