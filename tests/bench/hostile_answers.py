"""Benchmark: the agent's peak RSS while Elasticsearch answers in hostile ways (issue 14).

    .venv/bin/python -m tests.bench.hostile_answers --seconds 30 --out bench-hostile.json

A real node (or `ES_URL`) sits behind the fault proxy. While 20 files grow at a combined
`--rate` lines/s, the proxy answers every `_bulk` request for `--seconds` each with: invalid
JSON, an HTML page, an unknown content type, `{"errors":true,"items":[]}`, more and fewer items
than documents and an item without status (the node's real answer, rewritten), a 400 MB
answer (announced by its length, then chunked with no length), and an answer trickled one
byte per second. The agent runs with its default settings
(batching, reading, registry, request timeout). Its RSS (VmRSS, and the kernel's high-water
mark VmHWM) is sampled from /proc twice a second. Then the proxy passes through and the run
ends once every line is indexed exactly once and acknowledged. A measurement, not a test: it
prints figures and writes them as JSON; the target is a peak of at most 64 MiB.
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

from tests.bench.outage import FILES, MIB, Writers, caught_up, proc_status
from tests.bench.run import agent_config
from tests.support import esnode
from tests.support.agentproc import AgentProcess, count
from tests.support.faultproxy import FaultProxy

HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>" + b"Please sign in. " * 500 + b"</body></html>"

MODES = {
    "invalid_json": lambda p: p.answer(b'{"errors":false,"items":[{"create":{"status":201}'),
    "text_html": lambda p: p.answer(HTML, content_type="text/html"),
    "unknown_content_type": lambda p: p.answer(b"\x00\xff\xfe" * 1000, content_type="application/octet-stream"),
    "errors_without_items": lambda p: p.answer(b'{"errors":true,"items":[]}'),
    "more_items": lambda p: p.mangle(lambda r: {**r, "items": r["items"] * 2}),
    "fewer_items": lambda p: p.mangle(lambda r: {**r, "items": r["items"][:-1]}),
    "item_without_status": lambda p: p.mangle(lambda r: {**r, "items": [{"create": {}}] + r["items"][1:]}),
    "answer_400_mb": lambda p: p.huge(400 * MIB),
    "answer_400_mb_chunked": lambda p: p.huge(400 * MIB, chunked=True),
    "trickle_1_byte_per_s": lambda p: p.trickle(1.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="how long each hostile mode lasts")
    ap.add_argument("--rate", type=int, default=2000, help="combined lines per second over 20 files")
    ap.add_argument("--drain-timeout", type=float, default=900.0, help="give up draining after this many seconds")
    ap.add_argument("--out", default="bench-hostile.json", help="where to write the figures as JSON")
    args = ap.parse_args()

    node = esnode.start()
    es = Elasticsearch(node.url, request_timeout=120)
    proxy = FaultProxy(node.url).start()
    work = Path(tempfile.mkdtemp(prefix="log-shipper-bench-"))
    root = work / "sys" / "log"
    files = []
    for i in range(FILES):
        d = root / f"job{i:02d}"
        d.mkdir(parents=True)
        files.append(d / f"job{i:02d}.log")
        files[-1].touch()
    index = f"logs-bench-{uuid.uuid4().hex[:8]}"
    cfg = agent_config(work, proxy.url, root, index, formats=[{"glob": "**", "format": "rfc3339"}])

    samples: list[dict] = []
    sampling = threading.Event()
    phase = "start"

    def sample(pid: int) -> None:
        t0 = time.monotonic()
        while not sampling.is_set():
            try:
                s = proc_status(pid)
            except FileNotFoundError:
                return
            samples.append({"t": round(time.monotonic() - t0, 1), "phase": phase, **s})
            time.sleep(0.5)

    agent = AgentProcess(cfg, work / "agent.log").start()
    assert agent.proc is not None
    threading.Thread(target=sample, args=(agent.proc.pid,), daemon=True).start()
    writers = Writers(files, args.rate)
    writers.thread.start()
    for name, mode in MODES.items():
        phase = name
        mode(proxy)
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1)
            if not agent.alive():
                raise SystemExit(f"agent exited under {name}; see {work / 'agent.log'}")
        peak = max(s["VmHWM"] for s in samples)
        print(f"[{name:22s}] written={writers.total} bulk requests={proxy.seen()} hwm={peak / MIB:.1f}MiB", flush=True)
    writers.stop.set()
    writers.thread.join()
    total = writers.total

    phase = "drain"
    proxy.pass_through()
    t_drain = time.monotonic()
    drain_s = None
    while time.monotonic() - t_drain < args.drain_timeout:
        time.sleep(1)
        if not agent.alive():
            raise SystemExit(f"agent exited while draining; see {work / 'agent.log'}")
        if count(es, index) >= total and caught_up(work / "state", files):
            drain_s = time.monotonic() - t_drain
            break
    time.sleep(2)
    final = count(es, index)
    sampling.set()
    rc = agent.stop()
    per_mode = {m: round(max((s["VmRSS"] for s in samples if s["phase"] == m), default=0) / MIB, 1)
                for m in [*MODES, "drain"]}
    peak_hwm = max(s["VmHWM"] for s in samples)
    result = {
        "seconds_per_mode": args.seconds, "rate_lines_per_s": args.rate, "files": FILES, "lines_written": total,
        "documents_indexed": final, "exactly_once": final == total, "drain_s": drain_s and round(drain_s, 1),
        "peak_hwm_mib": round(peak_hwm / MIB, 1), "peak_rss_mib_per_mode": per_mode, "target_mib": 64,
        "agent_exit": rc, "agent_log": str(work / "agent.log"), "samples": samples,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"lines written: {total}, indexed: {final}, exactly once: {final == total}, agent exit {rc}")
    print(f"peak RSS (VmHWM): {peak_hwm / MIB:.1f} MiB (target 64); per mode (VmRSS): {per_mode}")
    print(f"drain time: {'did not finish' if drain_s is None else f'{drain_s:.1f} s'}; figures in {args.out}")
    proxy.stop()
    node.stop()


if __name__ == "__main__":
    main()
