"""Registry: atomic replacement, corrupt files moved aside, forgetting only what is gone."""

from __future__ import annotations


import orjson
import pytest

from agent import registry
from agent.registry import FILENAME, Entry


def entry(fid: str, **kw) -> Entry:
    return Entry(fid, f"/var/vcap/sys/log/job/{fid}.log", 1, 2, 4, "abcd", **kw)


def test_save_then_load_round_trips(tmp_path):
    entries = {"a": entry("a", offset=10, tail="t", size=20, lost_bytes=3), "b": entry("b")}
    registry.save(str(tmp_path), entries, forget_after_s=3600)
    assert registry.load(str(tmp_path)) == entries
    assert not (tmp_path / (FILENAME + ".tmp")).exists()


def test_save_replaces_atomically(tmp_path, monkeypatch):
    """A crash before the rename leaves the previous registry whole; a stale temp file is ignored."""
    registry.save(str(tmp_path), {"a": entry("a", offset=5)}, forget_after_s=3600)

    def die(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(registry.os, "replace", die)
    with pytest.raises(OSError):
        registry.save(str(tmp_path), {"a": entry("a", offset=99)}, forget_after_s=3600)
    monkeypatch.undo()
    (tmp_path / (FILENAME + ".tmp")).write_bytes(b'{"version": 1, "entr')  # half written
    assert registry.load(str(tmp_path))["a"].offset == 5
    registry.save(str(tmp_path), {"a": entry("a", offset=7)}, forget_after_s=3600)
    assert registry.load(str(tmp_path))["a"].offset == 7


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99, "entries": []}', b'{"version": 1}',
                                     b'{"version": 1, "entries": [{"fid": "x"}]}', b"[]"])
def test_corrupt_registry_is_moved_aside_with_a_clear_error(tmp_path, capfd, content):
    (tmp_path / FILENAME).write_bytes(content)
    assert registry.load(str(tmp_path)) == {}
    assert not (tmp_path / FILENAME).exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(FILENAME + ".corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content
    logged = [orjson.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    err = [r for r in logged if r["event"] == "registry_corrupt"]
    assert err and err[0]["level"] == "error" and err[0]["moved_to"] == str(aside[0])
    # The agent starts afresh and can save again.
    registry.save(str(tmp_path), {"a": entry("a")}, forget_after_s=3600)
    assert list(registry.load(str(tmp_path))) == ["a"]


def test_missing_registry_is_an_empty_start(tmp_path):
    assert registry.load(str(tmp_path / "new")) == {}


def test_forget_after_drops_only_gone_entries(tmp_path):
    now = 1_000_000.0
    entries = {
        "old-gone": entry("old-gone", gone=True, updated_at=now - 100),
        "new-gone": entry("new-gone", gone=True, updated_at=now - 10),
        "old-live": entry("old-live", gone=False, updated_at=now - 100),
    }
    registry.save(str(tmp_path), entries, forget_after_s=50, now=now)
    assert set(registry.load(str(tmp_path))) == {"new-gone", "old-live"}
