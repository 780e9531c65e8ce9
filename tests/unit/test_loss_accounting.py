"""Loss accounting while reading is paused: the agent keeps watching its files (issue 12)."""

from __future__ import annotations

import gzip
import os
import shutil

from agent import pipeline, rotation
from agent.config import Config, FormatRule


class _Health:
    def __init__(self, failing: bool):
        self.is_failing = failing

    def failing(self) -> bool:
        return self.is_failing


class _StuckSender:
    """Elasticsearch away: batches are taken and never answered, requests fail."""

    def __init__(self, on_done):
        self.batches = []
        self.in_flight = 0
        self.health = _Health(True)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, batch) -> None:
        self.batches.append(batch)
        self.in_flight += 1


def _paused_agent(tmp_path, path, spool_bytes: int = 0, held_bytes: int | None = None) -> pipeline.Agent:
    cfg = Config()
    cfg.inputs.root = str(tmp_path / "log")
    cfg.state_dir = str(tmp_path / "state")
    cfg.health.enabled = cfg.fleet.enabled = False
    cfg.formats = [FormatRule(glob="**", format="raw")]
    cfg.batch.max_bytes = cfg.batch.max_inflight_bytes = 4096  # one batch spends the budget
    cfg.reader.rescan_interval_s = 1e9
    cfg.spool.max_bytes = spool_bytes
    if held_bytes is not None:
        cfg.reader.max_deleted_held_bytes = held_bytes
    agent = pipeline.Agent(cfg, _StuckSender)
    agent.start(watch=False)
    while agent.budget.room():
        assert agent.turn()
    agent.flush_batch()
    return agent


def _log(tmp_path, lines: int) -> str:
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    path = job / "x.log"
    path.write_bytes(b"".join(b"line %06d %s\n" % (i, b"x" * 60) for i in range(lines)))
    return str(path)


def _copytruncate(path: str, gz: bool) -> str:
    copy = path + (".1.gz" if gz else ".1")
    if gz:
        with open(path, "rb") as src, gzip.open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(path, copy)
    os.truncate(path, 0)
    return copy


def test_truncation_while_paused_opens_the_copy_which_keeps_its_data(tmp_path):
    path = _log(tmp_path, 1000)
    agent = _paused_agent(tmp_path, path)
    (fid,) = agent.entries
    copy = _copytruncate(path, gz=False)
    agent.reader.changed(path)  # the event of the truncation
    agent.turn()
    assert not agent.budget.room()
    assert agent.reader.source(fid).reading_from == copy
    os.unlink(copy)  # logrotate deletes it after compressing: the descriptor keeps the data
    assert agent.entries[fid].lost_bytes == 0


def _deleted_held(agent) -> int:
    return sum(os.fstat(s.fd).st_blocks * 512 for s in agent.reader.sources.values()
               if s.fd is not None and os.fstat(s.fd).st_nlink == 0)


def test_deleted_copies_past_their_bound_are_let_go_oldest_first_each_counted(tmp_path, capfd):
    path = _log(tmp_path, 1000)  # 72 KB a generation
    agent = _paused_agent(tmp_path, path, held_bytes=100_000)
    copies = []  # (fid, generation size) in rotation order
    for gen in range(3):
        (fid,) = [f for f, s in agent.reader.sources.items() if s.live]
        copies.append((fid, os.path.getsize(path)))
        copy = _copytruncate(path, gz=False)
        agent.reader.changed(path)
        agent.turn()
        assert agent.reader.source(fid).reading_from == copy
        os.unlink(copy)  # logrotate's next run: the descriptor alone keeps the data now
        with open(path, "ab") as f:  # the job writes on: the next generation
            f.write(b"".join(b"gen %d line %06d %s\n" % (gen + 1, i, b"y" * 56) for i in range(1000)))
        agent.reader.changed(path)
        agent.turn()
    read = {fid: agent.reader.source(fid).pos for fid, _ in copies}
    assert _deleted_held(agent) > 200_000  # three copies pinned: what the bound is for
    agent.next_poll = 0
    agent.turn()
    assert _deleted_held(agent) <= 100_000
    (old, old_size), (mid, mid_size), (new, _) = copies
    assert agent.reader.source(old) is None and agent.reader.source(mid) is None
    assert agent.reader.source(new) is not None  # the newest copy is still held
    assert agent.entries[old].lost_bytes == old_size - read[old]  # read to its end before the pause: 0
    assert agent.entries[mid].lost_bytes == mid_size - read[mid] > 0
    assert agent.entries[new].lost_bytes == 0
    assert "max_deleted_held_bytes" in capfd.readouterr().err


