"""Shared helpers for formats: timestamps, levels, member serialisation.

Everything here works on bytes and returns None instead of raising on bad input,
so a format can stay a straight line of "find, slice, convert".
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import orjson

# Shipped raw and tagged: the line did not have the shape its format expects.
UNPARSED = b',"tags":["log_shipper_unparsed"]'

# Seconds at 10000-01-01: later times cannot be written as a four-digit RFC 3339 year.
_MAX_EPOCH = 253402300800

# A leading RFC 3339 / ISO 8601 time: date, 'T' or space, time, optional fraction, optional zone.
ISO_RE = re.compile(rb"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|z|[+-]\d{2}:?\d{2})?")

_LEVELS: dict[str, str] = {
    "trace": "debug", "debug": "debug", "debug1": "debug", "debug2": "debug", "fine": "debug", "finer": "debug",
    "info": "info", "information": "info", "notice": "info",
    "warn": "warn", "warning": "warn",
    "error": "error", "err": "error", "severe": "error",
    "fatal": "fatal", "crit": "fatal", "critical": "fatal", "panic": "fatal", "emerg": "fatal", "alert": "fatal",
}  # fmt: skip
_LEVEL_MEMBERS = {v: b',"log.level":"' + v.encode() + b'"' for v in set(_LEVELS.values())}


# The spellings seen in practice, looked up as written before any normalising.
_LEVEL_SPELLINGS = {w: _LEVEL_MEMBERS[v] for k, v in _LEVELS.items() for w in (k, k.upper(), k.capitalize())}


_LEVEL_BYTES = {w.encode(): m for w, m in _LEVEL_SPELLINGS.items()}
# The same, to the normalised word: for formats that serialise their members as one object.
_LEVEL_NAMES = {w: v for k, v in _LEVELS.items() for w in (k, k.upper(), k.capitalize())}


def level_name(word: str) -> str | None:
    """The normalised level of a word ("WARNING" -> "warn"), or None for words that are not a level."""
    found = _LEVEL_NAMES.get(word)
    return found if found is not None else _LEVELS.get(word.strip().lower())


def level_member(word: str | bytes | None) -> bytes:
    """`,"log.level":"<normalised>"`, or b"" for words that are not a known level."""
    if word is None:
        return b""
    if isinstance(word, str):
        found = _LEVEL_SPELLINGS.get(word)
        if found is not None:
            return found
    else:
        found = _LEVEL_BYTES.get(word)
        if found is not None:
            return found
        word = word.decode("ascii", "replace")
    norm = _LEVELS.get(word.strip().lower())
    return _LEVEL_MEMBERS[norm] if norm else b""


def key(name: str) -> bytes:
    """The serialised prefix of one member: `,"<name>":`; computed once per field at import."""
    return b',"' + name.encode() + b'":'


def member(k: bytes, value: object) -> bytes:
    return k + orjson.dumps(value)


def text(b: bytes) -> str:
    # Logs are mostly UTF-8; anything else must still become valid JSON.
    return b.decode("utf-8", "replace")


# --- timestamps: always "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, milliseconds, truncated not rounded, so a
# time never moves into the next second/day and equals what the line says to the millisecond).

_last_sec: list = [None, ""]  # one-entry cache: most lines of a file share their second


def _second_prefix(sec: int) -> str:
    if _last_sec[0] != sec:
        t = time.gmtime(sec)
        _last_sec[0], _last_sec[1] = sec, f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return _last_sec[1]


def _ms(frac: bytes | str | None) -> str:
    if not frac:
        return "000"
    f = frac if isinstance(frac, str) else frac.decode("ascii")
    return (f + "00")[:3]


# One-entry cache: whole-seconds text (checked) -> "YYYY-MM-DDTHH:MM:SS.", and that text with its '.'.
_last_epoch: list = [None, "", "\0"]


def from_epoch_text(s: str) -> str | None:
    """Decimal seconds since the epoch ("1700000000.123456789") -> RFC 3339, exact from the digits."""
    whole, _, frac = s.partition(".")
    if whole != _last_epoch[0]:
        if not (whole.isascii() and whole.isdigit()):
            return None
        sec = int(whole)
        if sec >= _MAX_EPOCH:
            return None
        _last_epoch[0], _last_epoch[1], _last_epoch[2] = whole, _second_prefix(sec) + ".", whole + "."
    if not frac:
        return _last_epoch[1] + "000Z"
    if not (frac.isascii() and frac.isdigit()):
        return None
    return _last_epoch[1] + (frac + "00")[:3] + "Z"


def from_epoch_value(v: object) -> str | None:
    """A JSON timestamp that may be a number or a string of either form."""
    tp = type(v)  # exact types: a bool is not a time (JSON gives no subclasses)
    if tp is str:
        # "2026-11-27T23:59:00.123456789Z" or "1700000000.123456789" in the second of the one before,
        # cached with its '.': only the fraction is new. (The UTC key holds a '-', an epoch string none.)
        # str.isascii is a flag test: with it, isdigit means ASCII digits.
        if v.startswith(_last_utc_text[0]):
            frac = v[20:-1]
            if v[-1:] == "Z" and frac.isdigit() and v.isascii():
                return _last_utc_text[1] + (frac + "00")[:3] + "Z"
        elif v.startswith(_last_epoch[2]):
            frac = v[len(_last_epoch[2]) :]
            if frac.isdigit() and v.isascii():
                return _last_epoch[1] + (frac + "00")[:3] + "Z"
        if v[:1].isdigit() and "-" not in v[:5]:
            return from_epoch_text(v)
        return _from_iso_text(v)
    if tp is float:
        # repr() is the shortest string that round-trips, i.e. the digits that were written
        # (to float precision): no binary-fraction truncation turning .123 into .122. repr is slow, and
        # the float itself gives the same millisecond unless it lies near a millisecond boundary: below
        # _MAX_EPOCH a float is within 0.0153 ms of its repr (half its ulp), so 0.02 ms is a safe margin.
        # (Below 1e-4 repr writes an exponent, which from_epoch_text refuses: kept as it was.)
        if 1e-4 <= v < _MAX_EPOCH:
            sec = int(v)
            ms = (v - sec) * 1000  # v - sec is exact
            q = int(ms)
            if 0.02 < ms - q < 0.98:
                if sec != _float_sec[0]:
                    _float_sec[0], _float_sec[1] = sec, _second_prefix(sec) + "."
                return _float_sec[1] + _MS[q] + "Z"
        return from_epoch_text(repr(v))
    if tp is int:
        return from_epoch_text(str(v))
    return None


def _from_iso_text(v: str) -> str | None:
    m = ISO_RE.fullmatch(v.encode())
    ts = iso_match(m) if m else None
    if ts is not None and v[19:20] == "." and v[-1:] == "Z":
        _last_utc_text[0], _last_utc_text[1] = v[:20], ts[:20]
    return ts


_float_sec: list = [None, ""]  # one-entry cache: whole seconds of a float time -> "YYYY-MM-DDTHH:MM:SS."
_MS = ["%03d" % i for i in range(1000)]
_last_utc_text: list = ["\0", ""]  # one-entry cache: "YYYY-MM-DDTHH:MM:SS." of a valid UTC time -> the same in UTC


_last_iso: list = [None, ""]


def iso_match(m: re.Match) -> str | None:
    """RFC 3339 string for an ISO_RE match, converted to UTC; None for impossible dates."""
    y, mo, d, h, mi, s, frac, zone = m.groups()
    head = m.string[m.start() : m.start(6) + 2] + (zone or b"")
    if _last_iso[0] != head:
        try:
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
        except ValueError:
            return None
        if zone and zone not in (b"Z", b"z"):
            zh, zm = int(zone[1:3]), int(zone[-2:])
            if zh > 23 or zm > 59:
                return None
            delta = timedelta(hours=zh, minutes=zm)
            dt = dt - delta if zone[:1] == b"+" else dt + delta
        if not 1000 <= dt.year <= 9999:
            return None
        _last_iso[0] = head
        _last_iso[1] = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    return f"{_last_iso[1]}.{_ms(frac)}Z"


def iso_at(buf: bytes, pos: int = 0) -> tuple[str, int] | None:
    """A leading ISO time at `pos`: (RFC 3339 UTC string, index just after it)."""
    m = ISO_RE.match(buf, pos)
    if not m:
        return None
    ts = iso_match(m)
    return (ts, m.end()) if ts else None


def seconds_to_ns(s: bytes) -> int | None:
    """Decimal seconds ("0.011962", "60") -> integer nanoseconds, exact from the digits."""
    whole, _, frac = s.partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(whole) > 9:
        return None
    return int(whole + (frac + b"000000000")[:9])  # whole * 10**9 + frac, in one int()


_ESC_RE = re.compile(rb"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
_SIMPLE_ESC = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _esc(m: re.Match) -> bytes:
    e = m.group(1)
    c = e[:1]
    if len(e) == 1:  # not a full escape (a lone \x, \u, a digit): the character as it is
        return _SIMPLE_ESC.get(c, c)
    if c == b"x":
        return bytes([int(e[1:], 16)])
    if c in (b"u", b"U"):
        cp = int(e[1:], 16)
        return chr(cp).encode("utf-8", "replace") if cp <= 0x10FFFF else b"\xef\xbf\xbd"
    return bytes([int(e, 8) & 0xFF])  # three octal digits


def unescape(b: bytes) -> str:
    """Go strconv.Quote / nginx \\xHH escapes -> text. Most values have none: one find, no work."""
    if b"\\" in b:
        b = _ESC_RE.sub(_esc, b)
    return text(b)


# `flattened` rejects a whole document whose object is nested deeper than its depth_limit; the template
# uses this same number, and data deeper than it is dropped here rather than refused by Elasticsearch.
DATA_DEPTH_LIMIT = 20


def _depth_ok(v: object, budget: int) -> bool:
    if isinstance(v, dict):
        return budget > 0 and all(_depth_ok(x, budget - 1) for x in v.values())
    if isinstance(v, list):
        # flattened counts objects, not arrays, towards the depth.
        return all(_depth_ok(x, budget) for x in v)
    return True


def data_member(k: bytes, data: dict) -> bytes:
    """A component's `data` object as one member, or b"" when Elasticsearch would refuse it."""
    if not _depth_ok(data, DATA_DEPTH_LIMIT):
        return b""
    try:
        return k + orjson.dumps(data)
    except TypeError:  # orjson's own nesting limit
        return b""


