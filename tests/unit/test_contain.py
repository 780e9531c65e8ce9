"""The jail on crafted trees: what may be opened, and why the rest is refused."""

from __future__ import annotations

import os
import stat

import pytest

from agent.config import InputsConfig
from agent.contain import Jail, Refused


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "log"
    (root / "job").mkdir(parents=True)
    (root / "job" / "a.log").write_bytes(b"a\n")
    (tmp_path / "monit").mkdir()
    (tmp_path / "monit" / "monit.log").write_bytes(b"m\n")
    (tmp_path / "monit" / "monit.log.1").write_bytes(b"m0\n")
    (tmp_path / "monit" / "other.log").write_bytes(b"o\n")
    return tmp_path


def _jail(tree) -> Jail:
    return Jail.of(InputsConfig(root=str(tree / "log"), extra_paths=[str(tree / "monit" / "monit.lo?")]))


def _refusal(jail: Jail, path, **kw) -> str:
    with pytest.raises(Refused) as e:
        jail.open(str(path), **kw)
    return e.value.reason


def test_regular_files_under_the_root_or_an_extra_path_open(tree):
    jail = _jail(tree)
    for path in (tree / "log" / "job" / "a.log", tree / "monit" / "monit.log"):
        fd = jail.open(str(path))
        assert os.read(fd, 10) == path.read_bytes()
        os.close(fd)
    # A rotated copy of an extra path is beside it and extends its name.
    os.close(jail.open(str(tree / "monit" / "monit.log.1"), copy_of=str(tree / "monit" / "monit.log")))


def test_links_fifos_directories_and_outside_paths_are_refused(tree):
    jail, job = _jail(tree), tree / "log" / "job"
    (job / "link.log").symlink_to(job / "a.log")  # even a link to a file inside
    os.mkfifo(job / "f.log")  # opened it would block
    (tree / "log" / "linked").symlink_to(job, target_is_directory=True)
    assert _refusal(jail, job / "link.log") == "a symbolic link"
    assert _refusal(jail, job / "f.log") == "a FIFO"
    os.mknod(job / "zero.log", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: an endless "file"
    assert _refusal(jail, job / "zero.log") == "a device"
    (job / "urandom.log").symlink_to("/dev/urandom")
    assert _refusal(jail, job / "urandom.log") == "a symbolic link"
    assert _refusal(jail, job) == "a directory"
    assert _refusal(jail, tree / "log" / "linked" / "a.log") == "'linked' is a symbolic link, not a directory"
    assert _refusal(jail, tree / "log" / "job" / ".." / "job" / "a.log").startswith("outside")
    assert _refusal(jail, tree / "monit" / "other.log").startswith("outside")  # its dir, not its glob
    assert _refusal(jail, tree / "monit" / "other.log", copy_of=str(tree / "monit" / "monit.log")).startswith("outside")
    assert jail.refusal(str(job / "gone.log")) is None  # gone is not refused
    assert jail.refusal(str(tree / "log" / "linked" / "gone.log")).endswith("not a directory")
    with pytest.raises(FileNotFoundError):
        jail.open(str(job / "gone.log"))


def test_head_reads_plain_and_gzip_and_refuses_quietly(tree):
    import gzip

    jail, job = _jail(tree), tree / "log" / "job"
    with gzip.open(job / "a.log.1.gz", "wb") as f:
        f.write(b"zipped line\n")
    (job / "s.log.1").symlink_to(job / "a.log")
    assert jail.head(str(job / "a.log"), 1) == b"a"
    assert jail.head(str(job / "a.log.1.gz"), 6) == b"zipped"
    assert jail.head(str(job / "s.log.1"), 1) is None
