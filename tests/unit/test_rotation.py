"""Rotated-copy discovery on crafted directories: which names, in which order, whose."""

from __future__ import annotations

import gzip
import os

from agent import identity, rotation
from agent.config import InputsConfig
from agent.contain import Jail
from agent.identity import Head
from agent.registry import Entry


def _head_of(root):
    return lambda cand: Jail.of(InputsConfig(root=str(root))).head(cand, identity.HEAD_BYTES)


def _write(path, data: bytes, mtime: float) -> str:
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return str(path)


def _entry(fid: str, path: str, data: bytes, devino=(0, 0)) -> Entry:
    h = Head.of(data[: identity.HEAD_BYTES])
    return Entry(fid, path, devino[0], devino[1], h.length, h.hash)


def test_siblings_are_names_that_extend_the_file_name(tmp_path):
    for name in ["x.log", "x.log.1", "x.log.2.gz", "x.logger", "y.log", "y.log.1", "a-x.log.1"]:
        (tmp_path / name).write_bytes(b"l\n")
    got = sorted(os.path.basename(p) for p in rotation.siblings(str(tmp_path / "x.log")))
    # "x.logger" extends the name too: it is a candidate, and its head decides whose it is.
    assert got == ["x.log.1", "x.log.2.gz", "x.logger"]


def test_siblings_of_a_missing_directory_are_none(tmp_path):
    assert rotation.siblings(str(tmp_path / "gone" / "x.log")) == []


def test_search_order_same_inode_first_then_newest_generation_plain_before_gzip(tmp_path):
    old2 = _write(tmp_path / "x.log.2", b"two\n", 1000)
    new1 = _write(tmp_path / "x.log.1", b"one\n", 3000)
    new1gz = _write(tmp_path / "x.log.1.gz", b"one\n", 2000)
    renamed = _write(tmp_path / "x.log.3", b"me\n", 10)
    st = os.stat(renamed)
    got = rotation.search_order([old2, new1gz, renamed, new1], (st.st_dev, st.st_ino))
    # Generation 1 was last written at 3000 (its plain copy): both its names come before
    # generation 2, plain first; the file's own inode beats every generation.
    assert got == [renamed, new1, new1gz, old2]


def test_plain_first_keeps_listing_order_otherwise():
    assert rotation.plain_first(["a.1.gz", "a.2", "a.3.gz", "a.1"]) == ["a.2", "a.1", "a.1.gz", "a.3.gz"]


def test_a_copy_with_another_entrys_inode_and_head_is_owned_by_it(tmp_path):
    live, heads = str(tmp_path / "x.log"), _head_of(tmp_path)
    cand = _write(tmp_path / "x.log.1", b"first line of other\nmore\n", 100)
    st = os.stat(cand)
    mine = _entry("mine", live, b"first line of mine\n")
    other = _entry("other", live, b"first line of other\nmore\n", (st.st_dev, st.st_ino))
    assert rotation.owned_by_other([mine, other], "mine", live, cand, Head(mine.head_len, mine.head_hash), heads)
    assert not rotation.owned_by_other([mine, other], "other", live, cand, Head(other.head_len, other.head_hash), heads)


def test_a_short_head_does_not_own_a_copy_that_begins_with_a_longer_known_head(tmp_path):
    """A young file's head ("L1") also begins later generations; a copy that begins with
    another entry's longer head is that entry's."""
    live, heads = str(tmp_path / "x.log"), _head_of(tmp_path)
    cand = _write(tmp_path / "x.log.1.gz", b"L1|abc\nL2|def\n", 100)
    young = _entry("young", live, b"L1")
    grown = _entry("grown", live, b"L1|abc\nL2|def\n", (1, 1))
    assert rotation.owned_by_other([young, grown], "young", live, cand, Head(young.head_len, young.head_hash), heads)
    # Entries of other paths never own it.
    elsewhere = _entry("elsewhere", str(tmp_path / "y.log"), b"L1|abc\nL2|def\n", (1, 1))
    assert not rotation.owned_by_other([young, elsewhere], "young", live, cand, Head(young.head_len, young.head_hash), heads)


def test_known_heads_and_begins_with_any():
    a = _entry("a", "/l/x.log", b"L1|abc\n")
    b = _entry("b", "/l/y.log", b"L9|zzz\n")
    assert rotation.known_heads([a, b], "/l/x.log") == [Head(a.head_len, a.head_hash)]
    heads = rotation.head_index(rotation.known_heads([a, b], "/l/x.log"))
    assert rotation.begins_with_any(b"L1|abc\nL2|more\n", heads)
    assert not rotation.begins_with_any(b"L9|zzz\n", heads)
