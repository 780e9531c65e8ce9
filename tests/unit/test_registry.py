"""Registry: a journal of changed entries, torn tails dropped, compaction atomic, corrupt files
moved aside, newer versions refused, version 1 imported."""

from __future__ import annotations

import dataclasses
import os

import orjson
import pytest

from agent import registry
from agent.registry import FILENAME, V1_FILENAME, Entry, Journal
from tests.support import registry_v1


def entry(fid: str, **kw) -> Entry:
    return Entry(fid, f"/var/vcap/sys/log/job/{fid}.log", 1, 2, 4, "abcd", **kw)


def logged(capfd) -> list[dict]:
    return [orjson.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]


def test_write_then_load_round_trips(tmp_path):
    entries = {"a": entry("a", offset=10, tail="t", size=20, lost_bytes=3), "b": entry("b", gone=True)}
    Journal(str(tmp_path), 3600).write(entries)
    assert registry.load(str(tmp_path)) == entries
    assert not (tmp_path / (FILENAME + ".tmp")).exists()


def test_a_checkpoint_appends_only_what_changed(tmp_path):
    entries = {f"f{i}": entry(f"f{i}", offset=i, size=100) for i in range(500)}
    j = Journal(str(tmp_path), 3600)
    first = j.write(entries)
    assert first.compacted and first.records == 500
    size = (tmp_path / FILENAME).stat().st_size
    entries["f7"].offset = 99
    second = j.write(entries)
    assert not second.compacted and second.records == 1
    one = len(registry.frame(orjson.dumps({"put": [entries["f7"]]})))
    assert second.bytes == one and (tmp_path / FILENAME).stat().st_size == size + one
    assert j.write(entries).bytes == 0  # nothing changed: nothing written
    del entries["f3"]  # the reader dropped it
    entries["new"] = entry("new")
    assert j.write(entries).records == 2
    assert registry.load(str(tmp_path)) == entries


def test_retired_entries_leave_the_entries_and_keep_their_identity(tmp_path):
    entries = {"a": entry("a", offset=20, size=20, tail="tt", gone=True), "b": entry("b")}
    j = Journal(str(tmp_path), 3600)
    j.write(entries)
    j.retire(entries, "a", now=1000.0)
    assert "a" not in entries and j.write(entries, now=1000.0).records == 1
    state = registry.load_state(str(tmp_path))
    assert state.entries == {"b": entry("b")}
    assert state.retired == {"a": registry.Retired("a", 1, 2, 4, "abcd", 20, "tt", 1000)}
    # Kept across compaction, and across a restart (a new Journal reads them back).
    j2 = Journal(str(tmp_path), 3600)
    assert j2.write(entries, now=1000.0 + 3600).compacted
    assert set(registry.load_state(str(tmp_path)).retired) == {"a"}
    # Bounded by keep_retired_s: dropped by the first compaction after it.
    Journal(str(tmp_path), 3600).write(entries, now=1000.0 + 3601)
    assert registry.load_state(str(tmp_path)).retired == {}


def test_retired_identities_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MAX_RETIRED", 3)
    entries = {f"f{i}": entry(f"f{i}", gone=True) for i in range(5)}
    j = Journal(str(tmp_path), 3600)
    for i in range(5):
        j.retire(entries, f"f{i}", now=100.0 + i)
    j.write(entries, now=110.0)  # the first write compacts: the oldest two go
    assert set(registry.load_state(str(tmp_path)).retired) == {"f2", "f3", "f4"}


def test_a_torn_last_checkpoint_is_dropped_never_misread(tmp_path, capfd):
    """Cut the file anywhere inside the last record: the state is the checkpoint before."""
    entries = {"a": entry("a", offset=5), "b": entry("b", offset=6)}
    j = Journal(str(tmp_path), 3600)
    j.write(entries)
    before = {k: dataclasses.replace(v) for k, v in entries.items()}
    whole = (tmp_path / FILENAME).read_bytes()
    entries["a"].offset, entries["b"].offset = 50, 60
    j.write(entries)
    data = (tmp_path / FILENAME).read_bytes()
    j.close()
    for n in range(len(whole), len(data)):
        (tmp_path / FILENAME).write_bytes(data[:n])
        assert registry.load(str(tmp_path)) == before, n
    events = logged(capfd)
    dropped = [r for r in events if r["event"] == "registry_tail_dropped"]
    assert len(dropped) == len(data) - len(whole) - 1  # every cut but the empty one
    assert dropped[-1]["dropped_bytes"] == len(data) - len(whole) - 1 and dropped[-1]["hint"]
    (tmp_path / FILENAME).write_bytes(data)
    assert registry.load(str(tmp_path))["a"].offset == 50


