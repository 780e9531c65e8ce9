"""Document bytes pinned: optimisations of FileEncoder.encode must not change one byte of output.

The fragments below are the exact bytes the agent sent before the hot path was optimised (issue 6);
`reference_encode` is that original per-line implementation, kept here so random lines compare too.
"""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.encode import INVALID_UTF8, NUL, FileEncoder
from agent.formats import FORMATS
from agent.frame import Frames

META = {"host.name": "vm-1", "host.ip": "10.0.0.12", "agent.id": "a-1", "bosh.instance.index": 2}
NOW = b"2026-11-27T23:59:00.123Z"
LINES = [
    b"plain ascii line",
    b"",
    b'with "quotes" and \\backslashes\\ and \\n literal',
    b"tab\there\rcr and \x01\x1f controls and del \x7f",
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 non-ascii",
    b"invalid \xff\xfe utf8",
    b"truncated seq \xe2\x82",
    b"nul \x00 byte",
    b"both \x00 and \xff",
    b"\xef\xbf\xbf U+FFFF and \xe2\x80\xa8 LS",
    b'{"timestamp":"1522171784.100530624","source":"rep","message":"rep.started","log_level":1,'
    b'"data":{"cell-id":"7f84c2ea","q":"a\\"b"}}',
    b"end \\",
]
MESSAGES = [
    b'"message":"plain ascii line","log.offset":100',
    b'"message":"","log.offset":117',
    b'"message":"with \\"quotes\\" and \\\\backslashes\\\\ and \\\\n literal","log.offset":118',
    b'"message":"tab\\there\\rcr and \\u0001\\u001f controls and del \x7f","log.offset":165',
    b'"message":"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 non-ascii","log.offset":203',
    b'"message":"invalid \xef\xbf\xbd\xef\xbf\xbd utf8","log.offset":228,"log.flags":["invalid_utf8"]',
    b'"message":"truncated seq \xef\xbf\xbd","log.offset":244,"log.flags":["invalid_utf8"]',
    b'"message":"nul \xef\xbf\xbd byte","log.offset":261,"log.flags":["nul_bytes"]',
    b'"message":"both \xef\xbf\xbd and \xef\xbf\xbd","log.offset":272,"log.flags":["invalid_utf8","nul_bytes"]',
    b'"message":"\xef\xbf\xbf U+FFFF and \xe2\x80\xa8 LS","log.offset":285',
    b'"message":"{\\"timestamp\\":\\"1522171784.100530624\\",\\"source\\":\\"rep\\",\\"message\\":\\"rep.started\\",'
    b'\\"log_level\\":1,\\"data\\":{\\"cell-id\\":\\"7f84c2ea\\",\\"q\\":\\"a\\\\\\"b\\"}}","log.offset":307',
    b'"message":"end \\\\","log.offset":438',
]
FIRST = (
    b'{"create":{"_index":"logs-bosh-default","_id":"fid0-100"}}\n'
    b'{"@timestamp":"2026-11-27T23:59:00.123Z","event.created":"2026-11-27T23:59:00.123Z","message":"plain ascii line",'
    b'"log.offset":100,"log.file.path":"/var/vcap/sys/log/rep/rep.stdout.log","bosh.job":"rep","host.name":"vm-1",'
    b'"host.ip":"10.0.0.12","agent.id":"a-1","bosh.instance.index":2}\n'
)


def encoder(extract=None) -> FileEncoder:
    return FileEncoder("logs-bosh-default", "fid0", "/var/vcap/sys/log/rep/rep.stdout.log", "rep", META, extract)


def run(enc: FileEncoder, frames: Frames) -> tuple[int, bytes]:
    out = bytearray(b"previous batch bytes\n")
    n = enc.encode(frames, NOW, out)
    assert out.startswith(b"previous batch bytes\n")
    return n, bytes(out[len(b"previous batch bytes\n") :])


def reference_encode(enc: FileEncoder, frames: Frames, now: bytes) -> tuple[int, bytes]:
    """The original per-line implementation (before issue 6), byte for byte."""
    out = bytearray()
    off = frames.start
    msg_bytes = 0
    for i, line in enumerate(frames.lines):
        if frames.offsets is not None:
            off = frames.offsets[i]
        extra = b""
        line_flags = frames.flags.get(i) if frames.flags else None
        try:
            text = line.decode()
        except UnicodeDecodeError:
            text = line.decode(errors="replace")
            line_flags = [*(line_flags or ()), INVALID_UTF8]
        if "\0" in text:
            text = text.replace("\0", "\ufffd")
            line_flags = [*(line_flags or ()), NUL]
        ts = now
        if enc.extract is not None:
            parsed_ts, extra = enc.extract(line)
            if parsed_ts is not None:
                ts = parsed_ts.encode()
        if line_flags:
            extra += b',"log.flags":' + orjson.dumps(line_flags)
        out += b'%s%d"}}\n{"@timestamp":"%s","event.created":"%s","message":%s,"log.offset":%d%s%s' % (
            enc.action, off, ts, now, orjson.dumps(text), off, extra, enc.const,
        )
        msg_bytes += len(line)
        if frames.offsets is None:
            off += len(line) + 1
    return msg_bytes, bytes(out)


def test_first_document_exact():
    n, out = run(encoder(), Frames(100, [LINES[0]]))
    assert n == len(LINES[0])
    assert out == FIRST


