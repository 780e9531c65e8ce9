"""`make bench`: the agent's throughput, CPU, memory and latency, side by side with the limits.

    .venv/bin/python -m tests.bench.run [--lines 2000000] [--es-lines 300000] [--out bench-results.json]

1. read limit: `cat` of the corpus to /dev/null, and a plain Python line count;
2. the agent into a null `_bulk` endpoint (tests/bench/nullbulk.py), full documents, parsing off
   (every file `raw`) and on (the built-in Cloud Foundry rules), both on the corpus laid out one file
   per format (tests/bench/corpus.py `per_format`): lines/s, MB/s, CPU seconds per million lines
   (utime+stime from /proc/<pid>/stat), peak RSS (VmHWM), and parsed/raw CPU;
3. the agent into a real Elasticsearch node (esnode.start() or ES_URL), and a direct bulk load of
   the same documents by a multi-threaded http.client loader: the node's ceiling;
4. end-to-end latency (line written -> searchable) at a steady 2,000 lines/s over 20 files, after a
   10 s warm-up, and
   its stages: written -> read (event.created) -> searchable;
5. idle CPU with 500 quiet files.
This is a measurement, not a test: it prints a table, with the earlier figures and the targets
where there are some, and writes the figures as JSON. `tests/bench/micro.py` times the encoder and
each format in-process, for one change at a time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson


from tests.bench import corpus
from tests.bench.nullbulk import NullBulk
from tests.support.agentproc import AgentProcess, wait_caught_up, write_config

CACHE = Path(os.environ.get("LOG_SHIPPER_BENCH_CACHE", "/var/tmp/log-shipper-bench"))
TICK = os.sysconf("SC_CLK_TCK")
RAW_RULES = [{"glob": "**", "format": "raw"}]
# Earlier figures (issue 15 as filed and the README before it, same 2-core machine) and the targets.
EARLIER = {
    "null_raw": "earlier 2.3-3.0 CPU-s/M, 338-477k lines/s; target <= 2.5 CPU-s/M, <= 64 MiB",
    "null_parsed": "earlier 8.1-8.9 CPU-s/M, 113-122k lines/s; target >= 200k lines/s, <= 64 MiB",
    "ratio": "earlier 2.7-3.9x; target <= 2x",
}
UAA_START = re.compile(rb"^\[\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}", re.M)


def cpu_s(pid: int, tid: int | None = None) -> float:
    """utime+stime of process `pid`, or of its thread `tid` (the main thread's is `pid`)."""
    with open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.log") if p.is_file())


def events_of(root: Path, counts: dict, parsing: bool) -> int:
    """Documents the agent will send: lines, or with parsing on, UAA stack traces joined."""
    if not parsing:
        return sum(counts.values())
    total = 0
    for rel, n in counts.items():
        if rel.startswith("uaa/"):
            total += len(UAA_START.findall((root / rel).read_bytes()))
        else:
            total += n
    return total


# -- 1. the read limit ---------------------------------------------------------------------------

def read_limit(files: list[Path], lines: int, nbytes: int) -> dict:
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    t0 = time.perf_counter()
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    cat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    for p in files:
        with open(p, "rb") as f:
            for _ in f:
                n += 1
    py_s = time.perf_counter() - t0
    py_cpu = time.process_time() - c0
    assert n == lines, (n, lines)
    return {"cat_s": cat_s, "cat_mb_s": nbytes / cat_s / 1e6, "cat_lines_s": lines / cat_s,
            "python_count_s": py_s, "python_lines_s": lines / py_s, "python_cpu_s_per_m": py_cpu / lines * 1e6}


# -- 2. the agent into the null endpoint ---------------------------------------------------------

_DEFAULTS = """import dataclasses, json; from agent.config import Config; d = Config()
print(json.dumps({"sections": [f.name for f in dataclasses.fields(Config)],
                  "batch": {"flush_interval_s": d.batch.flush_interval_s},
                  "registry": {"flush_interval_s": d.registry.flush_interval_s},
                  "reader": {k: getattr(d.reader, k) for k in ("idle_flush_s", "rescan_interval_s", "close_removed_after_s")}}))"""


def tree_defaults(tree: Path | None) -> dict:
    """The agent's own defaults for batching, reading and the registry (not the test harness's fast
    timers), and its config sections, from `tree`'s agent (an older commit's) or this one's."""
    out = subprocess.run([sys.executable, "-c", _DEFAULTS], cwd=tree, capture_output=True, check=True)
    return json.loads(out.stdout)


def agent_config(work: Path, url: str, root: Path, index: str, formats=None, tree: Path | None = None, **over) -> Path:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    extra = {"formats": formats} if formats is not None else {}
    d = tree_defaults(tree)
    path = write_config(work / "agent.json", url, root, state, index, batch=d["batch"], registry=d["registry"],
                        reader=d["reader"], **extra, **over)
    cfg = orjson.loads(path.read_bytes())  # an older agent refuses sections it does not know (fleet)
    path.write_bytes(orjson.dumps({k: v for k, v in cfg.items() if k in d["sections"]}))
    return path


class Sampler:
    """CPU seconds of a process over time, every 50 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), cpu_s(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(0.05)

    def at(self, t: float) -> float:
        best = self.samples[0][1]
        for ts, c in self.samples:
            if ts > t:
                break
            best = c
        return best

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def ship_to_null(work: Path, root: Path, expected: int, nbytes: int, formats, timeout_s: float,
                 tree: Path | None = None) -> dict:
    """`tree`: a directory holding another commit's `agent/` package, run instead of this one."""
    null = NullBulk().start()
    cfg = agent_config(work, null.url, root, "bench-null", formats, tree)
    agent = AgentProcess(cfg, work / "agent.log", cwd=tree).start()
    pid = agent.proc.pid
    sampler = Sampler(pid)
    t_start = time.monotonic()
    try:
        # Every file's last multiline event waits for its timeout; measure up to the last full batch.
        target = expected - 20
        while null.docs < target:
            if not agent.alive():
                raise RuntimeError("agent exited:\n" + agent.log()[-3000:])
            if time.monotonic() - t_start > timeout_s:
                raise RuntimeError(f"agent shipped {null.docs}/{expected} in {timeout_s}s")
            time.sleep(0.02)
        t_end = null.last_bulk_at
        time.sleep(0.1)
        hwm = hwm_bytes(pid)
        cpu_total = cpu_s(pid)
        cpu_main = cpu_s(pid, pid)  # read -> frame -> encode -> batch; the senders have their own threads
    finally:
        sampler.stop()
        agent.stop()
        null.stop()
    t_first = null.first_bulk_at
    docs_first = null.timeline[0][1]
    docs_end = next(d for t, d in null.timeline if t >= t_end)
    steady_docs = docs_end - docs_first
    steady_s = t_end - t_first
    steady_cpu = sampler.at(t_end) - sampler.at(t_first)
    return {
        "docs": docs_end, "bulk_requests": null.requests, "body_mb": null.bytes / 1e6,
        "doc_bytes_avg": null.bytes / max(1, null.docs) / 2,
        "wall_s_incl_start": t_end - t_start,
        "lines_s": steady_docs / steady_s,
        "lines_s_incl_start": docs_end / (t_end - t_start),
        "mb_s": nbytes * (steady_docs / expected) / steady_s / 1e6,
        "cpu_s_per_m": steady_cpu / steady_docs * 1e6,
        "cpu_s_per_m_incl_start": cpu_total / docs_end * 1e6,
        "cpu_s_total": cpu_total,
        "main_thread_cpu_s_per_m_incl_start": cpu_main / docs_end * 1e6,
        "peak_rss_mib": hwm / 2**20,
    }


# -- 3. the real node, and the node's ceiling ----------------------------------------------------

def build_bodies(root: Path, index: str, max_bytes: int = 4 * 2**20) -> tuple[list[bytes], int]:
    """The agent's own documents for this corpus (same encoder, rules and framer), pre-built."""
    from agent import encode
    from agent.encode import FileEncoder
    from agent.formats import FORMATS
    from agent.frame import Framer
    from agent.rules import default_rule
    meta = encode.metadata({"host.name": "bench", "host.ip": "10.0.0.12", "agent.name": "log-shipper",
                            "agent.type": "log-shipper", "agent.version": "bench", "agent.id": "bench"},
                           {"bosh.director": "test-director", "bosh.deployment": "cf", "bosh.instance.group": "router",
                            "bosh.instance.index": 2, "bosh.instance.id": "6f1c1c1e-0000-4000-8000-000000000002",
                            "bosh.instance.az": "z1"})
    bodies, body, docs = [], bytearray(), 0
    now = encode.read_time()
    for i, p in enumerate(files_of(root)):
        rel = str(p.relative_to(root))
        rule = default_rule(rel)
        fmt, ml = rule.format, rule.multiline
        enc = FileEncoder(index, "direct%02d" % i, str(p), rel.split("/")[0], meta, None if fmt == "raw" else FORMATS[fmt])
        fr = Framer(0, 32 * 1024, ml)
        with open(p, "rb") as f:
            while chunk := f.read(256 * 1024):
                frames = fr.feed(chunk)
                enc.encode(frames, now, body)
                docs += len(frames)
                if len(body) >= max_bytes:
                    bodies.append(bytes(body))
                    body = bytearray()
        frames = fr.flush()
        enc.encode(frames, now, body)
        docs += len(frames)
    if body:
        bodies.append(bytes(body))
    return bodies, docs


def direct_load(url: str, bodies: list[bytes], threads: int = 4) -> float:
    u = urlparse(url)
    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            conn.request("POST", "/_bulk", body=body, headers={"content-type": "application/x-ndjson"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200 or b'"errors":true' in data[:100]:
                errors.append(f"{resp.status} {data[:300]!r}")

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"direct load: {len(errors)} failed requests, first: {errors[0]}")
    return took


def es_request(url: str, method: str, path: str, body: dict | None = None) -> dict:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, path, body=orjson.dumps(body) if body is not None else None,
                 headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return orjson.loads(data) if data else {}


def es_count(url: str, index: str) -> int:
    es_request(url, "POST", f"/{index}/_refresh")
    return es_request(url, "GET", f"/{index}/_count").get("count", 0)


def to_es(work: Path, url: str, root: Path, counts: dict, nbytes: int) -> dict:
    files = files_of(root)
    expected = events_of(root, counts, True)
    es_request(url, "DELETE", "/bench-es*")
    cfg = agent_config(work, url, root, "bench-es")
    agent = AgentProcess(cfg, work / "agent-es.log").start()
    pid = agent.proc.pid
    t0 = time.monotonic()
    try:
        wait_caught_up(work / "state", files, timeout=240)
        took = time.monotonic() - t0 - 1.0  # minus one registry flush interval
        cpu = cpu_s(pid)
        hwm = hwm_bytes(pid)
    finally:
        agent.stop()
    got = es_count(url, "bench-es")
    bodies, docs = build_bodies(root, "bench-es-direct")
    direct_s = direct_load(url, bodies)
    direct_got = es_count(url, "bench-es-direct")
    return {"lines": sum(counts.values()), "docs": expected, "indexed": got, "mb": nbytes / 1e6,
            "agent_s": took, "agent_lines_s": sum(counts.values()) / took, "agent_docs_s": expected / took,
            "agent_cpu_s_per_m": cpu / sum(counts.values()) * 1e6, "agent_peak_rss_mib": hwm / 2**20,
            "direct_s": direct_s, "direct_docs": docs, "direct_indexed": direct_got,
            "direct_docs_s": docs / direct_s, "direct_lines_s": sum(counts.values()) / direct_s}


# -- 4. latency ------------------------------------------------------------------------------------

def latency(work: Path, url: str, rate: int = 2000, files: int = 20, seconds: float = 30.0, warmup: float = 10.0) -> dict:
    """Lines written in the first `warmup` seconds are not measured: a node just started (its
    JIT, the index just created) answers in seconds at first, which is not the agent's latency."""
    root = work / "latency" / "log"
    shutil.rmtree(root.parent, ignore_errors=True)
    paths = [root / f"job{i:02d}" / "app.log" for i in range(files)]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    index = "bench-latency"
    es_request(url, "DELETE", f"/{index}")
    cfg = agent_config(work, url, root, index)
    agent = AgentProcess(cfg, work / "agent-latency.log").start()
    handles = [open(p, "ab", buffering=0) for p in paths]
    sent: dict[str, list[float]] = {str(p): [] for p in paths}
    polls: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()

    def poll() -> None:
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        q = orjson.dumps({"size": 0, "aggs": {"f": {"terms": {"field": "log.file.path", "size": 100}}}})
        while not stop.is_set():
            conn.request("POST", f"/{index}/_search", body=q, headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = orjson.loads(r.read())
            if r.status == 200:
                polls.append((time.time(), {b["key"]: b["doc_count"] for b in data["aggregations"]["f"]["buckets"]}))
            stop.wait(0.05)

    time.sleep(2.0)  # the agent is up and has opened the files
    first: dict[str, int] | None = None  # per file, the first line measured
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    tick = 0.05
    per_tick = rate * tick / files
    t0 = time.time()
    n = 0
    carry = 0.0
    try:
        while time.time() - t0 < warmup + seconds:
            if first is None and time.time() - t0 >= warmup:
                first, cpu0 = {path: len(lst) for path, lst in sent.items()}, cpu_s(agent.proc.pid)
            due = t0 + tick * (n + 1)
            carry += per_tick
            k = int(carry)
            carry -= k
            now = time.time()
            for p, h in zip(paths, handles):
                lst = sent[str(p)]
                h.write(b"".join(b"%.6f latency probe line %d of this file\n" % (now, len(lst) + j) for j in range(k)))
                lst += [now] * k
            n += 1
            time.sleep(max(0.0, due - time.time()))
        cpu_writing = cpu_s(agent.proc.pid) - cpu0
        deadline = time.time() + 30
        total = sum(map(len, sent.values()))
        while time.time() < deadline and (not polls or sum(polls[-1][1].values()) < total):
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join()
        agent.stop()
        for h in handles:
            h.close()
    seen: dict[tuple[str, int], float] = {}  # (path, line number) -> first poll that found it searchable
    for path, times in sent.items():
        i = first[path]
        for t, c in polls:
            got = c.get(path, 0)
            while i < len(times) and i < got:
                seen[(path, i)] = t
                i += 1
    lats = sorted(seen[k] - sent[k[0]][k[1]] for k in seen)
    total = sum(len(times) - first[path] for path, times in sent.items())
    return {"lines": total, "measured": len(lats), "rate": total / seconds, "p50_s": pct(lats, 0.50),
            "p99_s": pct(lats, 0.99), "max_s": lats[-1] if lats else float("nan"), "poll_interval_s": 0.05,
            "agent_cpu_pct_at_rate": cpu_writing / seconds * 100, "stages": stages(url, index, seen)}


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def stages(url: str, index: str, seen: dict[tuple[str, int], float]) -> dict:
    """Where each line's latency went: written -> read (event.created, ms) -> searchable (the poll
    that found it: batch wait, `_bulk`, refresh, poll). p50/p99/max of each, in seconds."""
    parts: dict[str, list[float]] = {"read": [], "to_searchable": []}
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    q = {"size": 10000, "_source": ["message", "event.created", "log.file.path"]}
    conn.request("POST", f"/{index}/_search?scroll=1m", body=orjson.dumps(q), headers={"content-type": "application/json"})
    page = orjson.loads(conn.getresponse().read())
    while page.get("hits", {}).get("hits"):
        for h in page["hits"]["hits"]:
            s = h["_source"]
            written, _, rest = s["message"].partition(" latency probe line ")
            key = (s["log.file.path"], int(rest.split()[0]))
            if key not in seen:
                continue
            created = _epoch(s["event.created"])
            parts["read"].append(created - float(written))
            parts["to_searchable"].append(seen[key] - created)
        body = orjson.dumps({"scroll": "1m", "scroll_id": page["_scroll_id"]})
        conn.request("POST", "/_search/scroll", body=body, headers={"content-type": "application/json"})
        page = orjson.loads(conn.getresponse().read())
    conn.close()
    out = {}
    for name, xs in parts.items():
        xs.sort()
        out[name] = {"n": len(xs), "p50_s": pct(xs, 0.5), "p99_s": pct(xs, 0.99), "max_s": xs[-1] if xs else float("nan")}
    return out


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- 5. idle ---------------------------------------------------------------------------------------

def idle(work: Path, files: int = 500, seconds: float = 60.0) -> dict:
    root = work / "idle" / "log"
    shutil.rmtree(root.parent, ignore_errors=True)
    paths = []
    for i in range(files):
        p = root / f"job{i % 25:02d}" / f"quiet{i:03d}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"2025-11-27T23:59:00.000Z INFO one line in a quiet file %d\n" % i)
        paths.append(p)
    null = NullBulk().start()
    cfg = agent_config(work, null.url, root, "bench-idle")
    agent = AgentProcess(cfg, work / "agent-idle.log").start()
    try:
        wait_caught_up(work / "state", paths, timeout=60)
        time.sleep(2.0)
        c0 = cpu_s(agent.proc.pid)
        time.sleep(seconds)
        used = cpu_s(agent.proc.pid) - c0
        hwm = hwm_bytes(agent.proc.pid)
    finally:
        agent.stop()
        null.stop()
    return {"files": files, "seconds": seconds, "cpu_s": used, "cpu_pct": used / seconds * 100, "peak_rss_mib": hwm / 2**20}


# -- the table -------------------------------------------------------------------------------------

def table(r: dict) -> str:
    rows = [("measurement", "lines/s", "MB/s", "CPU-s/M lines", "peak RSS MiB", "notes", "earlier / target")]
    rl = r.get("read_limit")
    if rl:
        rows.append(("read limit: cat > /dev/null", f"{rl['cat_lines_s']:,.0f}", f"{rl['cat_mb_s']:,.0f}", "", "", f"{rl['cat_s']:.2f} s"))
        rows.append(("read limit: python line count", f"{rl['python_lines_s']:,.0f}", "", f"{rl['python_cpu_s_per_m']:.2f}", "", ""))
    for key, name in (("null_raw", "agent -> null _bulk, parsing off"), ("null_parsed", "agent -> null _bulk, CF parsing on")):
        x = r.get(key)
        if x:
            rows.append((name, f"{x['lines_s']:,.0f}", f"{x['mb_s']:,.1f}", f"{x['cpu_s_per_m']:.2f}", f"{x['peak_rss_mib']:.1f}",
                         f"{x['docs']:,} docs ~{x['doc_bytes_avg']:.0f} B; incl. start {x['lines_s_incl_start']:,.0f}/s, {x['cpu_s_per_m_incl_start']:.2f} CPU-s/M",
                         EARLIER[key]))
    if r.get("null_raw") and r.get("null_parsed"):
        rows.append(("parsing on / off CPU", "", "", f"{r['null_parsed']['cpu_s_per_m'] / r['null_raw']['cpu_s_per_m']:.2f}x", "", "",
                     EARLIER["ratio"]))
    e = r.get("es")
    if e:
        rows.append(("agent -> real Elasticsearch (parsing on)", f"{e['agent_lines_s']:,.0f}", f"{e['mb'] / e['agent_s']:,.1f}",
                     f"{e['agent_cpu_s_per_m']:.2f}", f"{e['agent_peak_rss_mib']:.1f}", f"{e['lines']:,} lines, {e['indexed']:,}/{e['docs']:,} docs indexed"))
        rows.append(("direct bulk load (node ceiling)", f"{e['direct_lines_s']:,.0f}", f"{e['mb'] / e['direct_s']:,.1f}", "", "",
                     f"{e['direct_indexed']:,}/{e['direct_docs']:,} docs, 4 threads, pre-built NDJSON"))
    la = r.get("latency")
    if la:
        rows.append(("latency written -> searchable", f"{la['rate']:,.0f}", "", "", "",
                     f"p50 {la['p50_s']:.2f} s, p99 {la['p99_s']:.2f} s, max {la['max_s']:.2f} s; agent CPU {la['agent_cpu_pct_at_rate']:.1f}%"))
        for name, st in la["stages"].items():
            rows.append((f"  of which {name}", "", "", "", "", f"p50 {st['p50_s']:.3f} s, p99 {st['p99_s']:.3f} s, max {st['max_s']:.3f} s"))
    i = r.get("idle")
    if i:
        rows.append((f"idle, {i['files']} quiet files", "", "", "", f"{i['peak_rss_mib']:.1f}", f"CPU {i['cpu_pct']:.2f}% over {i['seconds']:.0f} s"))
    rows = [row + ("",) * (7 - len(row)) for row in rows]
    widths = [max(len(row[c]) for row in rows) for c in range(7)]
    out = []
    for k, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[c]) if c in (0, 5, 6) else cell.rjust(widths[c]) for c, cell in enumerate(row)).rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--es-lines", type=int, default=300_000)
    ap.add_argument("--only", default="read,null,es,latency,idle")
    ap.add_argument("--out", default="bench-results.json")
    args = ap.parse_args()
    only = set(args.only.split(","))
    t_all = time.monotonic()
    root, counts = corpus.ensure(CACHE, args.lines, "per_format")
    files = files_of(root)
    lines = sum(counts.values())
    nbytes = sum(p.stat().st_size for p in files)
    results: dict = {"corpus": {"root": str(root), "files": len(files), "lines": lines, "mb": nbytes / 1e6},
                     "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    print(f"corpus: {lines:,} lines, {nbytes / 1e6:,.0f} MB in {len(files)} files under {root}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="log-shipper-bench-"))
    node = None
    try:
        if "read" in only:
            results["read_limit"] = read_limit(files, lines, nbytes)
            print("read limit done", flush=True)
        if "null" in only:
            results["null_raw"] = ship_to_null(work, root, lines, nbytes, RAW_RULES, 240)
            print(f"null raw: {results['null_raw']['lines_s']:,.0f} lines/s", flush=True)
            results["null_parsed"] = ship_to_null(work, root, events_of(root, counts, True), nbytes, None, 240)
            print(f"null parsed: {results['null_parsed']['lines_s']:,.0f} lines/s", flush=True)
        if only & {"es", "latency"}:
            from tests.support import esnode
            node = esnode.start(heap="1g")
            if "es" in only:
                es_root, es_counts = corpus.ensure(CACHE, args.es_lines)
                es_bytes = sum(p.stat().st_size for p in files_of(es_root))
                results["es"] = to_es(work, node.url, es_root, es_counts, es_bytes)
                print(f"es: agent {results['es']['agent_lines_s']:,.0f} lines/s, direct {results['es']['direct_lines_s']:,.0f}", flush=True)
            if "latency" in only:
                results["latency"] = latency(work, node.url)
                print("latency done", flush=True)
        if "idle" in only:
            results["idle"] = idle(work)
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["bench_wall_s"] = time.monotonic() - t_all
    print()
    print(table(results))
    print(f"\nwhole bench: {results['bench_wall_s']:.0f} s; figures in {args.out}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
