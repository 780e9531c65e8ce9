"""The registry under kills: at any point of a journal write or a compaction, what loads is
exactly the last checkpoint that completed (or the one under way, if all of it reached the
file): never a mix, never an offset not yet handed to a checkpoint, nothing lost.

Two ways: a real process killed with SIGKILL at random moments, and a property test that
cuts writes short and fails fsyncs and renames at chosen points, then restarts from disk."""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import registry
from agent.registry import Entry, Journal

WINDOW = 12  # files "on disk" at once in the killed writer


def model(k: int) -> tuple[dict[str, Entry], set[str]]:
    """Entries and retired fids after checkpoint k of the killed writer (a pure function of k)."""
    entries, retired = {}, set()
    newest = k // 3
    for i in range(newest + 1):
        fid = f"f{i:05d}"
        if i > newest - WINDOW:
            entries[fid] = Entry(fid, f"/var/vcap/sys/log/j/{i % 5}.log", 1, i, 256, f"h{i}",
                                 offset=k * 1000 + i, tail=f"t{k}", size=k * 1000 + i + 7, updated_at=float(k))
        elif i % 2:
            retired.add(fid)  # odd ones are forgotten (identity kept), even ones dropped
    return entries, retired


WRITER = """
import sys
from agent import registry
from tests.unit.test_registry_crash import model, WINDOW
registry.COMPACT_MIN_BYTES = 4096  # compactions every few dozen checkpoints
state_dir = sys.argv[1]
loaded = registry.load_state(state_dir)
j = registry.Journal(state_dir, 1e12)
entries = loaded.entries
k = int(sys.argv[2])
while True:
    k += 1
    want, _ = model(k)
    for fid in [f for f in entries if f not in want]:
        if int(fid[1:]) % 2:
            j.retire(entries, fid, float(k))
        else:
            del entries[fid]
    entries.update(want)
    j.write(entries)
    sys.stdout.write(f"{k}\\n")
    sys.stdout.flush()
"""


def committed(out: bytes, start: int) -> int:
    lines = out.decode().split("\n")
    done = [int(x) for x in lines[:-1]]  # the last piece may be a half-written number
    return done[-1] if done else start


def test_a_writer_killed_at_random_moments_restarts_from_a_whole_checkpoint():
    rng = random.Random(20)
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as state_dir:
        k = 0
        for _ in range(25):
            proc = subprocess.Popen([sys.executable, "-c", WRITER, state_dir, str(k)], cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            os.set_blocking(proc.stdout.fileno(), False)
            out = b""
            deadline = time.monotonic() + 30
            while committed(out, k) < k + 1 and time.monotonic() < deadline:  # started and writing
                out += proc.stdout.read() or b""
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.15))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out += proc.stdout.read() or b""
            done = committed(out, k)
            assert done > k, "the writer never got going"
            state = registry.load_state(state_dir)
            # Either the last checkpoint it reported, or the next (written whole, killed
            # before it could say so); nothing in between, nothing later.
            candidates = {n: model(n) for n in (done, done + 1)}
            got = next((n for n, (e, r) in candidates.items() if state.entries == e and set(state.retired) == r), None)
            assert got is not None, (done, sorted(state.entries), sorted(state.retired))
            k = got
        assert k > 100  # enough checkpoints (and so compactions) went by


KILL_AT = """
import os, signal, sys
from agent import registry
from agent.registry import Entry
state_dir, point = sys.argv[1], sys.argv[2]
entries = {f"f{i}": Entry(f"f{i}", "/var/vcap/sys/log/j/x.log", 1, i, 256, f"h{i}", offset=1) for i in range(50)}
j = registry.Journal(state_dir, 1e12)
j.write(entries)  # checkpoint 1: a compaction (the first write)
for e in entries.values():
    e.offset = 2
real_write, real_replace, real_fsync_dir = registry._write_all, registry.os.replace, registry._fsync_dir

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def write(fd, data):
    if point == "half-written":
        real_write(fd, data[: len(data) // 2])
        die()
    real_write(fd, data)
    if point == "written":
        die()

def replace(src, dst):
    if point == "before-rename":
        die()
    real_replace(src, dst)
    if point == "after-rename":
        die()

registry._write_all, registry.os.replace = write, replace
if sys.argv[3] == "compact":
    j.close()  # the next write compacts
j.write(entries)  # checkpoint 2
"""


@pytest.mark.parametrize("how,point,want", [
    ("append", "half-written", 1), ("append", "written", 2),
    ("compact", "half-written", 1), ("compact", "written", 1), ("compact", "before-rename", 1),
    ("compact", "after-rename", 2),
])
def test_kill_9_at_each_step_of_an_append_and_a_compaction(tmp_path, how, point, want):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILL_AT, str(tmp_path), point, how], cwd=repo)
    assert proc.returncode == -signal.SIGKILL
    state = registry.load_state(str(tmp_path))
    assert len(state.entries) == 50 and {e.offset for e in state.entries.values()} == {want}
    # The agent restarts from it and writes on.
    j = Journal(str(tmp_path), 1e12)
    assert j.write(state.entries).compacted
    assert registry.load(str(tmp_path)) == state.entries