def test_copy_deleted_before_it_was_seen_counts_every_unread_byte_once(tmp_path):
    path = _log(tmp_path, 200)
    agent = _paused_agent(tmp_path, path)
    (fid,) = agent.entries
    with open(path, "ab") as f:  # grows while paused: the loss counts these bytes too
        f.write(b"late line\n" * 100)
    agent.reader.changed(path)
    agent.turn()
    size = os.path.getsize(path)
    assert agent.entries[fid].size == size
    read = agent.reader.source(fid).pos
    os.truncate(path, 0)  # copytruncate whose copy is already gone
    agent.reader.changed(path)
    agent.turn()
    agent.reader.changed(path)
    agent.turn()
    assert agent.entries[fid].lost_bytes == size - read


def test_a_gzip_copy_event_makes_its_live_file_due(tmp_path):
    path = _log(tmp_path, 1000)
    agent = _paused_agent(tmp_path, path)
    (fid,) = agent.entries
    agent.reader.rest(fid)
    copy = _copytruncate(path, gz=True)
    agent.discovery._changed.add(copy)  # a directory event: the copy's name matches no include glob
    agent.turn()
    assert agent.reader.source(fid).reading_from == copy
    assert agent.entries[fid].size >= 1000 * 72


def test_gzip_trailer_gives_the_uncompressed_size(tmp_path):
    p = tmp_path / "x.log.1.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"a" * 123457)
    assert rotation.gz_size(str(p)) == 123457
    assert rotation.gz_size(str(tmp_path / "missing.gz")) == 0


# -- the spool in the loop (a stand-in sender: these test the loop's decisions) -----------

class _Sender(_StuckSender):
    """Away until the test answers; then indexes with `create` semantics (a known `_id` is a 409)."""

    def __init__(self, on_done):
        super().__init__(on_done)
        self.on_done = on_done
        self.indexed: dict[str, bytes] = {}
        self.conflicts = 0

    def answer_all(self) -> None:
        import orjson

        while self.batches:
            b = self.batches.pop(0)
            lines = bytes(b.body).split(b"\n")[:-1]
            for action, doc in zip(lines[::2], lines[1::2]):
                _id = orjson.loads(action)["create"]["_id"]
                self.conflicts += _id in self.indexed
                self.indexed.setdefault(_id, doc)
            self.in_flight -= 1
            self.on_done(b)


def _spooling_agent(tmp_path, clock, spool_bytes=1 << 20):
    cfg = Config()
    cfg.inputs.root = str(tmp_path / "log")
    cfg.state_dir = str(tmp_path / "state")
    cfg.health.enabled = cfg.fleet.enabled = False
    cfg.formats = [FormatRule(glob="**", format="raw")]
    cfg.batch.max_bytes = cfg.batch.max_inflight_bytes = 4096
    cfg.reader.rescan_interval_s = 1e9
    cfg.reader.chunk_bytes = 4096
    cfg.spool.max_bytes = spool_bytes
    agent = pipeline.Agent(cfg, _Sender, clock)
    agent.start(watch=False)
    return agent


def _messages(indexed: dict[str, bytes]) -> list[str]:
    import orjson

    return [orjson.loads(d)["message"] for d in indexed.values()]


