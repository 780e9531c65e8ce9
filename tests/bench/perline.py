"""The agent's per-line path in-process: read -> frame -> format parse -> encode -> batch body.

    .venv/bin/python -m tests.bench.perline [--lines 400000] [--raw] [--files gorouter,uaa]
    cd <older tree> && <venv>/bin/python -m tests.bench.perline   (with this tree on PYTHONPATH)

CPU seconds (`time.process_time`: the machine is shared) per million lines of the per-format corpus,
one file at a time in 256 KiB reads, each file's built-in rule, the bodies cut at the default 2 MiB as
the sender would take them. Batching goes through the agent's own `_encode` (by count and bytes
inside a chunk) where the tree has it, else a chunk's frames are encoded whole, as the agent then
did. No threads, no sockets: the main thread's work of the whole-agent run without its waits, so
two trees compare within a few percent where the whole agent needs many pairs. The imports adapt
to older trees (before agent/rules.py), so it can bisect.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

from agent import encode
from agent.config import Config
from agent.encode import FileEncoder
from agent.formats import FORMATS
from agent.frame import Framer

from tests.bench import corpus
from tests.bench.run import CACHE

try:
    from agent.rules import default_rule
except ImportError:  # an older tree: (format, multiline) from agent.formats
    from agent.formats import default_rule as _old_rule

    def default_rule(rel: str) -> SimpleNamespace:
        fmt, ml = _old_rule(rel)
        return SimpleNamespace(format=fmt, multiline=ml)

try:
    from agent.pipeline import Agent, Stream
    _ENCODE = Agent._encode
except (ImportError, AttributeError):  # before batching inside a chunk
    _ENCODE = None

META = encode.metadata({"host.name": "bench", "agent.id": "bench"}, {"bosh.deployment": "cf", "bosh.job": "router"})
CHUNK = 256 * 1024


def ship_file(path: Path, rel: str, raw: bool, cfg: Config, now: bytes) -> tuple[int, int]:
    """Every event of one file into batch bodies; events shipped, and events encoded (more when a
    batch's overshoot is encoded again)."""
    rule = default_rule(rel)
    framer = Framer(0, cfg.reader.max_line_bytes, None if raw else rule.multiline)  # raw: no multiline rule
    enc = FileEncoder("bench", "f0", str(path), rel.split("/")[0], META, None if raw else FORMATS[rule.format])
    encoded = [0]
    encode_frames = enc.encode

    def counted(frames, now: bytes, out: bytearray) -> int:  # per call, not per line: costs nothing to speak of
        encoded[0] += len(frames)
        return encode_frames(frames, now, out)

    enc.encode = counted
    agent = SimpleNamespace(batch=SimpleNamespace(body=bytearray(), docs=0), cfg=cfg, _encoder=lambda s: enc)
    stream = Stream("f0", str(path), "job", framer, 0) if _ENCODE is not None else None
    events = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            frames = framer.feed(chunk)
            events += len(frames)
            add(agent, stream, enc, frames, now)
    frames = framer.flush()
    add(agent, stream, enc, frames, now)
    return events + len(frames), encoded[0]


def add(agent: SimpleNamespace, stream, enc: FileEncoder, frames, now: bytes) -> None:
    """The pipeline's `_add` without its accounting: encode what fits, cut the batch when full."""
    batch, limits = agent.batch, agent.cfg.batch
    while len(frames):
        if _ENCODE is None:
            enc.encode(frames, now, batch.body)
            taken = len(frames)
        else:
            taken = _ENCODE(agent, stream, frames, now)
        batch.docs += taken
        frames = frames.split(taken)[1] if _ENCODE is not None else frames.__class__(0, [])
        if batch.docs >= limits.max_docs or len(batch.body) >= limits.max_bytes:
            agent.batch = batch = SimpleNamespace(body=bytearray(), docs=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=400_000, help="corpus size (selects the cached corpus)")
    ap.add_argument("--raw", action="store_true", help="every file raw: no format, no multiline (as make bench's raw)")
    ap.add_argument("--files", default="", help="only files whose path contains one of these (comma-separated)")
    args = ap.parse_args()
    root, counts = corpus.ensure(CACHE, args.lines, "per_format")
    cfg, now = Config(), encode.read_time()
    wanted = [w for w in args.files.split(",") if w]
    total_cpu, total_lines, total_events, total_encoded = 0.0, 0, 0, 0
    for rel in counts:
        if wanted and not any(w in rel for w in wanted):
            continue
        (root / rel).read_bytes()  # in the page cache, as the agent's reads mostly are
        c0 = time.process_time()
        events, encoded = ship_file(root / rel, rel, args.raw, cfg, now)
        cpu = time.process_time() - c0
        total_cpu += cpu
        total_lines += counts[rel]
        total_events += events
        total_encoded += encoded
        print(f"{rel:45} {counts[rel]:9,} lines {events:9,} events {encoded:9,} encoded"
              f" {cpu / counts[rel] * 1e6:6.2f} CPU-s/M lines")
    print(f"{'total':45} {total_lines:9,} lines {total_events:9,} events {total_encoded:9,} encoded"
          f" {total_cpu / max(1, total_lines) * 1e6:6.2f} CPU-s/M lines")


if __name__ == "__main__":
    main()
