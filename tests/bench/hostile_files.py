"""Peak RSS of the agent under the hostile file inputs of issue 14, default settings (not a test).

    .venv/bin/python -m tests.bench.hostile_files

The tree: 1 MiB of blank lines (1,048,576 events in four chunks: once one `_bulk` of 207 MB),
a 100 MB line without a newline, a catastrophic multiline rule (`^(a+)+$`) with a 32 KiB
`aaaa...ab` line, 40 ordinary files, and the planted links, FIFO and linked directory of
issue 13. Shipped into the null `_bulk` endpoint; peak RSS is the agent's VmHWM once every
event has been taken.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from tests.bench.nullbulk import NullBulk
from tests.bench.run import agent_config, hwm_bytes
from tests.support.agentproc import AgentProcess

BLANK = 1 << 20
LONG = 100 * 10**6
FILES, LINES = 40, 1000


def build(root: Path, secret: Path) -> int:
    """The hostile tree; returns how many events it holds."""
    job = root / "hostile"
    job.mkdir(parents=True)
    (job / "blank.log").write_bytes(b"\n" * BLANK)
    with open(job / "long.log", "wb") as f:
        for _ in range(LONG // 10**6):
            f.write(b"x" * 10**6)
    evil = b"a" * (32 * 1024 - 2) + b"b"
    (job / "ml.log").write_bytes(b"aaa\n" + evil + b"\naaaa\n")
    for i in range(FILES):
        d = root / f"job{i % 8}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.log").write_bytes(b"".join(b"job %d line %06d of an ordinary log file\n" % (i, n)
                                                for n in range(LINES)))
    secret.write_bytes(b"root:$6$not-for-shipping:19000:0:99999:7:::\n")
    (job / "shadow.log").symlink_to(secret)
    (root / "linked").symlink_to(secret.parent, target_is_directory=True)
    os.mkfifo(job / "fifo.log")
    return BLANK + 1 + 2 + FILES * LINES


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-", dir="/var/tmp"))
    try:
        (work / "secret").mkdir(mode=0o700)
        expected = build(work / "log", work / "secret" / "key")
        null = NullBulk().start()
        rules = [{"glob": "hostile/ml.log", "format": "raw", "multiline": {"start": "^(a+)+$"}},
                 {"glob": "**", "format": "raw"}]
        cfg = agent_config(work, null.url, work / "log", "bench-hostile", rules)
        agent = AgentProcess(cfg, work / "agent.log").start()
        t0 = time.monotonic()
        try:
            while null.docs < expected:
                if not agent.alive():
                    raise RuntimeError("agent exited:\n" + agent.log()[-3000:])
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"shipped {null.docs}/{expected} in 600 s")
                time.sleep(0.05)
            took = time.monotonic() - t0
            hwm = hwm_bytes(agent.proc.pid)
        finally:
            agent.stop()
            null.stop()
        events = [orjson.loads(ln) for ln in agent.log().splitlines() if ln.startswith("{")]
        refused = [e["path"] for e in events if e.get("event") == "file_refused"]
        print(orjson.dumps({"events": expected, "docs_received": null.docs, "bulk_requests": null.requests,
                            "bulk_mb_avg": round(null.bytes / max(1, null.requests) / 1e6, 2),
                            "seconds": round(took, 1), "peak_rss_mib": round(hwm / 2**20, 1),
                            "refused": sorted(os.path.basename(p) for p in refused)},
                           option=orjson.OPT_INDENT_2).decode())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
