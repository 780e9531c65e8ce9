"""`make run`: the agent end to end on sample Cloud Foundry logs.

Starts the local Elasticsearch node (or uses ES_URL), writes realistic logs under a
temporary /var/vcap/sys/log-shaped root, runs the real agent over them until every byte
is acknowledged, then prints what was indexed per job and the per-file offsets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elasticsearch import Elasticsearch

from tests.bench import corpus
from tests.support import esnode
from tests.support.agentproc import AgentProcess, wait_caught_up, write_config

SAMPLE_LINES = 20_000


def main() -> None:
    node = esnode.start()
    print(f"Elasticsearch at {node.url}" + (f" (started in {node.started_in_s:.1f}s)" if node.proc else " (ES_URL)"))
    work = Path(tempfile.mkdtemp(prefix="log-shipper-demo-"))
    root = work / "var" / "vcap" / "sys" / "log"
    counts = corpus.build(root, SAMPLE_LINES)
    files = sorted(p for p in root.rglob("*.log"))
    print(f"wrote {sum(counts.values())} lines in {len(files)} files under {root}")
    index = f"logs-bosh-demo-{int(time.time())}"
    cfg = write_config(work / "config.json", node.url, root, work / "state", index,
                       bosh={"director": "demo-director", "deployment": "cf", "instance_group": "api", "index": 0,
                             "id": "00000000-0000-4000-8000-000000000000", "az": "z1", "ip": "127.0.0.1"},
                       health={"enabled": False})
    agent = AgentProcess(cfg, work / "agent.log").start()
    t0 = time.monotonic()
    try:
        wait_caught_up(work / "state", files, timeout=300)
    finally:
        agent.stop()
    print(f"shipped and acknowledged in {time.monotonic() - t0:.1f}s; agent log: {work / 'agent.log'}\n")

    es = Elasticsearch(node.url)
    es.indices.refresh(index=index)
    aggs = es.search(index=index, size=0, aggs={"jobs": {"terms": {"field": "bosh.job", "size": 50}},
                                                 "levels": {"terms": {"field": "log.level", "size": 10}}})["aggregations"]
    print(f"indexed into {index}: {es.count(index=index)['count']} documents")
    print(f"{'JOB':<32} {'DOCS':>8}")
    for b in aggs["jobs"]["buckets"]:
        print(f"{b['key']:<32} {b['doc_count']:>8}")
    print("by log.level: " + ", ".join(f"{b['key']}={b['doc_count']}" for b in aggs["levels"]["buckets"]))
    print()
    subprocess.run([sys.executable, "-m", "agent.cli", "offsets", "--config", str(cfg)], check=True)
    if node.proc:
        if os.environ.get("KEEP_ES"):
            print(f"\nElasticsearch left running at {node.url} (KEEP_ES set); stop it with: kill {node.proc.pid}")
        else:
            node.stop()


if __name__ == "__main__":
    main()
