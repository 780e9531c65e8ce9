"""Benchmark: what the registry costs with a week of BOSH rotation history, beside a fresh one,
for the old registry (registry.json rewritten whole) and the new one (a journal of changes).

    .venv/bin/python -m tests.bench.history [--checkpoints 900] [--agent-seconds 120] [--rate 2000]
                                            [--parts registry,agent] [--out bench-history.json]

The history is what a week on a BOSH VM leaves: 25 files, 5 busy ones rotated every 15 minutes
(logrotate `copytruncate`, every generation on the live file's inode), 20 quiet ones daily:
3,500 gone generations plus the 25 live files; on disk, each file's last 7 generations
(x.log.1, then x.log.2.gz ... x.log.7.gz), the older ones long deleted.

1. The registry alone, `--checkpoints` checkpoints back to back: every checkpoint the 5 busy
   files' offsets advance, a quiet one's every 5th, and every 36th a busy file rotates (a new
   generation, and a forced checkpoint before its first batch, as `Acker.track` does). Per
   checkpoint: bytes written (the file's growth for the journal, its size for registry.json;
   and the kernel's write_bytes from /proc/self/io), p50/p99 latency, and the registry's size.
   The old writer is tests/support/registry_v1.py (verbatim); the new one is the real `Acker`,
   which also forgets what is drained and gone from disk.
2. The agent (the old one from `git archive 782ef38`, the new one from this tree) at `--rate`
   lines/s over the 25 files into the null `_bulk` endpoint (tests/bench/nullbulk.py, which
   always keeps up), a busy file copytruncated every 30 s: after a 30 s warm-up, over
   `--agent-seconds`: bytes written per second (/proc/PID/io write_bytes), CPU (% of a core),
   RSS, registry size, and the p99 of `log_shipper_registry_write_seconds` (its bucket bound).
3. (`--parts soak`) the new agent from the week of history for `--soak-minutes` at `--rate`,
   rotated by real logrotate (copytruncate, compress, size 2M, rotate 7) every 15 s: registry
   size, entries, retired identities, RSS, CPU and bytes written, once a minute.

This is a measurement, not a test: it prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson

from agent import identity, registry
from agent.ack import Acker
from agent.config import InputsConfig
from agent.contain import Jail
from agent.registry import Entry
from tests.bench.nullbulk import NullBulk
from tests.support import registry_v1
from tests.support.agentproc import AgentProcess, write_config

BUSY, QUIET = 5, 20
BUSY_EVERY_S, QUIET_EVERY_S = 900, 86400
WEEK = 7 * 86400
ON_DISK = 7  # rotated generations logrotate keeps (rotate 7)
BUSY_SIZE = 50 * 2**20  # size 50M
OLD_COMMIT = "782ef38"
PAD = "x" * 200


def line(job: int, gen: int, n: int) -> bytes:
    return f"2026-11-24T00:00:00.000Z job{job:02d} generation {gen:05d} line {n:09d} {PAD}\n".encode()


def content(job: int, gen: int, lines: int = 20) -> bytes:
    return b"".join(line(job, gen, n) for n in range(lines))


def files(root: Path) -> list[Path]:
    return [root / f"job{i:02d}" / f"job{i:02d}.log" for i in range(BUSY + QUIET)]


def seed(root: Path, now: float, history: bool) -> dict[str, Entry]:
    """Live files, their last ON_DISK generations as copies, and the entries a week leaves."""
    entries: dict[str, Entry] = {}
    for i, path in enumerate(files(root)):
        path.parent.mkdir(parents=True, exist_ok=True)
        every = BUSY_EVERY_S if i < BUSY else QUIET_EVERY_S
        gens = WEEK // every if history else 0
        live = content(i, gens)
        path.write_bytes(live)
        st = path.stat()
        for back in range(1, min(ON_DISK, gens) + 1):
            data = content(i, gens - back)
            if back == 1:
                (path.parent / f"{path.name}.1").write_bytes(data)
            else:
                with gzip.open(path.parent / f"{path.name}.{back}.gz", "wb") as f:
                    f.write(data)
        for g in range(gens + 1):
            data = content(i, g)
            head = identity.Head.of(data[: identity.HEAD_BYTES])
            fid = identity.new_fid(st.st_dev, st.st_ino, data[: identity.HEAD_BYTES])
            at = now - (gens - g) * every
            if g == gens:
                e = Entry(fid, str(path), st.st_dev, st.st_ino, head.length, head.hash, offset=len(data),
                          tail=identity.tail_hash(data), size=len(data), caught_up_at=now, updated_at=now)
            else:
                size = BUSY_SIZE if i < BUSY else 2**20
                e = Entry(fid, str(path), st.st_dev, st.st_ino, head.length, head.hash, offset=size,
                          tail=identity.digest(b"%d" % g), size=size, caught_up_at=at, updated_at=at, gone=True)
            entries[fid] = e
    return entries


def write_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/io") as f:
        for row in f:
            if row.startswith("write_bytes:"):
                return int(row.split()[1])
    return 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


# -- 1. the registry alone --------------------------------------------------------------------

class Workload:
    """The changes between checkpoints: offsets move, now and then a busy file rotates."""

    def __init__(self, entries: dict[str, Entry]):
        self.entries = entries
        self.live = {e.path: e.fid for e in entries.values() if not e.gone}
        self.paths = sorted(self.live)
        self.n = 0

    def tick(self, now: float) -> bool:
        """One checkpoint interval's changes; True when a new generation needs a forced write."""
        self.n += 1
        moved = self.paths[:BUSY] + ([self.paths[BUSY + self.n % QUIET]] if self.n % 5 == 0 else [])
        for p in moved:
            e = self.entries[self.live[p]]
            e.size += 30_000
            e.offset = e.size
            e.tail = identity.digest(b"%d" % e.offset)
            e.updated_at = e.caught_up_at = now
        if self.n % 36:
            return False
        p = self.paths[(self.n // 36) % BUSY]
        old = self.entries[self.live[p]]
        old.gone, old.updated_at = True, now
        fid = identity.digest(b"%s:%d" % (old.fid.encode(), self.n))
        self.entries[fid] = Entry(fid, p, old.dev, old.ino, 256, identity.digest(fid.encode()), updated_at=now)
        self.live[p] = fid
        return True


def registry_run(work: Path, impl: str, history: bool, checkpoints: int) -> dict:
    root, state = work / "log", work / "state"
    shutil.rmtree(work, ignore_errors=True)
    now = time.time()
    entries = seed(root, now, history)
    if impl == "old":
        entries = {f: registry_v1.Entry(**vars(e)) for f, e in entries.items()}
        write = lambda force: registry_v1.save(str(state), entries, WEEK)  # noqa: E731
        path = state / registry_v1.FILENAME
    else:
        acker = Acker(entries, str(state), WEEK, Jail.of(InputsConfig(root=str(root))))
        acker.checkpoint(force=True)  # the import: compaction, and what the week left is forgotten

        def write(force: bool) -> None:
            acker.dirty = True  # as an acknowledgement does
            acker.checkpoint(force)
        path = state / registry.FILENAME
    work_ = Workload(entries)
    lat, grown = [], []
    wb0 = write_bytes()
    for _ in range(checkpoints):
        writes = [True] if not work_.tick(time.time()) else [True, True]  # forced + timer
        for force in writes:
            before = path.stat().st_size if path.exists() else 0
            t0 = time.perf_counter()
            write(force)
            lat.append(time.perf_counter() - t0)
            size = path.stat().st_size
            grown.append(size if impl == "old" else max(0, size - before))
    wb = write_bytes() - wb0
    return {"impl": impl, "history": history, "entries_seeded": len(entries) if impl == "old" else None,
            "entries_kept": len(entries), "writes": len(lat),
            "bytes_per_write": sum(grown) / len(lat), "write_bytes_per_write": wb / len(lat),
            "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3, "registry_bytes": path.stat().st_size,
            "bytes_per_s_at_1_45": sum(grown) / len(lat) * 1.45}


# -- 2. the agent --------------------------------------------------------------------------------

class Writers:
    """Lines at a combined rate over the files (4 in 5 to the busy ones), in 50 ms ticks, and a
    busy file copytruncated every `rotate_s` (its copies shifted, the 8th deleted)."""

    def __init__(self, paths: list[Path], rate: int, rotate_s: float = 30.0):
        self.paths, self.rate, self.rotate_s = paths, rate, rotate_s
        self.stop = threading.Event()
        self.lines = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        handles = [open(p, "ab") for p in self.paths]
        t0 = next_rot = time.monotonic()
        rot = 0
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.lines < due:
                k = self.lines
                i = k % BUSY if k % 5 else BUSY + (k // 5) % QUIET
                handles[i].write(line(i, 99999, k))
                self.lines += 1
            for h in handles:
                h.flush()
            if time.monotonic() >= next_rot + self.rotate_s:
                next_rot = time.monotonic()
                copytruncate(self.paths[rot % BUSY])
                rot += 1
            time.sleep(0.05)
        for h in handles:
            h.close()


def copytruncate(path: Path) -> None:
    """logrotate's copytruncate + delaycompress, rotate ON_DISK (gzip of the copy's head only:
    compressing it all would cost the machine, not the agent, which reads only heads of
    drained copies)."""
    gz = lambda n: path.parent / f"{path.name}.{n}.gz"  # noqa: E731
    one = path.parent / f"{path.name}.1"
    gz(ON_DISK).unlink(missing_ok=True)
    for n in range(ON_DISK - 1, 1, -1):
        if gz(n).exists():
            gz(n).rename(gz(n + 1))
    if one.exists():
        with open(one, "rb") as f, gzip.open(gz(2), "wb", 1) as g:
            g.write(f.read(4096))
        one.unlink()
    shutil.copyfile(path, one)
    with open(path, "r+b") as f:
        f.truncate(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p99_bucket(port: int) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    buckets, total = [], 0.0
    for row in text.splitlines():
        if row.startswith("log_shipper_registry_write_seconds_bucket"):
            le = row.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(row.rsplit(" ", 1)[1])))
        elif row.startswith("log_shipper_registry_write_seconds_count"):
            total = float(row.rsplit(" ", 1)[1])
    for le, n in sorted(buckets):
        if total and n >= 0.99 * total:
            return le
    return None


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (utime + stime) and RSS bytes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def old_tree(work: Path) -> Path:
    tree = work / f"log-shipper-{OLD_COMMIT}"
    if not (tree / "agent").exists():
        tree.mkdir(parents=True, exist_ok=True)
        repo = Path(__file__).resolve().parents[2]
        archive = subprocess.run(["git", "-C", str(repo), "archive", OLD_COMMIT, "agent"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def agent_run(work: Path, impl: str, history: bool, rate: int, seconds: float, warmup: float = 30.0) -> dict:
    shutil.rmtree(work / "log", ignore_errors=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    root, state = work / "log", work / "state"
    entries = seed(root, time.time(), history)
    registry_v1.save(str(state), {f: registry_v1.Entry(**vars(e)) for f, e in entries.items()}, WEEK)
    null = NullBulk().start()
    port = free_port()
    cfg = write_config(work / "agent.json", null.url, root, state, "bench-history",
                       formats=[{"glob": "**", "format": "raw"}], health={"enabled": True, "port": port},
                       batch={"flush_interval_s": 0.5}, registry={"flush_interval_s": 1.0},
                       reader={"idle_flush_s": 5.0, "rescan_interval_s": 10.0, "close_removed_after_s": 5.0})
    if impl == "old":  # it refuses sections it does not know
        cfg.write_bytes(orjson.dumps({k: v for k, v in orjson.loads(cfg.read_bytes()).items() if k != "fleet"}))
    # The old agent's package first on the path (and not the current directory's).
    env = {"PYTHONPATH": str(old_tree(work.parent)), "PYTHONSAFEPATH": "1"} if impl == "old" else {}
    agent = AgentProcess(cfg, work / f"agent-{impl}-{history}.log", env=env).start()
    pid = agent.proc.pid
    writers = Writers(files(root), rate)
    try:
        writers.thread.start()
        time.sleep(warmup)
        wb0, (cpu0, _), t0 = write_bytes(pid), proc_stat(pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss.append(proc_stat(pid)[1])
        wb1, (cpu1, _), t1 = write_bytes(pid), proc_stat(pid), time.monotonic()
        p99 = p99_bucket(port)
        reg = state / (registry.FILENAME if impl == "new" else registry_v1.FILENAME)
        size = reg.stat().st_size
    finally:
        writers.stop.set()
        writers.thread.join()
        agent.stop()
        null.stop()
    return {"impl": impl, "history": history, "seeded_entries": len(entries), "rate": rate, "seconds": t1 - t0,
            "write_bytes_per_s": (wb1 - wb0) / (t1 - t0), "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
            "rss_mib_max": max(rss) / 2**20, "registry_bytes": size, "checkpoint_p99_le_s": p99,
            "lines_written": writers.lines}


# -- 3. the soak -----------------------------------------------------------------------------------

LOGROTATE_CONF = """{root}/*/*.log {{
  missingok
  rotate {rotate}
  copytruncate
  compress
  notifempty
  size 2M
}}
"""


def soak(work: Path, rate: int, minutes: float, every_s: float = 60.0) -> list[dict]:
    """The new agent from a week of history, real logrotate (the stemcell's stanza with `size 2M`)
    run every 15 s: registry size, entries, RSS, CPU and bytes written, sampled every `every_s`."""
    shutil.rmtree(work, ignore_errors=True)
    root, state = work / "log", work / "state"
    entries = seed(root, time.time(), True)
    registry_v1.save(str(state), {f: registry_v1.Entry(**vars(e)) for f, e in entries.items()}, WEEK)
    for path in files(root):  # the names this stanza gives (no delaycompress): x.log.1.gz ... x.log.7.gz
        one = path.parent / f"{path.name}.1"
        with gzip.open(path.parent / f"{path.name}.1.gz", "wb", 1) as g:
            g.write(one.read_bytes())
        one.unlink()
    conf = work / "logrotate.conf"
    conf.write_text(LOGROTATE_CONF.format(root=root, rotate=ON_DISK))
    null = NullBulk().start()
    cfg = write_config(work / "agent.json", null.url, root, state, "bench-soak",
                       formats=[{"glob": "**", "format": "raw"}], batch={"flush_interval_s": 0.5},
                       registry={"flush_interval_s": 1.0},
                       reader={"idle_flush_s": 5.0, "rescan_interval_s": 10.0, "close_removed_after_s": 5.0})
    agent = AgentProcess(cfg, work / "agent-soak.log").start()
    pid = agent.proc.pid
    writers = Writers(files(root), rate, rotate_s=float("inf"))
    halt = threading.Event()
    rotations = [0]

    def rotate() -> None:
        while not halt.wait(15.0):
            subprocess.run(["logrotate", "-s", str(work / "logrotate.state"), str(conf)], capture_output=True)
            rotations[0] += 1

    rotator = threading.Thread(target=rotate, daemon=True)
    samples = []
    try:
        writers.thread.start()
        rotator.start()
        t0 = time.monotonic()
        wb, (cpu, _) = write_bytes(pid), proc_stat(pid)
        last = t0
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(every_s)
            now = time.monotonic()
            wb1, (cpu1, rss) = write_bytes(pid), proc_stat(pid)
            st = registry.load_state(str(state), report=False)
            samples.append({"minute": round((now - t0) / 60, 1), "registry_bytes": (state / registry.FILENAME).stat().st_size,
                            "entries": len(st.entries), "retired": len(st.retired), "rss_mib": rss / 2**20,
                            "cpu_pct": (cpu1 - cpu) / (now - last) * 100, "write_kib_s": (wb1 - wb) / (now - last) / 1024,
                            "logrotate_runs": rotations[0], "lines": writers.lines})
            print(json.dumps(samples[-1]), flush=True)
            wb, cpu, last = wb1, cpu1, now
    finally:
        halt.set()
        writers.stop.set()
        writers.thread.join()
        agent.stop()
        null.stop()
    return samples


def table(res: dict) -> str:
    out = []
    if res.get("registry"):
        out.append(f"{'registry':<10}{'history':<9}{'kept':>6}{'writes':>7}{'B/write':>10}{'wb/write':>10}"
                   f"{'p50 ms':>8}{'p99 ms':>8}{'size B':>10}{'B/s@1.45':>10}")
        for r in res["registry"]:
            out.append(f"{r['impl']:<10}{'week' if r['history'] else 'fresh':<9}{r['entries_kept']:>6}{r['writes']:>7}"
                       f"{r['bytes_per_write']:>10.0f}{r['write_bytes_per_write']:>10.0f}{r['p50_ms']:>8.2f}"
                       f"{r['p99_ms']:>8.2f}{r['registry_bytes']:>10}{r['bytes_per_s_at_1_45']:>10.0f}")
    if res.get("soak"):
        out.append("")
        out.append(f"{'minute':>7}{'registry B':>12}{'entries':>9}{'retired':>9}{'RSS MiB':>9}{'CPU %':>7}{'write KiB/s':>12}")
        for r in res["soak"]:
            out.append(f"{r['minute']:>7}{r['registry_bytes']:>12}{r['entries']:>9}{r['retired']:>9}{r['rss_mib']:>9.1f}"
                       f"{r['cpu_pct']:>7.1f}{r['write_kib_s']:>12.1f}")
    if res.get("agent"):
        out.append("")
        out.append(f"{'agent':<10}{'history':<9}{'write KiB/s':>12}{'CPU %':>8}{'RSS MiB':>9}{'registry B':>12}{'p99 le s':>10}")
        for r in res["agent"]:
            out.append(f"{r['impl']:<10}{'week' if r['history'] else 'fresh':<9}{r['write_bytes_per_s'] / 1024:>12.1f}"
                       f"{r['cpu_pct']:>8.1f}{r['rss_mib_max']:>9.1f}{r['registry_bytes']:>12}{r['checkpoint_p99_le_s']!s:>10}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=900)
    ap.add_argument("--agent-seconds", type=float, default=120.0)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--soak-minutes", type=float, default=30.0)
    ap.add_argument("--parts", default="registry,agent", help="any of registry,agent,soak")
    ap.add_argument("--out", default="bench-history.json")
    args = ap.parse_args()
    base = Path(os.environ.get("LOG_SHIPPER_BENCH_TMP", tempfile.gettempdir())) / "log-shipper-bench-history"
    res: dict = {}
    parts = args.parts.split(",")
    if "registry" in parts:
        res["registry"] = [registry_run(base / f"reg-{impl}-{h}", impl, h, args.checkpoints)
                           for h in (False, True) for impl in ("old", "new")]
        print(table({"registry": res["registry"]}), flush=True)
    if "agent" in parts:
        res["agent"] = []
        for h in (False, True):
            for impl in ("old", "new"):
                res["agent"].append(agent_run(base / "agent", impl, h, args.rate, args.agent_seconds))
                print(json.dumps(res["agent"][-1]), flush=True)
    if "soak" in parts:
        res["soak"] = soak(base / "soak", args.rate, args.soak_minutes)
    print(table(res))
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
