"""Per-format CPU of encoding, in-process: µs of CPU per event for raw and parsed documents.

    .venv/bin/python -m tests.bench.micro [--lines 2000000] [--per-file 100000] [--repeat 3] [--profile FILE] [--only uaa]

Frames each file of the per-format corpus (tests/bench/corpus.py) with the built-in rules, as the
agent does, then times with `time.process_time` (CPU, not wall: the machine is shared) the
`FileEncoder.encode` of those frames without a format (raw) and with the file's default format
(parsed), and the format's `extract` alone; the best of `--repeat` runs. With `--profile`, one
parsed pass of every file runs under cProfile and the stats are written to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import time
from pathlib import Path

from agent import encode
from agent.encode import FileEncoder
from agent.formats import FORMATS
from agent.rules import default_rule
from agent.frame import Framer, Frames

from tests.bench import corpus
from tests.bench.run import CACHE

META = encode.metadata(
    {"host.name": "bench", "host.ip": "10.0.0.12", "agent.name": "log-shipper", "agent.type": "log-shipper",
     "agent.version": "bench", "agent.id": "bench"},
    {"bosh.director": "test-director", "bosh.deployment": "cf", "bosh.instance.group": "router",
     "bosh.instance.index": 2, "bosh.instance.id": "6f1c1c1e-0000-4000-8000-000000000002", "bosh.instance.az": "z1"},
)
BATCH_BYTES = 2 * 2**20  # the default batch size: `out` is cleared as a sent batch would be


def frames_of(path: Path, rel: str, max_events: int) -> list[Frames]:
    ml = default_rule(rel).multiline
    fr = Framer(0, 32 * 1024, ml)
    out, n = [], 0
    with open(path, "rb") as f:
        while n < max_events and (chunk := f.read(256 * 1024)):
            frames = fr.feed(chunk)
            out.append(frames)
            n += len(frames)
    return out


def encode_cpu(enc: FileEncoder, chunks: list[Frames], now: bytes) -> float:
    out = bytearray()
    c0 = time.process_time()
    for frames in chunks:
        enc.encode(frames, now, out)
        if len(out) >= BATCH_BYTES:
            out.clear()
    return time.process_time() - c0


def extract_cpu(extract, chunks: list[Frames]) -> float:
    c0 = time.process_time()
    for frames in chunks:
        for line in frames.lines:
            extract(line)
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000, help="corpus size (selects the cached corpus)")
    ap.add_argument("--per-file", type=int, default=100_000, help="events timed per file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", help="write cProfile stats of one parsed pass here")
    ap.add_argument("--only", default="", help="time only the files whose path contains this")
    args = ap.parse_args()
    root, counts = corpus.ensure(CACHE, args.lines, "per_format")
    now = encode.read_time()
    rows, total = [], {"events": 0, "raw": 0.0, "parsed": 0.0, "extract": 0.0}
    prof = cProfile.Profile() if args.profile else None
    for i, rel in enumerate(counts):
        if args.only not in rel:
            continue
        fmt = default_rule(rel).format
        chunks = frames_of(root / rel, rel, args.per_file)
        events = sum(map(len, chunks))
        raw = FileEncoder("bench", "f%02d" % i, str(root / rel), rel.split("/")[0], META, None)
        parsed = FileEncoder("bench", "f%02d" % i, str(root / rel), rel.split("/")[0], META, FORMATS[fmt])
        t_raw = min(encode_cpu(raw, chunks, now) for _ in range(args.repeat))
        t_parsed = min(encode_cpu(parsed, chunks, now) for _ in range(args.repeat))
        t_extract = min(extract_cpu(FORMATS[fmt], chunks) for _ in range(args.repeat))
        if prof is not None:
            prof.runcall(encode_cpu, parsed, chunks, now)
        share = counts[rel] / sum(counts.values())
        rows.append((rel, fmt, events, t_raw, t_parsed, t_extract))
        # Weighted by the file's share of the corpus: the whole corpus's cost per event.
        total["events"] += share
        total["raw"] += share * t_raw / events
        total["parsed"] += share * t_parsed / events
        total["extract"] += share * t_extract / events
    print(f"{'file':45} {'format':17} {'events':>8} {'raw µs':>7} {'parsed µs':>9} {'extract µs':>10} {'parsed/raw':>10}")
    for rel, fmt, events, t_raw, t_parsed, t_extract in rows:
        print(f"{rel:45} {fmt:17} {events:8,} {t_raw / events * 1e6:7.2f} {t_parsed / events * 1e6:9.2f}"
              f" {t_extract / events * 1e6:10.2f} {t_parsed / t_raw:9.2f}x")
    print(f"{'corpus (weighted by share of lines)':63} {total['raw'] * 1e6:8.2f} {total['parsed'] * 1e6:9.2f}"
          f" {total['extract'] * 1e6:10.2f} {total['parsed'] / total['raw']:9.2f}x")
    if prof is not None:
        prof.dump_stats(args.profile)
        print(f"profile of one parsed pass: {args.profile}")


if __name__ == "__main__":
    main()
