"""Benchmark: what the agent costs at an ordinary rate, not at its peak (issue 15).

    .venv/bin/python -m tests.bench.steady [--files 20 --rate 2000] [--seconds 45] [--warmup 10]

Writers append lines of 80 B to 2 KB (a fixed mix) to `--files` files at a combined `--rate`
lines/s, each line its own write() as a logger does. The agent ships them into the null `_bulk`
endpoint with its default timers and parsing. Its CPU (utime+stime from /proc) is measured over
`--seconds` after `--warmup`, as a share of one core, with its RSS; the writers are not counted.
A measurement, not a test: it prints the figures and writes them as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from tests.bench.nullbulk import NullBulk
from tests.bench.outage import proc_status
from tests.bench.run import agent_config, cpu_s
from tests.support.agentproc import AgentProcess

# Line lengths of an ordinary CF VM: mostly short, some long (stack frames, JSON with data).
SIZES = [80] * 6 + [200] * 6 + [500] * 4 + [1000] * 2 + [2000] * 2


class Writers:
    def __init__(self, files: list[Path], rate: int):
        self.files, self.rate = files, rate
        self.lines = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rnd = random.Random(7)
        # Unbuffered: every line is one write(), as loggers that flush per line do.
        handles = [open(f, "ab", buffering=0) for f in self.files]
        t0 = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.lines < due:
                n = rnd.choice(SIZES)
                head = b"2026-12-01T12:00:00.000Z line %09d " % self.lines
                handles[self.lines % len(handles)].write(head + b"x" * max(0, n - len(head) - 1) + b"\n")
                self.lines += 1
            time.sleep(0.005)
        for h in handles:
            h.close()


def measure(files: int, rate: int, seconds: float, warmup: float, tree: Path | None = None) -> dict:
    """`tree`: a directory holding another commit's `agent/` package, run instead of this one."""
    with tempfile.TemporaryDirectory(prefix="bench-steady-") as tmp:
        work = Path(tmp)
        root = work / "log"
        paths = []
        for i in range(files):
            d = root / f"job{i % 10}"
            d.mkdir(parents=True, exist_ok=True)
            paths.append(d / f"file{i:03d}.log")
            paths[-1].touch()
        null = NullBulk().start()
        cfg = agent_config(work, null.url, root, "logs-bench", tree=tree, health={"enabled": False},
                           fleet={"enabled": False})
        agent = AgentProcess(cfg, work / "agent.log", cwd=tree).start()
        writers = Writers(paths, rate)
        writers.thread.start()
        try:
            time.sleep(warmup)
            c0, t0, r0 = cpu_s(agent.proc.pid), time.monotonic(), null.requests
            rss = []
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                rss.append(proc_status(agent.proc.pid)["VmRSS"])
            c1, t1, r1 = cpu_s(agent.proc.pid), time.monotonic(), null.requests
            hwm = proc_status(agent.proc.pid)["VmHWM"]
        finally:
            writers.stop.set()
            writers.thread.join()
            agent.stop()
            null.stop()
        return {"files": files, "rate": rate, "seconds": round(t1 - t0, 1),
                "cpu_pct_of_core": round(100 * (c1 - c0) / (t1 - t0), 2),
                "cpu_us_per_line": round((c1 - c0) / ((t1 - t0) * rate) * 1e6, 1),
                "bulk_per_s": round((r1 - r0) / (t1 - t0), 2),
                "rss_mib_max": round(max(rss) / 2**20, 1), "hwm_mib": round(hwm / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    r = measure(a.files, a.rate, a.seconds, a.warmup)
    print(f"steady state: {r['files']} files, {r['rate']} lines/s: {r['cpu_pct_of_core']}% of a core "
          f"({r['cpu_us_per_line']} us/line, {r['bulk_per_s']} _bulk/s), RSS max {r['rss_mib_max']} MiB, HWM {r['hwm_mib']} MiB over {r['seconds']} s")
    if a.out:
        Path(a.out).write_text(json.dumps(r))


if __name__ == "__main__":
    main()
