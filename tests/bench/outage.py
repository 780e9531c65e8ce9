"""Benchmark: memory through a long Elasticsearch outage, then the time to drain the backlog.

    .venv/bin/python -m tests.bench.outage --minutes 10 --out bench-outage.json

Elasticsearch (a real node, or `ES_URL`) sits behind the fault proxy, which refuses every
connection for `--minutes` while 20 files grow at a combined `--rate` lines/s. The agent's
RSS (VmRSS, and the kernel's high-water mark VmHWM) is sampled from /proc every second.
Then the proxy passes through again and the drain time is measured until every line written
is indexed exactly once (the document count equals the lines written and the registry has
caught up). This is a measurement, not a test: it prints figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from elasticsearch import Elasticsearch

from tests.support import esnode
from tests.support.agentproc import AgentProcess, count, registry_entries, write_config
from tests.support.faultproxy import FaultProxy

FILES = 20
PAD = "x" * 60
MIB = 1024 * 1024


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Writers:
    """One thread appending to FILES files at a combined rate, in 50 ms ticks."""

    def __init__(self, files: list[Path], rate: int):
        self.files = files
        self.rate = rate
        self.written = [0] * len(files)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        handles = [open(f, "a", encoding="utf-8") for f in self.files]
        t0 = time.monotonic()
        total = 0
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while total < due:
                i = total % len(handles)
                n = self.written[i]
                handles[i].write(f"2024-05-01T12:00:00.000Z file {i:02d} line {n:09d} {PAD}\n")
                self.written[i] = n + 1
                total += 1
            for h in handles:
                h.flush()
            time.sleep(0.05)
        for h in handles:
            h.close()

    @property
    def total(self) -> int:
        return sum(self.written)


def caught_up(state: Path, files: list[Path]) -> bool:
    want = {str(f): f.stat().st_size for f in files}
    got: dict[str, int] = {}
    for e in registry_entries(state):
        if not e["gone"] and e["path"] in want:
            got[e["path"]] = max(got.get(e["path"], 0), e["offset"])
    return all(got.get(p, -1) >= size for p, size in want.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long Elasticsearch is unreachable")
    ap.add_argument("--rate", type=int, default=2000, help="combined lines per second over 20 files")
    ap.add_argument("--drain-timeout", type=float, default=1800.0, help="give up draining after this many seconds")
    ap.add_argument("--out", default="bench-outage.json", help="where to write the figures as JSON")
    ap.add_argument("--config", default="", help="JSON object merged into the agent config, e.g. '{\"batch\": {...}}'")
    args = ap.parse_args()

    node = esnode.start()
    es = Elasticsearch(node.url, request_timeout=120)
    proxy = FaultProxy(node.url).start()
    work = Path(tempfile.mkdtemp(prefix="log-shipper-bench-"))
    root, state = work / "sys" / "log", work / "state"
    files = []
    for i in range(FILES):
        d = root / f"job{i:02d}"
        d.mkdir(parents=True)
        files.append(d / f"job{i:02d}.log")
        files[-1].touch()
    index = f"logs-bench-{uuid.uuid4().hex[:8]}"
    overrides = json.loads(args.config) if args.config else {}
    cfg = write_config(work / "config.json", proxy.url, root, state, index,
                       formats=[{"glob": "**", "format": "rfc3339"}], **overrides)

    samples: list[dict] = []
    sampling = threading.Event()

    def sample(pid: int) -> None:
        t0 = time.monotonic()
        while not sampling.is_set():
            try:
                s = proc_status(pid)
            except FileNotFoundError:
                return
            samples.append({"t": round(time.monotonic() - t0, 1), "phase": phase, **s})
            time.sleep(1.0)

    proxy.refuse()
    phase = "outage"
    agent = AgentProcess(cfg, work / "agent.log").start()
    assert agent.proc is not None
    sampler = threading.Thread(target=sample, args=(agent.proc.pid,), daemon=True)
    sampler.start()
    writers = Writers(files, args.rate)
    writers.thread.start()
    outage_s = args.minutes * 60
    t_start = time.monotonic()
    while time.monotonic() - t_start < outage_s:
        time.sleep(5)
        if not agent.alive():
            raise SystemExit(f"agent exited during the outage; see {work / 'agent.log'}")
        last = samples[-1] if samples else {}
        print(f"[outage {time.monotonic() - t_start:6.0f}s] written={writers.total} "
              f"rss={last.get('VmRSS', 0) / MIB:.1f}MiB hwm={last.get('VmHWM', 0) / MIB:.1f}MiB", flush=True)
    writers.stop.set()
    writers.thread.join()
    total = writers.total
    outage_peak_hwm = max(s["VmHWM"] for s in samples)
    outage_peak_rss = max(s["VmRSS"] for s in samples)

    phase = "drain"
    proxy.pass_through()
    t_drain = time.monotonic()
    indexed = 0
    drain_s = None
    while time.monotonic() - t_drain < args.drain_timeout:
        time.sleep(1)
        if not agent.alive():
            raise SystemExit(f"agent exited while draining; see {work / 'agent.log'}")
        indexed = count(es, index)
        if indexed >= total and caught_up(state, files):
            drain_s = time.monotonic() - t_drain
            break
        if int(time.monotonic() - t_drain) % 10 == 0:
            print(f"[drain {time.monotonic() - t_drain:6.0f}s] indexed={indexed}/{total}", flush=True)
    time.sleep(2)
    final = count(es, index)
    sampling.set()
    sampler.join()
    rc = agent.stop()
    peak_hwm = max(s["VmHWM"] for s in samples)
    peak_rss = max(s["VmRSS"] for s in samples)
    result = {
        "minutes": args.minutes, "rate_lines_per_s": args.rate, "files": FILES, "lines_written": total,
        "bytes_written": sum(f.stat().st_size for f in files),
        "documents_indexed": final, "exactly_once": final == total,
        "peak_rss_mib": round(peak_rss / MIB, 1), "peak_hwm_mib": round(peak_hwm / MIB, 1),
        "outage_peak_rss_mib": round(outage_peak_rss / MIB, 1), "outage_peak_hwm_mib": round(outage_peak_hwm / MIB, 1),
        "drain_s": None if drain_s is None else round(drain_s, 1),
        "drain_lines_per_s": None if not drain_s else round(total / drain_s),
        "agent_exit": rc, "config_overrides": overrides, "agent_log": str(work / "agent.log"),
        "samples": samples,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"lines written: {total}, indexed: {final}, exactly once: {final == total}")
    print(f"peak RSS: {peak_rss / MIB:.1f} MiB (VmHWM {peak_hwm / MIB:.1f} MiB; during the outage "
          f"{outage_peak_rss / MIB:.1f} / {outage_peak_hwm / MIB:.1f} MiB)")
    print(f"drain time: {'did not finish' if drain_s is None else f'{drain_s:.1f} s'}; figures in {args.out}")
    proxy.stop()
    node.stop()


if __name__ == "__main__":
    main()
