"""One open file: a rotated copy is taken only with the right head, at the right offset."""

from __future__ import annotations

import gzip

from agent.config import InputsConfig
from agent.contain import Jail
from agent.identity import Head
from agent.source import open_copy

CONTENT = b"L1|first line\nL2|second line\nL3|third\n"


def _jail(root) -> Jail:
    return Jail.of(InputsConfig(root=str(root)))


def test_plain_copy_opens_at_the_offset_when_its_head_matches(tmp_path):
    cand = tmp_path / "x.log.1"
    cand.write_bytes(CONTENT)
    src = open_copy("fid", "/l/x.log", str(cand), Head.of(CONTENT[:10]), 14, 5.0, _jail(tmp_path))
    assert src is not None and src.final and not src.live and src.size == len(CONTENT)
    assert (src.path, src.reading_from, src.pos, src.last_data_at) == ("/l/x.log", str(cand), 14, 5.0)
    assert src.pread(100) == CONTENT[14:]
    src.close()
    assert src.fd is None


def test_gzip_copy_reads_on_from_the_uncompressed_offset(tmp_path):
    cand = tmp_path / "x.log.1.gz"
    with gzip.open(cand, "wb") as f:
        f.write(CONTENT)
    src = open_copy("fid", "/l/x.log", str(cand), Head.of(CONTENT[:10]), 14, 0.0, _jail(tmp_path))
    assert src is not None and src.gz is not None and src.pos == 14
    assert src.read_gz(100) == CONTENT[14:]
    src.close()


def test_a_copy_with_another_head_is_not_taken(tmp_path):
    plain = tmp_path / "x.log.1"
    plain.write_bytes(b"other content\n")
    gz = tmp_path / "x.log.2.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b"other content\n")
    head = Head.of(CONTENT[:10])
    assert open_copy("fid", "/l/x.log", str(plain), head, 0, 0.0, _jail(tmp_path)) is None
    assert open_copy("fid", "/l/x.log", str(gz), head, 0, 0.0, _jail(tmp_path)) is None


def test_a_damaged_or_missing_copy_is_not_taken(tmp_path):
    bad = tmp_path / "x.log.1.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    head = Head.of(CONTENT[:10])
    assert open_copy("fid", "/l/x.log", str(bad), head, 0, 0.0, _jail(tmp_path)) is None
    assert open_copy("fid", "/l/x.log", str(tmp_path / "gone.1"), head, 0, 0.0, _jail(tmp_path)) is None
