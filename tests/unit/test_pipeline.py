"""The loop's pass over one file: every event read reaches the batch with its own offset."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from agent import pipeline
from agent.config import Config, ConfigError, FormatRule, MultilineConfig, from_dict
from agent.rules import Rules
from agent.send import Health


class _NoSender:
    """Holds batches; nothing in these tests is acknowledged."""

    in_flight = 0

    def __init__(self, on_done):
        self.batches = []
        self.health = Health()

    def start(self) -> None:
        pass

    def submit(self, batch) -> None:
        self.batches.append(batch)


def _agent(tmp_path, clock, multiline: bool = True, **reader) -> pipeline.Agent:
    cfg = Config()
    cfg.inputs.root = str(tmp_path / "log")
    cfg.state_dir = str(tmp_path / "state")
    cfg.health.enabled = cfg.fleet.enabled = False
    for k, v in reader.items():
        setattr(cfg.reader, k, v)
    ml = MultilineConfig(start="^START", timeout_s=0.1) if multiline else None
    cfg.formats = [FormatRule(glob="**", format="raw", multiline=ml)]
    cfg.batch.flush_interval_s = cfg.reader.rescan_interval_s = 1e9
    return pipeline.Agent(cfg, _NoSender, clock)


def _one_file(tmp_path, data: bytes):
    """log/job/x.log holding `data`."""
    path = tmp_path / "log" / "job" / "x.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def _documents(body: bytearray) -> list[tuple[int, str]]:
    lines = bytes(body).split(b"\n")[:-1]
    return [(d["log.offset"], d["message"]) for d in map(orjson.loads, lines[1::2])]


def test_removed_file_closing_ships_a_due_event_and_the_partial_line_both(tmp_path):
    """A renamed-away file closed while a multiline event is due and a partial line waits:
    both are events of their own (two flushes merged into one once lost the second's offset)."""
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    path = job / "x.log"
    path.write_bytes(b"START one\n cont\nSTART two")
    now = [0.0]
    agent = _agent(tmp_path, lambda: now[0], idle_flush_s=30.0, close_removed_after_s=0.2)
    agent.start(watch=False)
    agent.turn()
    os.rename(path, job / "x.log.1")
    agent.discovery.rescan_requested = True
    now[0] = 0.4  # the event's timeout and the close delay pass; the idle flush does not
    agent.turn()
    assert _documents(agent.batch.body) == [(0, "START one\n cont"), (16, "START two")]
    assert agent.batch.segments[-1].end == 25


def test_a_removed_file_may_not_close_before_its_idle_flush():
    with pytest.raises(ConfigError, match=r"^reader\.close_removed_after_s: must be at least reader\.idle_flush_s"):
        from_dict({"reader": {"idle_flush_s": 5.0, "close_removed_after_s": 1.0}})
    assert from_dict({"reader": {"idle_flush_s": 1.0, "close_removed_after_s": 1.0}}).reader.close_removed_after_s == 1.0


def test_state_dir_and_the_files_the_agent_writes_are_its_own(tmp_path):
    (tmp_path / "state").mkdir(mode=0o755)
    agent = _agent(tmp_path, lambda: 0.0)
    agent.acker.volume.add("uaa", 1, 10, time.time())
    agent.acker.checkpoint(force=True)
    state = tmp_path / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("agent-id", "registry.log", "volume.json"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize("plant, reason", [
    (lambda p: p.write_text('{"agent_settings": "SECRET"}'), "not an agent id"),
    (lambda p: p.write_text("0" * 65), "more than an id"),
    (lambda p: p.mkdir(), "not a regular file"),
])
def test_agent_id_not_a_uuid_of_its_own_is_replaced_and_said(tmp_path, capsys, plant, reason):
    plant(tmp_path / "agent-id")
    aid = pipeline.agent_id(str(tmp_path))
    assert pipeline.AGENT_ID_RE.fullmatch(aid) and (tmp_path / "agent-id").read_text() == aid
    event = orjson.loads(capsys.readouterr().err)
    assert (event["event"], event["path"]) == ("agent_id_replaced", str(tmp_path / "agent-id"))
    assert reason in event["msg"]
    assert pipeline.agent_id(str(tmp_path)) == aid and capsys.readouterr().err == ""


def test_writes_are_found_by_polling_sizes_quiet_files_less_often(tmp_path):
    """File events carry no writes (discover.WATCHED): the loop polls open files' sizes."""
    from agent import discover
    from agent.reader import QUIET_S
    from watchdog.events import FileModifiedEvent

    assert FileModifiedEvent not in discover.WATCHED
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    busy, quiet = job / "busy.log", job / "quiet.log"
    busy.write_bytes(b"b0\n")
    quiet.write_bytes(b"q0\n")
    now = [0.0]
    agent = _agent(tmp_path, lambda: now[0], multiline=False)
    agent.start(watch=False)
    agent.turn()
    assert agent.reader.due() == []  # both read and at rest
    now[0] = QUIET_S + 1
    with open(busy, "ab") as f:
        f.write(b"b1\n")
    agent.reader.sources[agent.reader.by_path[str(busy)]].last_data_at = now[0]  # busy: read just now
    with open(quiet, "ab") as f:
        f.write(b"q1\n")
    agent.reader.poll(now[0], quiet_too=False)
    assert agent.reader.due() == [agent.reader.by_path[str(busy)]]
    agent.reader.poll(now[0], quiet_too=True)
    assert sorted(agent.reader.due()) == sorted(agent.reader.by_path.values())
    agent.turn()
    assert sorted(m for _, m in _documents(agent.batch.body)) == ["b0", "b1", "q0", "q1"]


def test_a_chunk_of_blank_lines_is_split_into_batches_within_max_docs_max_bytes_and_the_budget(tmp_path):
    """256 KiB of blank lines are 262,144 events in one chunk: batches stay within max_docs and
    max_bytes (one document over at most), reading stops at the in-flight budget, and once
    batches are acknowledged the rest follows; every offset once, the offset at the end."""
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    chunk = 256 * 1024
    (job / "blank.log").write_bytes(b"\n" * chunk)
    agent = _agent(tmp_path, lambda: 0.0)
    agent.rules = Rules([])  # raw lines, no multiline rule
    agent.start(watch=False)
    cfg = agent.cfg.batch
    sent, seen, held = agent.sender.batches, [], False
    while True:
        agent.turn()
        held |= any(st.held is not None for st in agent.streams.values())
        # Never more than the budget plus one batch (the one that spent it) read and unacknowledged.
        assert agent.budget.used <= cfg.max_inflight_bytes + cfg.max_bytes + 1024
        if not sent and agent.batch.docs:
            agent.flush_batch()  # the last, partial batch (the flush timer is off)
        if not sent:
            break
        for batch in sent:
            assert batch.docs <= cfg.max_docs and len(batch.body) <= cfg.max_bytes + 1024
            seen += [off for off, _msg in _documents(batch.body)]
            agent._on_done(batch)  # acknowledged
        sent.clear()
    assert held, "the chunk's events outgrew the budget: the rest waited"
    assert sorted(seen) == list(range(chunk)) and len(seen) == len(set(seen))
    agent._settle_acks()
    assert agent.entries[next(iter(agent.entries))].offset == chunk


def _ack_all(agent) -> list[tuple[int, str]]:
    docs = []
    if agent.batch.docs or agent.batch.segments:
        agent.flush_batch()
    for batch in agent.sender.batches:
        docs += _documents(batch.body)
        agent._on_done(batch)
    agent.sender.batches.clear()
    agent._settle_acks()
    return docs


def test_an_overlong_line_without_newline_is_cut_flagged_and_its_offset_moves_on(tmp_path):
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    path = job / "big.log"
    size = 5 * 1024 * 1024
    path.write_bytes(b"first\n" + b"x" * size)
    agent = _agent(tmp_path, lambda: 0.0, max_line_bytes=32 * 1024)
    agent.rules = Rules([])
    agent.start(watch=False)
    while agent.turn():
        pass
    docs = _ack_all(agent)
    assert docs == [(0, "first"), (6, "x" * 32 * 1024)]
    (entry,) = agent.entries.values()
    assert entry.offset == 6 + size  # not held at the line's start until a newline comes
    with open(path, "ab") as f:
        f.write(b"x" * 10 + b"\nnext\n")
    agent.reader.changed(str(path))
    while agent.turn():
        pass
    assert _ack_all(agent) == [(6 + size + 11, "next")]
    assert entry.offset == path.stat().st_size


def _doc_paths(body: bytearray) -> list[tuple[str, str]]:
    lines = bytes(body).split(b"\n")[:-1]
    return [(d["log.file.path"], d["message"]) for d in map(orjson.loads, lines[1::2])]


def test_a_non_utf8_name_ships_shown_with_escapes_in_documents_offsets_and_logs(tmp_path, capsys):
    """`bad\\xff.log` ships as `bad\\\\xff.log`: a name that is not UTF-8 has no JSON string of its own.
    (Its registry entry is the registry's to write: not acknowledged here.)"""
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    bad = os.path.join(os.fsencode(job), b"bad\xff.log")
    with open(bad, "wb") as f:
        f.write(b"from a bad name\n")
    agent = _agent(tmp_path, lambda: 0.0)
    agent.rules = Rules([])
    agent.start(watch=False)
    agent.turn()
    shown = str(job / "bad") + "\\xff.log"
    assert _doc_paths(agent.batch.body) == [(shown, "from a bad name")]
    rows = agent.offsets()
    assert [(r.path, r.state, r.lag_bytes) for r in rows] == [(shown, "live", 16)]
    assert orjson.loads(orjson.dumps([r.as_dict() for r in rows]))[0]["path"] == shown  # the /offsets body
    from agent import log

    log.warn("file_unreadable", "a test event", path=os.fsdecode(bad))
    assert orjson.loads(capsys.readouterr().err.splitlines()[-1])["path"] == shown


def test_a_read_error_is_reported_once_shown_and_retried_from_its_position(tmp_path, monkeypatch, capsys):
    """EIO on one file is reported once, shown in offsets and health, retried at the next
    rescan from the same position; the other file ships meanwhile."""
    import errno

    from agent import health
    from agent.source import Source

    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    (job / "good.log").write_bytes(b"good\n")
    eio = job / "eio.log"
    eio.write_bytes(b"one\ntwo\n")
    failing = [True]
    pread = Source.pread

    def flaky(src, n):
        if src.path == str(eio) and failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        return pread(src, n)

    monkeypatch.setattr(Source, "pread", flaky)
    agent = _agent(tmp_path, lambda: 0.0)
    agent.rules = Rules([])
    agent.start(watch=False)
    for _ in range(3):
        agent.turn()
    agent.discovery.rescan_requested = True  # a rescan retries it: still failing, not reported again
    agent.turn()
    assert _doc_paths(agent.batch.body) == [(str(job / "good.log"), "good")]
    _ack_all(agent)
    rows = {r.path: r for r in agent.offsets()}
    assert rows[str(eio)].state == "unreadable" and rows[str(eio)].reason == "Input/output error"
    assert rows[str(eio)].offset == 0 and rows[str(eio)].lag_bytes == 8
    assert any("cannot be read" in r and str(eio) in r for r in health.problems(agent.cfg.health, agent.offsets()))
    failed = [orjson.loads(ln) for ln in capsys.readouterr().err.splitlines() if '"read_failed"' in ln]
    assert len(failed) == 1 and failed[0]["path"] == str(eio) and failed[0]["hint"]

    failing[0] = False  # the disk answers again: the next rescan reads on
    agent.discovery.rescan_requested = True
    agent.turn()
    assert _doc_paths(agent.batch.body) == [(str(eio), "one"), (str(eio), "two")]
    _ack_all(agent)
    assert {r.path: r.state for r in agent.offsets()} == {str(job / "good.log"): "live", str(eio): "live"}
    assert health.problems(agent.cfg.health, agent.offsets()) == []


def test_files_beyond_max_open_files_all_get_their_turn_and_keep_their_offsets(tmp_path):
    """10 files, 4 slots: idle files (all read acknowledged) are closed for waiting ones, and
    opened again when they change, at their offset; every line once. A file that cannot get
    a slot for long is a health reason."""
    from agent import health

    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    files = [job / f"f{i}.log" for i in range(10)]
    for i, f in enumerate(files):
        f.write_bytes(b"".join(b"f%d line %d\n" % (i, n) for n in range(5)))
    agent = _agent(tmp_path, lambda: 0.0, max_open_files=4)
    agent.rules = Rules([])
    agent.start(watch=False)
    assert len(agent.reader.waiting) == 6
    stuck = health.problems(agent.cfg.health, [], waiting=agent.reader.waiting, now=time.time() + 301)
    assert any("6 file(s) waiting for a reader slot" in r for r in stuck)

    def run() -> list[tuple[int, str]]:
        docs = []
        for _ in range(20):
            agent.turn()
            docs += _ack_all(agent)
            assert len(agent.reader.sources) <= 4
        return docs

    docs = run()
    assert sorted(m for _off, m in docs) == sorted(f"f{i} line {n}" for i in range(10) for n in range(5))
    assert not agent.reader.waiting and len(agent.entries) == 10
    assert str(files[0]) in agent.reader.parked
    with open(files[0], "ab") as f:  # long closed by now: opened again, read on from its offset
        f.write(b"f0 more\n")
    agent.discovery.rescan_requested = True
    assert run() == [(files[0].stat().st_size - 8, "f0 more")]
    assert all(e.offset == os.path.getsize(e.path) for e in agent.entries.values()) and len(agent.entries) == 10


def test_files_quiet_for_long_are_looked_at_less_often_still(tmp_path):
    from agent.reader import LONG_QUIET_S

    path = _one_file(tmp_path, b"x0\n")
    now = [0.0]
    agent = _agent(tmp_path, lambda: now[0], multiline=False)
    agent.start(watch=False)
    agent.turn()
    now[0] = LONG_QUIET_S + 1
    with open(path, "ab") as f:
        f.write(b"x1\n")
    agent.reader.poll(now[0], quiet_too=True, long_quiet_too=False)
    assert agent.reader.due() == []
    agent.reader.poll(now[0], quiet_too=True, long_quiet_too=True)
    assert agent.reader.due() == [agent.reader.by_path[str(path)]]


def test_a_batch_is_due_flush_interval_after_the_last_look_that_did_not_find_its_first_line(tmp_path):
    """Its first line was written after the previous poll found the file unchanged, not when
    it was read: the batch goes out flush_interval after that look, and the loop wakes for it."""
    path = _one_file(tmp_path, b"a\n")
    now = [0.0]
    agent = _agent(tmp_path, lambda: now[0], multiline=False)
    agent.cfg.batch.flush_interval_s = 0.5
    agent.start(watch=False)
    agent.turn()
    now[0] = 0.5
    agent.turn()
    assert len(agent.sender.batches) == 1
    now[0] = 1.0
    agent.turn()  # a poll: nothing new
    with open(path, "ab") as f:
        f.write(b"b\n")
    now[0] = 1.25
    agent.turn()  # the next poll reads b
    assert _documents(agent.batch.body) == [(2, "b")]
    assert agent._next_due() == 1.5
    now[0] = 1.49
    agent.turn()
    assert len(agent.sender.batches) == 1
    now[0] = 1.5
    agent.turn()
    assert len(agent.sender.batches) == 2


def test_a_rescan_makes_due_only_files_whose_size_or_head_changed(tmp_path):
    job = tmp_path / "log" / "job"
    job.mkdir(parents=True)
    same, rewritten = job / "same.log", job / "rewritten.log"
    same.write_bytes(b"s0\n")
    rewritten.write_bytes(b"r0\n")
    agent = _agent(tmp_path, lambda: 0.0, multiline=False)
    agent.start(watch=False)
    agent.turn()
    with open(rewritten, "r+b") as f:  # truncated and rewritten to the same size: same inode
        f.truncate(0)
        f.write(b"R0\n")
    agent.reader.sync(agent.discovery.scan())
    assert agent.reader.due() == [agent.reader.by_path[str(rewritten)]]


@pytest.mark.parametrize("sizes, limit", [
    ([10, 10, 10], 100),  # all fit (the caller does not cut then; nothing is dropped)
    ([10, 10, 10], 45),  # the limit inside the third document's source line
    ([10, 10, 10], 35),  # inside its action line
    ([10, 10, 10], 40),  # exactly at the second document's end
    ([50, 10], 20),  # the first alone exceeds the limit: it is kept
    ([3, 3, 3, 3, 3, 3], 23),
])
def test_cut_to_fit_keeps_the_documents_that_end_within_the_limit(sizes, limit):
    """Documents of action + source lines after a prefix; what a re-encode of fewer would have kept."""
    prefix = b"x" * 7 + b"\n"
    docs = [b"a" * (s // 2 - 1) + b"\n" + b"s" * (s - s // 2 - 1) + b"\n" for s in sizes]
    body = bytearray(prefix + b"".join(docs))
    lim = len(prefix) + limit
    ends = [len(prefix) + sum(map(len, docs[: i + 1])) for i in range(len(docs))]
    want = max(1, sum(e <= lim for e in ends))
    assert pipeline._cut_to_fit(body, len(prefix), lim, len(docs)) == want
    assert bytes(body) == prefix + b"".join(docs[:want])
