"""The loop's pass over one file: every event read reaches the batch with its own offset."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from agent import pipeline
from agent.config import Config, ConfigError, FormatRule, MultilineConfig, from_dict


class _NoSender:
    """Holds batches; nothing in these tests is acknowledged."""

    in_flight = 0

    def __init__(self, on_done):
        self.batches = []

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
    for name in ("agent-id", "registry.json", "volume.json"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name


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