# -- the property test ---------------------------------------------------------------------

class Killed(Exception):
    pass


def entry(i: int) -> Entry:
    return Entry(f"f{i}", f"/var/vcap/sys/log/j/{i % 3}.log", 1, i, 256, f"h{i}")


ops = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 30), st.integers(1, 5000)),
    st.tuples(st.just("new"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("retire"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("checkpoint"), st.just(0), st.just(0)),
    # Killed during a checkpoint: in the write (after `arg` per mille of its bytes), in its
    # fsync, at the rename of a compaction, or after it (the directory fsync).
    st.tuples(st.just("kill"), st.sampled_from(["write", "fdatasync", "fsync", "replace", "dirsync"]),
              st.integers(0, 1000)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Retired and back before the next checkpoint, unchanged: nothing to write, and the journal's
# memory still held it retired while the disk holds it as an entry (issue 25).
@example(steps=[("new", 0, 0), ("checkpoint", 0, 0), ("retire", 0, 0), ("new", 0, 0)], compact_min=300)
@given(st.lists(ops, min_size=1, max_size=60), st.integers(300, 3000))
def test_killed_at_any_point_of_writes_and_compactions_the_registry_is_a_committed_checkpoint(steps, compact_min):
    with tempfile.TemporaryDirectory() as state_dir, mock.patch.object(registry, "COMPACT_MIN_BYTES", compact_min):
        entries: dict[str, Entry] = {}
        j = Journal(state_dir, 1e12)
        committed_state: tuple[dict, set] = ({}, set())  # what the last completed checkpoint holds
        for op, a, b in steps:
            if op == "advance" and f"f{a}" in entries:
                e = entries[f"f{a}"]
                e.offset += b  # acknowledged up to here: may be written from now on
                e.size = max(e.size, e.offset)
            elif op == "new" and f"f{a}" not in entries:  # a retired one may come back
                entries[f"f{a}"] = entry(a)
            elif op == "drop" and f"f{a}" in entries:
                del entries[f"f{a}"]
            elif op == "retire" and f"f{a}" in entries:
                j.retire(entries, f"f{a}", 1.0)
            elif op == "checkpoint":
                j.write(entries)
                committed_state = (copy.deepcopy(entries), set(j.retired))
            elif op == "kill":
                attempted = (copy.deepcopy(entries), set(j.retired))
                whole = _kill_during_write(j, entries, a, b)
                j.close()
                state = registry.load_state(state_dir)
                got = (state.entries, set(state.retired))
                if whole:  # every byte reached the file before the kill: either may be on disk
                    assert got in (committed_state, attempted)
                else:
                    assert got == committed_state
                # Restart: a new agent from what is on disk.
                committed_state = copy.deepcopy(got)
                entries = copy.deepcopy(state.entries)
                j = Journal(state_dir, 1e12)
        j.write(entries)
        state = registry.load_state(state_dir)
        assert (state.entries, set(state.retired)) == (entries, set(j.retired))


def _kill_during_write(j: Journal, entries: dict[str, Entry], where: str, per_mille: int) -> bool:
    """Run a checkpoint that is killed at `where`; True if all its bytes were written first."""
    real_write = registry._write_all
    wrote_all = [True]  # a compaction's temp file counts only once it is renamed

    def write(fd, data):
        if where == "write":
            n = len(data) * per_mille // 1000
            real_write(fd, data[:n])
            if n < len(data):
                wrote_all[0] = False
                raise Killed
            return  # all of it written once: no kill this time
        real_write(fd, data)

    def fail(name, real):
        def f(*args):
            if where == name:
                if name == "fsync":  # only a compaction fsyncs its temp file, before the rename
                    wrote_all[0] = False
                raise Killed
            return real(*args)
        return f

    def replace(src, dst):
        if where == "replace":
            wrote_all[0] = False  # the new file never took the old one's place
            raise Killed
        os.rename(src, dst)

    patches = [
        mock.patch.object(registry, "_write_all", write),
        mock.patch.object(registry.os, "fdatasync", fail("fdatasync", os.fdatasync)),
        mock.patch.object(registry.os, "fsync", fail("fsync", os.fsync)),
        mock.patch.object(registry.os, "replace", replace),
        mock.patch.object(registry, "_fsync_dir", fail("dirsync", registry._fsync_dir)),
    ]
    for p in patches:
        p.start()
    try:
        j.write(entries)
    except Killed:
        pass
    finally:
        for p in patches:
            p.stop()
    return wrote_all[0]
