"""Framer: line cap, partial lines, multiline events, and what may be committed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import MultilineConfig
from agent.frame import MULTILINE, TRUNCATED, Framer, Frames


def events(frames: Frames) -> list[tuple[int, bytes, list[str]]]:
    out, off = [], frames.start
    for i, line in enumerate(frames.lines):
        if frames.offsets is not None:
            off = frames.offsets[i]
        out.append((off, line, frames.flags.get(i, [])))
        if frames.offsets is None:
            off += len(line) + 1
    return out


def test_overlong_line_is_cut_and_flagged_and_reading_goes_on():
    f = Framer(0, 10)
    got = events(f.feed(b"short\n" + b"x" * 25 + b"\nnext\n"))
    assert got == [(0, b"short", []), (6, b"x" * 10, [TRUNCATED]), (32, b"next", [])]
    assert f.committable == 37 and not f.has_pending()


def test_overlong_partial_ships_its_head_once_and_drops_the_rest():
    f = Framer(0, 10)
    assert events(f.feed(b"y" * 25)) == [(0, b"y" * 10, [TRUNCATED])]
    assert f.committable == 25  # the offset moves on over what is dropped, newline or not
    assert events(f.feed(b"y" * 7)) == []
    assert f.committable == 32 and not f.has_pending()
    got = events(f.feed(b"yyy\nafter\n"))
    assert got == [(36, b"after", [])]
    assert f.committable == 42


def test_partial_last_line_is_held_until_complete_or_flushed():
    f = Framer(100, 1000)
    assert events(f.feed(b"abc\nde")) == [(100, b"abc", [])]
    assert f.committable == 104 and f.partial == b"de" and f.has_pending()
    assert events(f.feed(b"f")) == []
    assert f.committable == 104
    assert events(f.flush()) == [(104, b"def", [])]  # the file was idle
    assert f.committable == 107 and not f.has_pending()
    assert events(f.feed(b"g\n")) == [(107, b"g", [])]


def test_multiline_joins_continuations_and_holds_the_open_event():
    f = Framer(0, 1000, MultilineConfig(start=r"\d"))
    got = events(f.feed(b"1 a\n b\n c\n2 d\n"))
    assert got == [(0, b"1 a\n b\n c", [MULTILINE])]
    assert f.committable == 10  # "2 d" may still get continuations
    assert events(f.feed(b" e\n3\n")) == [(10, b"2 d\n e", [MULTILINE])]
    assert f.committable == 17
    assert events(f.flush(partial=False)) == [(17, b"3", [])]
    assert f.committable == 19


def test_multiline_max_lines_and_max_bytes_truncate():
    f = Framer(0, 1000, MultilineConfig(start=r"\d", max_lines=2))
    got = events(f.feed(b"1\n a\n b\n c\n2\n"))
    assert got == [(0, b"1\n a", [MULTILINE, TRUNCATED])]
    f = Framer(0, 1000, MultilineConfig(continuation=r" ", max_bytes=20))
    got = events(f.feed(b"start\n" + b" 0123456789\n" + b" more\n" + b"next\n"))
    assert got == [(0, b"start\n 0123456789", [MULTILINE, TRUNCATED])]


chunked = st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"\n")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(chunks=chunked, max_line=st.integers(3, 12), multiline=st.booleans(), flush_at=st.integers(0, 12))
def test_committable_never_passes_an_open_event_or_partial_line(chunks, max_line, multiline, flush_at):
    ml = MultilineConfig(continuation=r"\s", max_lines=3, max_bytes=16) if multiline else None
    f = Framer(0, max_line, ml)
    data = b""
    seen: list[tuple[int, bytes, list[str]]] = []
    for i, chunk in enumerate(chunks):
        data += chunk
        seen += events(f.feed(chunk))
        if i == flush_at:  # idle: the partial line ships as it is
            seen += events(f.flush())
        for off, line, _flags in seen:
            # Every event is a (possibly cut) piece of the file at its offset...
            first = line.split(b"\n", 1)[0]
            assert data[off : off + len(first)] == first
            # ...and none lies beyond what may be committed.
            assert off <= f.committable
        # The partial line and the open multiline event are never committable.
        assert f.committable <= f.partial_at <= len(data)
        if f.ml is not None and f.ml.pending():
            assert f.committable <= f.ml.at
        # Committing never cuts a line, unless an idle flush shipped a partial one or an
        # overlong line without its newline is being dropped.
        assert (f.committable == 0 or data[f.committable - 1 : f.committable] == b"\n" or i >= flush_at
                or f.discarding)


def test_split_keeps_every_events_offset_and_flags():
    lines = [b"a", b"bb", b"", b"dddd"]
    plain = Frames(10, list(lines), flags={1: [TRUNCATED], 3: [TRUNCATED]})
    given = Frames(10, list(lines), offsets=[10, 15, 40, 41], flags={0: ["multiline"]})
    for frames in (plain, given):
        every = [(frames.offset_of(i), frames.lines[i], frames.flags.get(i)) for i in range(len(frames))]
        for n in range(len(frames) + 1):
            head, rest = frames.split(n)
            got = [(f.offset_of(i), f.lines[i], f.flags.get(i)) for f in (head, rest) for i in range(len(f))]
            assert got == every
            assert len(rest) == 0 or rest.start == every[n][0]
    assert plain.offset_of(3) == 10 + len(b"a\n" b"bb\n" b"\n")


def test_a_catastrophic_multiline_rule_takes_linear_time_and_frames_on():
    """`^(a+)+$` against `aaaa...ab` backtracks for ages under Python's re; under RE2 the
    line simply does not start an event."""
    f = Framer(0, 1 << 20, MultilineConfig(start="^(a+)+$"))
    evil = b"a" * 50_000 + b"b"
    got = events(f.feed(b"aaa\n" + evil + b"\n" + b"aaaa\n")) + events(f.flush())
    assert got == [(0, b"aaa\n" + evil, [MULTILINE]), (4 + len(evil) + 1, b"aaaa", [])]


def test_check_config_refuses_patterns_that_need_backtracking():
    import pytest

    from agent.config import ConfigError, from_dict

    for pattern, why in ((r"^(\w+) \1", "invalid escape sequence"), ("^(?=ERROR)", "invalid perl operator")):
        rule = {"glob": "**", "format": "raw", "multiline": {"start": pattern}}
        with pytest.raises(ConfigError, match=rf"^formats\[0\]\.multiline\.start: not a valid regular expression: {why}"):
            from_dict({"formats": [rule]})
