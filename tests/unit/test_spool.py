"""The disk spool on its own: segments, checksums, torn writes, order, bound (issue 12)."""

from __future__ import annotations

import os

import pytest

from agent import spool
from agent.batch import Batch, Segment
from agent.spool import Spool, SpoolCorrupt


def _batch(n: int, fid: str = "f1") -> Batch:
    body = bytearray(b"".join(b'{"create":{"_id":"%s-%d"}}\n{"message":"line %d %s"}\n' % (fid.encode(), i, i, b"x" * 50)
                              for i in range(n)))
    return Batch(body=body, docs=n, segments=[Segment(fid, 80 * n, "tailhash", "job1", n, 80 * n)])


def _seg_files(d) -> list[str]:
    return sorted(p for p in os.listdir(d) if p.endswith(spool.SUFFIX))


def test_a_batch_comes_back_whole_after_a_restart(tmp_path):
    d = str(tmp_path / "spool")
    b = _batch(100)
    Spool(d, 1 << 20).append(b)
    again = Spool(d, 1 << 20)  # a new run finds it
    assert again.segments == 1 and again.bytes == os.path.getsize(os.path.join(d, _seg_files(d)[0]))
    got = again.take()
    assert bytes(got.body) == bytes(b.body) and got.docs == 100
    assert [(s.fid, s.end, s.tail, s.job, s.lines, s.bytes) for s in got.segments] == [("f1", 8000, "tailhash", "job1", 100, 8000)]
    assert again.bytes < len(b.body) / 3  # compressed


def test_segments_drain_oldest_first_across_restarts_and_are_deleted_when_acknowledged(tmp_path):
    d = str(tmp_path / "spool")
    s = Spool(d, 1 << 20)
    for i in range(3):
        s.append(_batch(10 + i))
    s = Spool(d, 1 << 20)
    s.append(_batch(13))  # behind the older ones
    got = [s.take() for _ in range(4)]
    assert [b.docs for b in got] == [10, 11, 12, 13]
    assert not s.unsent()
    for b in got[:3]:
        s.delete(b.spool_seq)
    assert s.segments == 1 and len(_seg_files(d)) == 1
    assert Spool(d, 1 << 20).take().docs == 13  # sent but unacknowledged: replayed after a restart


def test_a_torn_temp_file_is_removed_never_taken_for_data(tmp_path):
    d = tmp_path / "spool"
    s = Spool(str(d), 1 << 20)
    s.append(_batch(5))
    (d / f"{1:016d}{spool.SUFFIX}{spool.TMP_SUFFIX}").write_bytes(b"".join(spool.encode(_batch(7)))[:100])
    s = Spool(str(d), 1 << 20)
    assert s.segments == 1 and not any(p.endswith(spool.TMP_SUFFIX) for p in os.listdir(d))
    assert s.take().docs == 5
    s.append(_batch(9))  # numbering continues after the surviving segment
    assert [b.docs for b in [s.take()]] == [9]


def test_the_bound_refuses_a_segment_that_would_not_fit(tmp_path):
    s = Spool(str(tmp_path / "spool"), 4000)
    assert s.room(1000)
    while s.append(_batch(100)):
        pass
    assert s.bytes <= 4000 and s.segments >= 2
    assert not s.room(4000 - s.bytes + 1)
    assert not s.append(_batch(100)) and s.segments == len(_seg_files(tmp_path / "spool"))


def test_off_means_no_directory_and_no_room(tmp_path):
    s = Spool(str(tmp_path / "spool"), 0)
    assert not s.enabled and not s.room(1) and not (tmp_path / "spool").exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[:-10], "body truncated"),
    (lambda data: data[:-50] + bytes(b ^ 0xFF for b in data[-50:-40]) + data[-40:], "body damaged"),
])
def test_a_damaged_body_is_detected_and_its_log_bytes_are_still_known(tmp_path, damage, reason):
    d = tmp_path / "spool"
    s = Spool(str(d), 1 << 20)
    for i in range(3):
        s.append(_batch(100, fid=f"f{i}"))
    path = d / _seg_files(d)[1]
    path.write_bytes(damage(path.read_bytes()))
    s = Spool(str(d), 1 << 20)
    assert s.take().segments[0].fid == "f0"
    with pytest.raises(SpoolCorrupt, match=reason) as e:
        s.take()
    assert e.value.parts == [("f1", "job1", 8000)] and str(path) in str(e.value)
    assert s.segments == 2 and not path.exists()  # given up on: deleted, the rest still drains
    assert s.take().segments[0].fid == "f2"


