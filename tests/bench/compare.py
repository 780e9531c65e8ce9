"""Old agent versus new, interleaved: CPU per million lines into the null `_bulk` endpoint, and
the steady-state share of a core (`make bench BASE=<commit>`).

    .venv/bin/python -m tests.bench.compare --base 782ef38 [--new HEAD|.] [--lines 2000000] [--pairs 3]
        [--workloads raw,parsed,steady] [--perline]

The machine is shared and its speed drifts up to 2x within hours, so runs hours apart do not
compare: each pair runs base then new back to back (A B A B ...) on the same per-format corpus, and
the ratio is the median of the per-pair ratios. `steady` is tests/bench/steady.py at 2,000 lines/s
over 20 files (% of a core). `--base`/`--new` are commits, checked out once with
`git archive` (only `agent/`) under the bench cache; `.` is this working tree. The harness (this
file, the null endpoint, the corpus) is this tree's for both, and each agent runs with its own
defaults for batching, reading and the registry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench import corpus, steady
from tests.bench.run import CACHE, RAW_RULES, events_of, files_of, ship_to_null

REPO = Path(__file__).resolve().parents[2]


def tree_of(rev: str) -> Path | None:
    """A directory with `rev`'s `agent/` package (cached by full commit id), or None for this tree."""
    if rev == ".":
        return None
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    tree = CACHE / "trees" / sha
    if not (tree / "agent").is_dir():
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix="tree-"))
        archive = subprocess.run(["git", "archive", sha, "agent"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tree.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
        tmp.rename(tree)
    return tree


def perline(tree: Path | None, lines: int, raw: bool) -> float:
    """CPU-s/M lines of tests/bench/perline.py (this tree's) over `tree`'s agent package."""
    cmd = [sys.executable, "-m", "tests.bench.perline", "--lines", str(lines), *(["--raw"] if raw else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=tree or REPO, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.splitlines()[-1].split()[-3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the older commit")
    ap.add_argument("--new", default=".", help="the newer commit, or . for this working tree")
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--workloads", default="raw,parsed", help="of raw, parsed, steady")
    ap.add_argument("--perline", action="store_true",
                    help="time tests/bench/perline.py (the per-line path in-process) instead of the whole agent")
    args = ap.parse_args()
    root, counts = corpus.ensure(CACHE, args.lines, "per_format")
    nbytes = sum(p.stat().st_size for p in files_of(root))
    trees = {"base": tree_of(args.base), "new": tree_of(args.new)}
    work = Path(tempfile.mkdtemp(prefix="log-shipper-compare-"))
    rows = []
    try:
        for workload in args.workloads.split(","):
            parsing = workload == "parsed"
            expected = events_of(root, counts, parsing)
            cpu: dict[str, list[float]] = {"base": [], "new": []}
            for i in range(args.pairs):
                for side in ("base", "new"):
                    if workload == "steady":
                        cpu[side].append(steady.measure(20, 2000, 45.0, 10.0, trees[side])["cpu_pct_of_core"])
                        print(f"steady pair {i + 1} {side}: {cpu[side][-1]:.2f}% of a core", flush=True)
                        continue
                    if args.perline:
                        cpu[side].append(perline(trees[side], args.lines, not parsing))
                        print(f"{workload} pair {i + 1} {side}: {cpu[side][-1]:.2f} CPU-s/M (per-line path)", flush=True)
                        continue
                    r = ship_to_null(work, root, expected, nbytes, None if parsing else RAW_RULES, 600, trees[side])
                    cpu[side].append(r["cpu_s_per_m"])
                    print(f"{workload} pair {i + 1} {side} ({args.base if side == 'base' else args.new}):"
                          f" {r['cpu_s_per_m']:.2f} CPU-s/M (main thread {r['main_thread_cpu_s_per_m_incl_start']:.2f}"
                          f" incl. start), {r['lines_s']:,.0f} lines/s,"
                          f" peak RSS {r['peak_rss_mib']:.1f} MiB", flush=True)
            ratios = [n / b for b, n in zip(cpu["base"], cpu["new"])]
            rows.append((workload, statistics.median(cpu["base"]), statistics.median(cpu["new"]),
                         statistics.median(ratios), ratios))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'workload':10} {'base':>13} {'new':>12} {'new/base':>9}  per pair"
          f"   (medians of {args.pairs} interleaved pairs; CPU-s per 1M of {sum(counts.values()):,} lines,"
          f" steady: % of a core)")
    for workload, base, new, ratio, ratios in rows:
        print(f"{workload:10} {base:13.2f} {new:12.2f} {ratio:8.3f}x  {' '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