def test_outage_spools_offsets_advance_and_the_drain_delivers_everything_once_in_order(tmp_path):
    now = [0.0]
    path = _log(tmp_path, 1000)
    agent = _spooling_agent(tmp_path, lambda: now[0])
    while agent.budget.room():
        agent.turn()
    assert agent.spool.segments == 0  # not before SPOOL_AFTER_S without acknowledgements
    now[0] += pipeline.SPOOL_AFTER_S
    for _ in range(100):
        agent.turn()
        now[0] += 0.01
    agent.flush_batch()
    (fid,) = agent.entries
    assert agent.spool.segments > 2
    # Everything read is durable, the batch the sender holds included (spooled as well).
    assert agent.entries[fid].offset == os.path.getsize(path)
    in_memory = sum(b.docs for b in agent.sender.batches)
    agent.sender.answer_all()  # Elasticsearch is back
    for _ in range(200):
        agent.turn()
        agent.sender.answer_all()
    assert agent.spool.segments == 0 and not os.listdir(tmp_path / "state" / "spool")
    assert agent.entries[fid].offset == os.path.getsize(path)
    got = _messages(agent.sender.indexed)
    assert got == [f"line {i:06d} {'x' * 60}" for i in range(1000)]
    assert agent.sender.conflicts == in_memory > 0  # the held batch came twice: a 409, not a duplicate


def test_a_full_spool_stops_reading(tmp_path):
    now = [0.0]
    _log(tmp_path, 5000)
    agent = _spooling_agent(tmp_path, lambda: now[0], spool_bytes=8192)
    while agent.budget.room():
        agent.turn()
    now[0] += pipeline.SPOOL_AFTER_S
    for _ in range(200):
        agent.turn()
        now[0] += 0.01
    assert 0 < agent.spool.bytes <= 8192
    assert not agent._may_read()
    (fid,) = agent.entries
    assert agent.entries[fid].offset < 5000 * 72


def test_elasticsearch_slow_but_not_failing_is_waited_for_not_spooled(tmp_path):
    now = [0.0]
    _log(tmp_path, 3000)
    agent = _spooling_agent(tmp_path, lambda: now[0])
    agent.sender.health.is_failing = False  # requests under way, none failed: a slow node
    for _ in range(100):
        agent.turn()
        now[0] += 0.5
    assert agent.spool.segments == 0 and not agent.budget.room()
    agent.sender.health.is_failing = True  # now they fail (timeouts, refusals)
    for _ in range(10):
        agent.turn()
        now[0] += 0.5
    assert agent.spool.segments > 0


def test_with_elasticsearch_keeping_up_the_spool_is_not_written(tmp_path):
    now = [0.0]
    _log(tmp_path, 3000)
    agent = _spooling_agent(tmp_path, lambda: now[0])
    for _ in range(1000):  # a 4 KiB budget takes one small batch a turn
        agent.turn()
        agent.sender.answer_all()
        now[0] += 1.0  # slow turns, but every batch is answered
        if len(agent.sender.indexed) == 3000:
            break
    assert agent.spool.segments == 0 and not os.listdir(tmp_path / "state" / "spool")
    assert len(agent.sender.indexed) == 3000


def test_lines_written_between_copy_and_truncate_are_counted_once_as_copytruncates_loss(tmp_path, capfd):
    path = _log(tmp_path, 1000)
    agent = _paused_agent(tmp_path, path)
    (fid,) = agent.entries
    copy = path + ".1"
    shutil.copyfile(path, copy)  # logrotate's copy ...
    with open(path, "ab") as f:
        f.write(b"raced line\n" * 10)  # ... lines appended meanwhile ...
    agent.reader.changed(path)
    agent.turn()  # ... seen by the agent ...
    os.truncate(path, 0)  # ... and the truncate
    agent.reader.changed(path)
    agent.turn()
    assert agent.reader.source(fid).reading_from == copy
    assert agent.entries[fid].lost_bytes == 110
    assert agent.entries[fid].size == os.path.getsize(copy)  # a restart does not count them again
    assert "copytruncate's own loss" in capfd.readouterr().err


def test_an_incomplete_gzip_trailer_is_not_trusted(tmp_path):
    p = tmp_path / "x.log.1.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"a" * 1000)
    (tmp_path / "x.log.1").write_bytes(b"a" * 1000)  # logrotate still compressing
    assert rotation.gz_size(str(p)) == 0