def test_a_damaged_header_is_detected_without_trusting_it(tmp_path):
    d = tmp_path / "spool"
    s = Spool(str(d), 1 << 20)
    s.append(_batch(10))
    path = d / _seg_files(d)[0]
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt, match="header damaged") as e:
        Spool(str(d), 1 << 20).take()
    assert e.value.parts is None


def test_spool_size_is_validated_naming_the_field():
    from agent.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"^spool\.max_bytes: must be 0 \(off\) or at least batch\.max_bytes"):
        from_dict({"spool": {"max_bytes": 1000}})
    with pytest.raises(ConfigError, match=r"^spool\.max_bytes: "):
        from_dict({"spool": {"max_bytes": -1}})
    with pytest.raises(ConfigError, match=r"^spool\.max_bytes: must be a whole number"):
        from_dict({"spool": {"max_bytes": "1G"}})
    assert from_dict({"spool": {"max_bytes": 0}}).spool.max_bytes == 0
    assert from_dict({}).spool.max_bytes == 256 * 1024 * 1024


def test_status_reads_the_spool_without_touching_it(tmp_path):
    d = tmp_path / "spool"
    s = Spool(str(d), 1 << 20)
    s.append(_batch(10))
    s.append(_batch(10))
    torn = d / f"{9:016d}{spool.SUFFIX}{spool.TMP_SUFFIX}"
    torn.write_bytes(b"x")
    st = spool.status(str(d), 1 << 20, now=os.stat(d / _seg_files(d)[0]).st_mtime + 30)
    assert (st.segments, st.bytes, st.oldest_age_s, st.full) == (2, s.bytes, 30.0, False)
    assert torn.exists()  # a running agent's temp file is not status's to remove
    assert spool.status(str(tmp_path / "none"), 0).segments == 0


def test_health_names_a_full_or_old_spool_and_not_an_empty_one():
    from agent import health
    from agent.config import HealthConfig

    cfg = HealthConfig(max_lag_age_s=300)
    assert health.problems(cfg, [], spool=spool.Status(0, 0, 0.0, 1000)) == []
    assert health.problems(cfg, [], spool=spool.Status(500, 3, 10.0, 1000)) == []  # spooling, not a problem yet
    (full,) = health.problems(cfg, [], spool=spool.Status(990, 7, 10.0, 1000))
    assert "spool full: 990 of 1000 bytes in 7 segment(s)" in full and "reading has stopped" in full
    (old,) = health.problems(cfg, [], spool=spool.Status(500, 3, 400.0, 1000))
    assert "spool holds old data" in old and "oldest 400s" in old


def test_a_refused_segment_makes_room_ask_for_as_much(tmp_path):
    s = Spool(str(tmp_path / "spool"), 3000)
    assert s.append(_batch(10))
    assert s.room(1)
    noise = Batch(body=bytearray(os.urandom(2900)), docs=1, segments=[Segment("f2", 1, "", "job1", 1, 1)])
    assert not s.append(noise)  # larger than what is left (a new largest)
    assert not s.room(1)  # reading stops rather than sending batch after batch to memory


@pytest.mark.parametrize("body_len", ["10", -1, 0, 1 << 40])
def test_a_header_with_an_impossible_body_length_is_corrupt_never_a_huge_buffer(tmp_path, body_len):
    import struct
    import zlib

    import orjson

    head, body = spool.encode(_batch(5))
    hlen = struct.unpack_from("<8sII", head)[1]
    h = orjson.loads(head[16:16 + hlen])
    h["body_len"] = body_len
    header = orjson.dumps(h)
    data = struct.pack("<8sII", spool.MAGIC, len(header), zlib.crc32(header)) + header + body
    with pytest.raises(SpoolCorrupt, match="body length") as e:
        spool.decode(data, "seg")
    assert e.value.parts == [("f1", "job1", 400)]