@pytest.mark.parametrize("where", [0, 8, 17, 20, -2, -1])
def test_a_damaged_last_record_fails_its_checksum_or_framing(tmp_path, where):
    entries = {"a": entry("a", offset=5)}
    j = Journal(str(tmp_path), 3600)
    j.write(entries)
    start = (tmp_path / FILENAME).stat().st_size
    entries["a"].offset = 500
    j.write(entries)
    data = bytearray((tmp_path / FILENAME).read_bytes())
    i = start + where if where >= 0 else len(data) + where
    data[i] = ord("0") if data[i] != ord("0") else ord("1")  # one character changed, lengths kept
    (tmp_path / FILENAME).write_bytes(bytes(data))
    assert registry.load(str(tmp_path))["a"].offset == 5


def test_the_first_write_after_a_crash_compacts_so_nothing_is_appended_after_a_torn_tail(tmp_path):
    entries = {"a": entry("a", offset=5)}
    Journal(str(tmp_path), 3600).write(entries)
    with open(tmp_path / FILENAME, "ab") as f:
        f.write(b"0000004a 1234")  # a torn record
    loaded = registry.load(str(tmp_path))
    j = Journal(str(tmp_path), 3600)
    assert j.write(loaded).compacted
    loaded["a"].offset = 7
    assert not j.write(loaded).compacted
    assert registry.load(str(tmp_path))["a"].offset == 7


def test_the_journal_is_compacted_once_it_outgrows_its_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "COMPACT_MIN_BYTES", 1000)
    entries = {f"f{i}": entry(f"f{i}") for i in range(3)}
    j = Journal(str(tmp_path), 3600)
    j.write(entries)
    snapshot = (tmp_path / FILENAME).stat().st_size
    compactions = 0
    for k in range(1, 200):
        entries["f1"].offset = k
        compactions += j.write(entries).compacted
        size = (tmp_path / FILENAME).stat().st_size
        assert size <= snapshot + max(1000, registry.COMPACT_RATIO * snapshot) + 400
    assert compactions >= 3
    assert registry.load(str(tmp_path)) == entries


@pytest.mark.parametrize("step", ["write", "fsync", "rename"])
def test_a_compaction_that_fails_leaves_the_old_registry_whole(tmp_path, monkeypatch, step):
    entries = {"a": entry("a", offset=5)}
    Journal(str(tmp_path), 3600).write(entries)
    entries["a"].offset = 99
    j = Journal(str(tmp_path), 3600)  # its first write compacts

    def die(*a, **kw):
        raise OSError(f"killed at {step}")

    target = {"write": (registry, "_write_all"), "fsync": (registry.os, "fsync"), "rename": (registry.os, "replace")}[step]
    monkeypatch.setattr(*target, die)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        j.write(entries)
    assert len(os.listdir("/proc/self/fd")) == fds  # the temp file is not left open
    monkeypatch.undo()
    assert registry.load(str(tmp_path))["a"].offset == 5  # a stale temp file is ignored
    assert j.write(entries).compacted
    assert registry.load(str(tmp_path))["a"].offset == 99
    assert not (tmp_path / (FILENAME + ".tmp")).exists()


def test_an_append_that_fails_is_followed_by_a_compaction(tmp_path, monkeypatch):
    entries = {"a": entry("a", offset=5), "b": entry("b")}
    j = Journal(str(tmp_path), 3600)
    j.write(entries)
    entries["a"].offset = 6
    real = registry._write_all

    def half(fd, data):
        real(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry, "_write_all", half)
    with pytest.raises(OSError):
        j.write(entries)
    monkeypatch.undo()
    assert registry.load(str(tmp_path))["a"].offset == 5
    entries["b"].offset = 1
    assert j.write(entries).compacted  # not appended after the half record
    assert registry.load(str(tmp_path)) == entries