def json_with_time(line: bytes) -> tuple[dict, str] | None:
    """A JSON object line with a usable `timestamp`: (the object, RFC 3339 time), else None."""
    if not line.startswith(b"{"):
        return None
    try:
        doc = orjson.loads(line)  # valid JSON that starts with '{' is an object
    except orjson.JSONDecodeError:
        return None
    ts = from_epoch_value(doc.get("timestamp"))
    return None if ts is None else (doc, ts)


K_DOMAIN = key("url.domain")
K_METHOD = key("http.request.method")
K_URL = key("url.original")
K_VERSION = key("http.version")


def request_members(host: bytes, request: bytes) -> list[bytes]:
    """Members of an access line's host and "METHOD URI PROTO" (Go or nginx escaped)."""
    parts = []
    if host:
        parts.append(member(K_DOMAIN, unescape(host)))
    # The URI has no spaces (escaped) but is split from both ends anyway.
    method, _, rest = request.partition(b" ")
    uri, _, proto = rest.rpartition(b" ")
    if method and uri:
        parts.append(member(K_METHOD, unescape(method)))
        parts.append(member(K_URL, unescape(uri)))
        if proto.startswith(b"HTTP/"):
            parts.append(member(K_VERSION, proto[5:].decode("ascii", "replace")))
    return parts