def test_tricky_lines_raw_exact():
    n, out = run(encoder(), Frames(100, list(LINES)))
    assert n == sum(map(len, LINES)) == 332
    docs = out.split(b"\n")
    assert docs[-1] == b"" and len(docs) == 2 * len(LINES) + 1
    for i, (action, doc) in enumerate(zip(docs[0::2], docs[1::2])):
        off = int(MESSAGES[i].rsplit(b'"log.offset":', 1)[1].split(b",")[0])
        assert action == b'{"create":{"_index":"logs-bosh-default","_id":"fid0-%d"}}' % off
        assert doc.startswith(b'{"@timestamp":"%s","event.created":"%s",' % (NOW, NOW))
        assert doc[doc.index(b'"message"') : doc.index(b',"log.file.path"')] == MESSAGES[i]
        orjson.loads(doc)  # valid JSON
    assert hashlib.sha256(out).hexdigest() == "e0cc3b322d8564976694b92be839f375cb0bb17298d158e20fe494c4fc703bae"


def test_tricky_lines_parsed_exact():
    n, out = run(encoder(FORMATS["lager"]), Frames(100, list(LINES)))
    assert n == 332
    docs = out.split(b"\n")[1::2]
    assert b'"@timestamp":"2018-03-27T17:29:44.100Z"' in docs[10]
    assert docs[10].endswith(b'"log.offset":307,"log.level":"info","log.logger":"rep","event.action":"rep.started",'
                             b'"cf.lager.data":{"cell-id":"7f84c2ea","q":"a\\"b"},"log.file.path":"/var/vcap/sys/log/rep/'
                             b'rep.stdout.log","bosh.job":"rep","host.name":"vm-1","host.ip":"10.0.0.12","agent.id":"a-1",'
                             b'"bosh.instance.index":2}')
    assert docs[8][docs[8].index(b'"message"') : docs[8].index(b',"log.file.path"')] == (
        b'"message":"both \xef\xbf\xbd and \xef\xbf\xbd","log.offset":272,"tags":["log_shipper_unparsed"],'
        b'"log.flags":["invalid_utf8","nul_bytes"]'
    )
    assert hashlib.sha256(out).hexdigest() == "ef959b8dbce6c17fabec2fc3e90368e171bc0c9747ebfd172596b84c05bf73e1"


def test_explicit_offsets_and_frame_flags_exact():
    frames = Frames(0, [b"a\nb \\ \xff", b"second"], offsets=[10, 50], flags={0: ["multiline", "truncated"]})
    n, out = run(encoder(), frames)
    assert n == 13
    docs = out.split(b"\n")[1::2]
    assert b'"message":"a\\nb \\\\ \xef\xbf\xbd","log.offset":10,"log.flags":["multiline","truncated","invalid_utf8"],' in docs[0]
    assert b'"message":"second","log.offset":50,"log.file.path"' in docs[1]
    assert hashlib.sha256(out).hexdigest() == "012f10f1483782006ca45c31d52d5883c96625f6ddddd42f129967c9fe8bf84f"


def test_frames_are_not_modified():
    lines = list(LINES)
    frames = Frames(100, lines, flags={3: ["truncated"]})
    run(encoder(), frames)
    assert frames.lines == LINES and frames.flags == {3: ["truncated"]} and frames.offsets is None


_TRICKY = st.sampled_from([b"a", b"Z", b" ", b'"', b"\\", b"n", b"u", b"0", b"\x00", b"\x01", b"\t", b"\r", b"\x7f",
                           b"\xc3\xa9", b"\xc3", b"\xa9", b"\xff", b"\xe2\x80\xa8", b"\xef\xbf\xbf", b"\xf0\x9f\x98\x80",
                           b"{", b"}", b":", b","])
_LINE = st.lists(_TRICKY, max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=40), st.integers(0, 2**40), st.sampled_from([None, "lager", "gorouter_access", "uaa"]),
       st.dictionaries(st.integers(0, 39), st.sampled_from([["truncated"], ["multiline"], ["multiline", "truncated"]])))
def test_same_bytes_as_the_reference(lines, start, fmt, flags):
    flags = {i: f for i, f in flags.items() if i < len(lines)}
    enc = encoder(FORMATS[fmt] if fmt else None)
    assert run(enc, Frames(start, list(lines), flags=dict(flags))) == reference_encode(enc, Frames(start, lines, flags=flags), NOW)
    offsets = [start + 7 * i for i in range(len(lines))]
    assert run(enc, Frames(start, list(lines), offsets=list(offsets))) == reference_encode(enc, Frames(start, lines, offsets=offsets), NOW)


def test_a_format_that_raises_ships_its_line_unparsed_and_parses_the_rest():
    def flaky(line: bytes):
        if line.startswith(b"{"):
            raise ValueError("a parser bug")
        return FORMATS["lager"](line)

    lines = [LINES[0], LINES[10], b'{"x":1}']
    n, out = run(encoder(flaky), Frames(100, list(lines)))
    assert n == sum(map(len, lines))
    docs = [orjson.loads(d) for d in out.split(b"\n")[1::2]]
    assert [d.get("tags") for d in docs] == [["log_shipper_unparsed"]] * 3
    assert [d["message"] for d in docs] == [x.decode() for x in lines]
    # The same encoder with a format that does not raise parses the JSON line.
    n, out = run(encoder(FORMATS["lager"]), Frames(100, list(lines)))
    assert orjson.loads(out.split(b"\n")[3])["log.logger"] == "rep"
