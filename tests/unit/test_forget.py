"""Forgetting: a drained, acknowledged, idle entry whose copies are all gone from disk leaves the
registry (its identity kept as registry.Retired); what still matters stays."""

from __future__ import annotations

import gzip
import os
import time
from collections import deque

from agent import ack, identity, offsets, registry
from agent.ack import Acker, forgettable
from agent.config import InputsConfig
from agent.contain import Jail
from agent.registry import Entry

NOW = 1_800_000_000.0
WEEK = 7 * 24 * 3600.0
OLD = NOW - ack.FORGET_AFTER_IDLE_S - 1


def _jail(root) -> Jail:
    return Jail.of(InputsConfig(root=str(root)))


def gen(path, content: bytes, fid: str, **kw) -> Entry:
    """The entry of one generation of `path` whose first bytes were `content`."""
    h = identity.Head.of(content[: identity.HEAD_BYTES])
    kw.setdefault("updated_at", OLD)
    return Entry(fid, str(path), 1, 2, h.length, h.hash, **kw)


def drained(path, content: bytes, fid: str, **kw) -> Entry:
    n = kw.pop("size", 1000)
    return gen(path, content, fid, offset=n, size=n, gone=True, **kw)


A = b"2026-12-01T10:00:00Z first line of generation A\n" * 8
B = b"2026-12-01T11:00:00Z first line of generation B\n" * 8
C = b"2026-12-01T12:00:00Z the live generation\n" * 8


def test_a_drained_generation_is_forgotten_only_once_its_copies_are_gone(tmp_path):
    live = tmp_path / "x.log"
    live.write_bytes(C)
    (tmp_path / "x.log.1").write_bytes(B)
    with gzip.open(tmp_path / "x.log.2.gz", "wb") as f:
        f.write(A)
    (tmp_path / "other.log.1").write_bytes(A)  # another file's name: not a copy of x.log
    entries = {"a": drained(live, A, "a"), "b": drained(live, B, "b"), "c": gen(live, C, "c", size=len(C))}
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == []
    (tmp_path / "x.log.1").rename(tmp_path / "x.log.1.tmp")  # a name beginning with x.log is looked at too
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == []
    with gzip.open(tmp_path / "x.log.1.gz", "wb") as f:  # logrotate compressed it
        f.write(B)
    (tmp_path / "x.log.1.tmp").unlink()
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == []
    (tmp_path / "x.log.2.gz").unlink()
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == ["a"]
    (tmp_path / "x.log.1.gz").unlink()
    assert sorted(forgettable(entries, {}, NOW, WEEK, _jail(tmp_path))) == ["a", "b"]  # never the live one


def test_what_still_matters_is_kept(tmp_path):
    path = tmp_path / "x.log"  # no copies at all
    entries = {
        "lag": drained(path, A, "lag"),
        "pending": drained(path, A, "pending"),
        "young": drained(path, A, "young", updated_at=NOW - 5),
        "lost-recently": drained(path, A, "lost-recently", lost_bytes=10, lost_at=NOW - 3600),
        "lost-long-ago": drained(path, A, "lost-long-ago", lost_bytes=10, lost_at=NOW - WEEK - 1),
        "live": gen(path, A, "live"),
    }
    entries["lag"].offset = 10  # gone, but not all acknowledged: lag
    pending = {"pending": deque([object()])}
    assert forgettable(entries, pending, NOW, WEEK, _jail(tmp_path)) == ["lost-long-ago"]
    # As before, anything gone and untouched for keep_lost_s goes, whatever it holds.
    later = NOW + WEEK
    assert sorted(forgettable(entries, {}, later, WEEK, _jail(tmp_path))) == ["lag", "lost-long-ago", "lost-recently", "pending", "young"]


def test_a_directory_gone_takes_its_copies_with_it(tmp_path):
    entries = {"a": drained(tmp_path / "gone" / "x.log", A, "a")}
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == ["a"]


