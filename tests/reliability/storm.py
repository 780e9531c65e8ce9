"""A longer kill -9 storm than the suite's, by hand: `python -m tests.reliability.storm`.

The real logrotate (copytruncate or rename, compress, a size limit, run every second as a
busy cron would), many files, JSON-shaped lines that share their first ~70 bytes (or lines
that do not), and the agent killed every 1.2-4.8 s and restarted 0.2 s later. Prints the
tally (lost and duplicated must be 0) and exits 1 if either is not. Uses ES_URL, else starts
the test node.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from elasticsearch import Elasticsearch

from tests.reliability.harness import Scenario
from tests.support import esnode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=12, choices=range(1, 27))
    p.add_argument("--rate", type=int, default=2000, help="lines per second over all files")
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--size", default="256k", help="logrotate's size limit")
    p.add_argument("--rename", action="store_true", help="rename + create instead of copytruncate")
    p.add_argument("--plain", action="store_true", help="lines that do not share their first bytes")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(2**32)
    rnd = random.Random(seed)
    node = esnode.start()
    try:
        es = Elasticsearch(node.url, request_timeout=60)
        tmp = Path(tempfile.mkdtemp(prefix="log-shipper-storm-"))
        jobs = tuple("job_" + chr(ord("a") + i) for i in range(a.files))  # the harness knows lines by [a-z_]+ names
        sc = Scenario("storm", es, node.url, f"logs-storm-{uuid.uuid4().hex[:8]}", tmp, jobs=jobs,
                      json_jobs=frozenset() if a.plain else frozenset(jobs))
        sc.start_agent()
        sc.start_rotator(interval=1.0, copytruncate=not a.rename, size=a.size, rotate=400)
        sc.start_writer(lines_per_s=max(1, a.rate // a.files), keep_open=not a.rename)
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            time.sleep(rnd.uniform(1.2, 4.8))
            sc.kill_agent()
            time.sleep(0.2)
            sc.start_agent()
        sc.stop_load()
        s = sc.tally(timeout=120)
        print(f"seed={seed} tmp={tmp}")
        return 1 if s.lost or s.duplicated or s.garbled else 0
    finally:
        node.stop()


if __name__ == "__main__":
    sys.exit(main())