def _journal(*records: bytes) -> bytes:
    return b"".join(registry.frame(r) for r in records)


HEADER = b'{"version":2}'
GOOD = orjson.dumps(dataclasses.asdict(entry("x")))


@pytest.mark.parametrize("name,content", [
    (V1_FILENAME, b"{not json"),
    (V1_FILENAME, b'{"version": 99, "entries": []}'),
    (V1_FILENAME, b'{"version": 1}'),
    (V1_FILENAME, b'{"version": 1, "entries": [{"fid": "x"}]}'),
    (V1_FILENAME, b"[]"),
    (V1_FILENAME, b'{"version": 1, "entries": [%s]}' % GOOD.replace(b'"size":0', b'"size":"10"')),
    (V1_FILENAME, b'{"version": 1, "entries": [%s]}' % GOOD.replace(b'"gone":false', b'"gone":0')),
    (V1_FILENAME, b'{"version": 1, "entries": [%s]}' % GOOD.replace(b'"offset":0', b'"offset":1.5')),
    (FILENAME, b""),
    (FILENAME, b"garbage that is no record"),
    (FILENAME, _journal(b'{"version":"2"}')),
    (FILENAME, _journal(b'{"version":1}')),
    (FILENAME, _journal(HEADER, b'{"put": [%s]}' % GOOD.replace(b'"size":0', b'"size":"10"'))),
    (FILENAME, _journal(HEADER, b'{"put": [%s]}' % GOOD.replace(b'"fid":"x",', b""))),
    (FILENAME, _journal(HEADER, b'{"put": [%s]}' % GOOD.replace(b"{", b'{"extra":1,', 1))),
    (FILENAME, _journal(HEADER, b'{"put": {}}')),
    (FILENAME, _journal(HEADER, b'{"del": [7]}')),
    (FILENAME, _journal(HEADER, b'{"retire": [["x"]]}')),
    (FILENAME, _journal(HEADER, b'{"compact": []}')),
    (FILENAME, _journal(HEADER, b"[1, 2]")),
    (FILENAME, _journal(HEADER, b"{not json")),
])
def test_corrupt_registry_is_moved_aside_with_a_clear_error(tmp_path, capfd, name, content):
    (tmp_path / name).write_bytes(content)
    assert registry.load(str(tmp_path)) == {}
    assert not (tmp_path / name).exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(name + ".corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content
    err = [r for r in logged(capfd) if r["event"] == "registry_corrupt"]
    assert err and err[0]["level"] == "error" and err[0]["moved_to"] == str(aside[0]) and err[0]["error"]
    # The agent starts afresh and can save again.
    Journal(str(tmp_path), 3600).write({"a": entry("a")})
    assert list(registry.load(str(tmp_path))) == ["a"]


def test_a_registry_written_by_a_newer_agent_is_refused_not_misread(tmp_path, capfd):
    content = _journal(b'{"version":3}', b'{"whatever": "a newer agent writes"}')
    (tmp_path / FILENAME).write_bytes(content)
    with pytest.raises(registry.RegistryTooNew, match="version 3; this log-shipper reads up to version 2"):
        registry.load(str(tmp_path))
    assert (tmp_path / FILENAME).read_bytes() == content  # left as it is for the newer agent
    err = [r for r in logged(capfd) if r["event"] == "registry_too_new"]
    assert err and err[0]["level"] == "error" and "newer" in err[0]["hint"]


def test_missing_registry_is_an_empty_start(tmp_path):
    assert registry.load(str(tmp_path / "new")) == {}


def test_a_version_1_registry_written_by_the_old_code_is_imported_then_removed(tmp_path):
    now = 1_700_000_000.0
    old = {
        "live": registry_v1.Entry("live", "/var/vcap/sys/log/gorouter/access.log", 64768, 1234, 256, "h1", offset=4096,
                                  tail="t1", size=8192, caught_up_at=now - 5, updated_at=now - 1),
        "gone": registry_v1.Entry("gone", "/var/vcap/sys/log/gorouter/access.log", 64768, 1234, 256, "h0", offset=100,
                                  size=100, updated_at=now - 50, lost_bytes=7, lost_at=now - 60, gone=True),
    }
    registry_v1.save(str(tmp_path), old, forget_after_s=3600, now=now)
    assert registry.path_in(str(tmp_path)).name == V1_FILENAME  # `offsets` finds it before the agent ran
    loaded = registry.load(str(tmp_path))
    assert {fid: dataclasses.asdict(e) for fid, e in loaded.items()} == {fid: dataclasses.asdict(e) for fid, e in old.items()}
    assert (tmp_path / V1_FILENAME).exists()  # loading changes nothing
    Journal(str(tmp_path), 3600).write(loaded)
    assert (tmp_path / V1_FILENAME).is_dir()  # in an older agent's way: it would read past the journal
    assert "older log-shipper" in (tmp_path / V1_FILENAME / "README").read_text()
    assert registry.path_in(str(tmp_path)).name == FILENAME
    assert registry.load(str(tmp_path)) == loaded


def test_after_the_upgrade_the_reader_carries_on_where_the_old_agent_stopped(tmp_path):
    """A file half shipped by the old agent: the new reader resumes at its offset, same fid."""
    from agent import identity
    from agent.config import InputsConfig, ReaderConfig
    from agent.contain import Jail
    from agent.reader import Reader

    log_dir = tmp_path / "log" / "job"
    log_dir.mkdir(parents=True)
    f = log_dir / "a.log"
    f.write_bytes(b"line one\nline two\nline three\n")
    st = f.stat()
    head = f.read_bytes()[: identity.HEAD_BYTES]
    h = identity.Head.of(head)
    fid = identity.new_fid(st.st_dev, st.st_ino, head)
    offset = len(b"line one\n")
    old = {fid: registry_v1.Entry(fid, str(f), st.st_dev, st.st_ino, h.length, h.hash, offset=offset,
                                  tail=identity.tail_hash(b"line one\n"), size=st.st_size, updated_at=1.0)}
    state = tmp_path / "state"
    registry_v1.save(str(state), old, forget_after_s=3600)

    entries = registry.load(str(state))
    reader = Reader(ReaderConfig(), entries, lambda p: "job", Jail.of(InputsConfig(root=str(tmp_path / "log"))))
    reader.start([str(f)])
    assert list(reader.sources) == [fid] and reader.sources[fid].pos == offset
    chunk = reader.read(fid)
    assert chunk.base == offset and chunk.data == b"line two\nline three\n"
    reader.close_all()


def test_the_cli_refuses_a_newer_registry_with_one_clear_line(tmp_path):
    import subprocess
    import sys

    state = tmp_path / "state"
    state.mkdir()
    (state / FILENAME).write_bytes(_journal(b'{"version":3}', b'{"whatever": "a newer agent writes"}'))
    cfg = tmp_path / "c.json"
    cfg.write_text('{"inputs": {"root": "%s"}, "state_dir": "%s", "health": {"enabled": false}}' % (tmp_path, state))
    for cmd in ("offsets", "run"):
        r = subprocess.run([sys.executable, "-m", "agent.cli", cmd, "--config", str(cfg)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and "Error: registry: registry.log has version 3" in r.stderr, (cmd, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_path_that_is_not_utf8_is_stored_and_read_back_faithfully(tmp_path):
    import os as _os

    name = _os.fsdecode(b"/var/vcap/sys/log/job/bad\xff.log")
    e = entry("a")
    e.path = name
    Journal(str(tmp_path), 3600).write({"a": e, "b": entry("b")})
    loaded = registry.load(str(tmp_path))
    assert loaded["a"].path == name and _os.fsencode(loaded["a"].path) == b"/var/vcap/sys/log/job/bad\xff.log"
    assert loaded["b"] == entry("b")


def test_the_downgrade_guard_is_laid_by_the_first_journal_and_never_read_as_a_registry(tmp_path):
    Journal(str(tmp_path), 3600).write({})
    guard = tmp_path / V1_FILENAME
    assert guard.is_dir() and (guard / "README").is_file()
    (tmp_path / FILENAME).unlink()  # the journal gone (moved aside by hand): a fresh start, no crash
    assert registry.path_in(str(tmp_path)).name == FILENAME
    assert registry.load(str(tmp_path)) == {}
    Journal(str(tmp_path), 3600).write({})  # laid again without complaint
    assert guard.is_dir()