def test_when_a_copy_cannot_be_read_nothing_of_that_file_is_forgotten(tmp_path):
    (tmp_path / "x.log.1.gz").write_bytes(gzip.compress(B)[:12])  # a gzip still being written
    os.mkfifo(tmp_path / "x.log.fifo")  # not a copy the reader reads; must not block
    (tmp_path / "x.log.d").mkdir()
    entries = {"a": drained(tmp_path / "x.log", A, "a"), "o": drained(tmp_path / "o.log", A, "o")}
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == ["o"]
    (tmp_path / "x.log.1.gz").unlink()
    assert sorted(forgettable(entries, {}, NOW, WEEK, _jail(tmp_path))) == ["a", "o"]


def test_a_short_head_that_begins_a_copy_keeps_its_entry(tmp_path):
    """A young file's short head may begin a later generation too: kept while such a copy is there."""
    (tmp_path / "x.log.1").write_bytes(A)
    entries = {"short": drained(tmp_path / "x.log", A[:10], "short")}
    assert forgettable(entries, {}, NOW, WEEK, _jail(tmp_path)) == []


def test_the_acker_retires_what_can_be_forgotten_and_offsets_still_show_what_matters(tmp_path):
    logs, state = tmp_path / "log", tmp_path / "state"
    logs.mkdir()
    live = logs / "x.log"
    live.write_bytes(C)
    idle = time.time() - ack.FORGET_AFTER_IDLE_S - 1
    entries = {
        "old": drained(live, A, "old", updated_at=idle),
        "lost": drained(live, B, "lost", lost_bytes=77, lost_at=idle, updated_at=idle),
        "lag": drained(live, B, "lag", updated_at=idle),
        "live": gen(live, C, "live", size=len(C), offset=len(C), caught_up_at=idle, updated_at=idle),
    }
    entries["lag"].offset = 10
    before = {(r.path, r.fid, r.state, r.lag_bytes, r.lost_bytes) for r in offsets.view(list(entries.values()), _jail(tmp_path))}
    assert {f for _, f, _, _, _ in before} == {"lost", "lag", "live"}
    acker = Acker(entries, str(state), WEEK, _jail(tmp_path))
    acker.checkpoint()
    assert set(entries) == {"lost", "lag", "live"}
    old = drained(live, A, "old")
    assert acker.retired == {"old": registry.Retired("old", 1, 2, old.head_len, old.head_hash, 1000, "",
                                                     acker.retired["old"].at)}
    on_disk = registry.load_state(str(state))
    assert on_disk.entries == entries and set(on_disk.retired) == {"old"}
    assert {(r.path, r.fid, r.state, r.lag_bytes, r.lost_bytes) for r in offsets.view(list(entries.values()), _jail(tmp_path))} == before
    # Looked at again only after FORGET_CHECK_S: the next checkpoint forgets nothing.
    entries["gone-now"] = drained(live, b"another generation\n" * 20, "gone-now", updated_at=idle)
    acker.checkpoint(force=True)
    assert "gone-now" in entries and "gone-now" in registry.load(str(state))


def test_a_new_file_never_takes_the_fid_of_a_forgotten_generation(tmp_path):
    """Same device, inode and first line as a generation forgotten since (copytruncate): its
    derived fid is retired, so it gets a salted one, or its lines would be refused as 409s."""
    from agent.config import ReaderConfig
    from agent.reader import Reader

    f = tmp_path / "x.log"
    f.write_bytes(b"first line\n")
    st = f.stat()
    fid = identity.new_fid(st.st_dev, st.st_ino, b"first line\n")
    fresh = Reader(ReaderConfig(), {}, lambda p: "", _jail(tmp_path))
    fresh.start([str(f)])
    assert list(fresh.sources) == [fid]
    fresh.close_all()
    head = identity.Head.of(b"first line\n")
    gone = registry.Retired(fid, st.st_dev, st.st_ino, head.length, head.hash, 11, "", 0)
    reader = Reader(ReaderConfig(), {}, lambda p: "", _jail(tmp_path), retired={fid: gone})
    reader.start([str(f)])
    assert len(reader.sources) == 1 and fid not in reader.sources
    reader.close_all()


def test_a_copy_of_a_forgotten_generation_is_not_read_again_as_new(tmp_path):
    """Issue 25: a generation read, forgotten, and still on disk as a copy when the live file
    is truncated again is not "a rotated copy never seen live": its lines would go twice."""
    from agent.config import ReaderConfig
    from agent.reader import Reader

    f = tmp_path / "x.log"
    old = b'{"source":"uaa","data":"old generation"}\n' * 3
    (tmp_path / "x.log.2").write_bytes(old)
    f.write_bytes(b'{"source":"uaa","data":"live"}\n')
    head = identity.Head.of(identity.head_of(old))
    gone = registry.Retired("old", 1, 2, head.length, head.hash, len(old), "", 0)
    reader = Reader(ReaderConfig(), {}, lambda p: "", _jail(tmp_path), retired={"old": gone})
    reader.start([str(f)])
    [live] = reader.sources.values()
    live.pos = f.stat().st_size  # read to its end
    (tmp_path / "x.log.1").write_bytes(f.read_bytes())  # copytruncate
    f.write_bytes(b'{"source":"uaa","data":"next"}\n')
    t = time.time() + 5
    os.utime(tmp_path / "x.log.2", (t, t))  # written after the copy: a candidate for "never seen live"
    reader._truncated(live, 0.0)  # what a read that finds the file shorter does
    assert sorted(s.reading_from or s.path for s in reader.sources.values()) == [str(f), str(f) + ".1"]
    reader.close_all()


def test_a_generation_never_seen_after_one_finished_is_read_at_start(tmp_path):
    """Issue 25 (rename storm): the agent finished generation A (gone) and was killed before it
    saved B, the next one; B was rotated away and C created while it was stopped. No orphan
    leads to B, yet B is read, from its start; A is not read again."""
    from agent.config import ReaderConfig
    from agent.reader import Reader

    f = tmp_path / "x.log"
    a, b = b'{"source":"cc","data":"A"}\n' * 3, b'{"source":"cc","data":"B"}\n' * 3
    with gzip.open(tmp_path / "x.log.2.gz", "wb") as g:
        g.write(a)
    head = identity.Head.of(identity.head_of(a))
    st = (tmp_path / "x.log.2.gz").stat()
    entries = {"A": Entry("A", str(f), st.st_dev, 1, head.length, head.hash, offset=len(a), size=len(a),
                          updated_at=st.st_mtime - 1, gone=True)}
    with gzip.open(tmp_path / "x.log.1.gz", "wb") as g:
        g.write(b)
    t = st.st_mtime + 2
    os.utime(tmp_path / "x.log.1.gz", (t, t))
    f.write_bytes(b'{"source":"cc","data":"C"}\n')
    reader = Reader(ReaderConfig(), entries, lambda p: "", _jail(tmp_path))
    reader.start([str(f)])
    assert sorted(s.reading_from or s.path for s in reader.sources.values()) == [str(f), str(f) + ".1.gz"]
    assert all(s.pos == 0 for s in reader.sources.values())
    reader.close_all()


def test_a_generation_renamed_away_between_two_looks_is_read(tmp_path):
    """Issue 25 (rename storm): while the agent reads B, B is renamed away, C created, written
    and renamed too, D created; the agent then sees only x.log's new inode. C, in x.log.1, is
    read from its start, B drained from its descriptor, D read as new."""
    from agent.config import ReaderConfig
    from agent.reader import Reader

    f = tmp_path / "x.log"
    f.write_bytes(b'{"source":"cc","data":"B"}\n' * 3)
    reader = Reader(ReaderConfig(), {}, lambda p: "", _jail(tmp_path))
    reader.start([str(f)])
    os.rename(f, tmp_path / "x.log.2")
    (tmp_path / "x.log.1").write_bytes(b'{"source":"cc","data":"C"}\n' * 3)
    t = (tmp_path / "x.log.2").stat().st_mtime + 1
    os.utime(tmp_path / "x.log.1", (t, t))
    f.write_bytes(b'{"source":"cc","data":"D"}\n')
    reader.changed(str(f))
    reading = sorted((s.reading_from or s.path, s.pos, s.live) for s in reader.sources.values())
    assert reading == [(str(f), 0, False), (str(f), 0, True), (str(f) + ".1", 0, False)]
    reader.close_all()
