"""Durable read positions: an append-only journal of changed entries, compacted now and then.

Only the ack module writes it, and only with offsets Elasticsearch has acknowledged, so
the registry never runs ahead of what is indexed: a crash replays, it never skips.

`registry.log` is a sequence of records, each one line framed with its length and CRC-32:

    <length, 8 hex> <crc32, 8 hex> <JSON payload>\\n

The first record is a header (`{"version": 2}`); each one after it is one checkpoint:
`{"put": [entry, ...], "del": [fid, ...], "retire": [identity, ...]}` (each key optional):
the whole state of every entry that changed since the checkpoint before, the fids the
reader dropped, and what is kept of entries forgotten (see `Retired`). A checkpoint
appends one record and fsyncs once, so its cost follows what changed, not how much
history is kept, and it is atomic: a crash mid-append leaves a torn last record, which
fails its length or CRC check and is dropped on load, so the state loaded is that of the
last complete checkpoint. When what was appended outgrows what a fresh journal would hold
(and COMPACT_MIN_BYTES), it is compacted: the whole state is written to a new file, fsynced
and renamed over the old one. A crash mid-compaction leaves the old file in place.

The `registry.json` of earlier agents (version 1, one JSON document rewritten whole) is
imported on load; once the journal holding its entries is durable, a directory of that name
takes its place (`guard_downgrade`): an older agent, which cannot read the journal, then
refuses to start ("registry.json: Is a directory") instead of starting afresh and missing
whatever is only in rotated copies.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
import zlib
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import orjson

from agent import log

VERSION = 2
FILENAME = "registry.log"
V1_FILENAME = "registry.json"
HEADER_BYTES = 18  # "%08x %08x "
# Compact once the journal outgrows this many snapshots' worth (and COMPACT_MIN_BYTES): the
# rewrite then costs at most 1/COMPACT_RATIO of what was appended since the last one, and
# the file stays under (1 + COMPACT_RATIO) snapshots.
COMPACT_RATIO = 1
COMPACT_MIN_BYTES = 256 * 1024
SNAPSHOT_RECORD = 64  # entries per record of a compacted journal
MAX_RETIRED = 20_000  # identities kept of forgotten entries (~100 bytes each on disk)


@dataclass
class Entry:
    """One file's identity, what the reader saw of it, and its acknowledged cursor.

    Each field has one writer, so the loop's modules never undo each other's changes:
    the reader writes identity and observations, the acker writes the cursor, and both
    write `updated_at`. Nothing else changes an entry.
    """

    # Identity, written by the reader: who the file is, wherever it is now.
    fid: str
    path: str
    dev: int
    ino: int
    head_len: int
    head_hash: str
    # Cursor, written by the acker, only with what Elasticsearch acknowledged.
    offset: int = 0  # every byte before it is acknowledged by Elasticsearch
    tail: str = ""  # hash of the bytes just before `offset`
    # Observations, written by the reader.
    size: int = 0  # size last seen
    # Cursor (acker).
    caught_up_at: float = 0.0  # last time offset reached size: the oldest unshipped byte is younger
    # Both: the reader when it sees the file, the acker when it ships some of it.
    updated_at: float = 0.0  # last time the agent saw or shipped this file
    # Observations (reader).
    lost_bytes: int = 0  # bytes rotated away before they were read
    lost_at: float = 0.0
    gone: bool = False  # file (and every copy) gone, or fully drained copy


FIELDS = tuple(f.name for f in dataclasses.fields(Entry))
TYPES = {f.name: f.type for f in dataclasses.fields(Entry)}  # annotations as strings
# Every field's value in one tuple: comparing it with the one last written tells whether
# an entry changed, without the reader having to say so.
state_of = attrgetter(*FIELDS)


@dataclass(frozen=True, slots=True)
class Retired:
    """What is kept of a forgotten entry: enough to recognise its file should it reappear
    (device, inode and head: a copy is found by its head wherever it is) and carry on where it
    ended (offset, tail) instead of reading it again, and its fid, so that no other file is
    given it (its documents' `_id`s are taken). About 100 bytes on disk."""

    fid: str
    dev: int
    ino: int
    head_len: int
    head_hash: str
    offset: int
    tail: str
    at: int  # when it was forgotten (seconds)

    @classmethod
    def of(cls, e: Entry, at: float) -> Retired:
        return cls(e.fid, e.dev, e.ino, e.head_len, e.head_hash, e.offset, e.tail, int(at))


class RegistryError(Exception):
    pass


class RegistryTooNew(RegistryError):
    """Written by a newer agent: refused, never misread."""


@dataclass
class State:
    entries: dict[str, Entry]
    retired: dict[str, Retired]


def path_in(state_dir: str) -> Path:
    """The file that holds the registry: the journal, or a version 1 file not yet imported."""
    path = Path(state_dir) / FILENAME
    v1 = Path(state_dir) / V1_FILENAME
    return v1 if not path.exists() and v1.is_file() else path


def load(state_dir: str) -> dict[str, Entry]:
    """Entries by fid. A corrupt registry is moved aside and the agent starts afresh.

    Starting afresh is safe: present files are read from the start, and because document
    ids are derived from file identity and offset, lines already indexed are refused by
    Elasticsearch as duplicates (409) instead of being indexed twice.
    """
    return load_state(state_dir).entries


def load_state(state_dir: str, report: bool = True) -> State:
    """Read-only but for moving a corrupt file aside: `offsets` may run beside the agent.
    `report`: log a torn tail dropped (once per start, not for every reader)."""
    for _ in range(2):  # the agent may remove registry.json between our look and our read
        path = path_in(state_dir)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            return _parse_v1(data) if path.name == V1_FILENAME else _parse(data, path, report)
        except RegistryTooNew as e:
            log.error("registry_too_new", "registry written by a newer log-shipper; refusing to start",
                      path=str(path), error=str(e),
                      hint="run the newer version again, or move the state directory aside to start afresh")
            raise
        except (RegistryError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            _move_aside(path, e)
            return State({}, {})
    return State({}, {})


DOWNGRADE_NOTE = """\
This state directory's registry is registry.log (log-shipper's journal, version %d).
An older log-shipper reads only a registry.json file: this directory stands in its way so
that such an agent refuses to start instead of rereading the log files from the start and
missing what is only in rotated copies. Run this version or a newer one. To start an older
one afresh anyway, move this state directory aside first.
"""


def guard_downgrade(state_dir: Path) -> None:
    """Put a directory where an older agent looks for its registry file (the journal now holds
    whatever a registry.json held: it was imported before the first compaction)."""
    guard = state_dir / V1_FILENAME
    if guard.is_dir():
        return
    try:
        os.unlink(guard)
    except FileNotFoundError:
        pass
    guard.mkdir(mode=0o755)
    (guard / "README").write_text(DOWNGRADE_NOTE % VERSION)


def _move_aside(path: Path, e: Exception) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, aside)
    log.error(
        "registry_corrupt",
        "registry unreadable; moved aside, rereading present files from the start (already indexed lines are not duplicated)",
        path=str(path),
        moved_to=str(aside),
        error=str(e)[:200],
        hint="keep the moved file for a bug report; nothing else to do",
    )


def _parse_v1(data: bytes) -> State:
    raw = orjson.loads(data)
    if raw.get("version") != 1:
        raise RegistryError(f"unsupported {V1_FILENAME} version {raw.get('version')!r}")
    entries = [_entry(e) for e in raw["entries"]]
    return State({e.fid: e for e in entries}, {})


def _parse(data: bytes, path: Path, report: bool) -> State:
    records, end = frames(data)
    if not records:
        raise RegistryError("no header record")
    header = orjson.loads(records[0])
    version = header.get("version")
    if type(version) is not int:
        raise RegistryError(f"header has no version: {records[0][:80]!r}")
    if version > VERSION:
        raise RegistryTooNew(f"{path.name} has version {version}; this log-shipper reads up to version {VERSION}")
    if version != VERSION:
        raise RegistryError(f"unsupported {path.name} version {version}")
    state = State({}, {})
    for rec in records[1:]:
        _apply(state, orjson.loads(rec))
    if end < len(data) and report:
        # A crash in the middle of a checkpoint: the records before it are whole.
        log.info("registry_tail_dropped", "registry's last record is incomplete (a crash during a write); dropped it",
                 path=str(path), dropped_bytes=len(data) - end,
                 hint="nothing to do: offsets are those of the last complete checkpoint, lines after it are replayed without duplicates")
    return state


def _apply(state: State, rec: dict) -> None:
    unknown = set(rec) - {"put", "del", "retire"}
    if unknown:
        raise RegistryError(f"unknown record keys {sorted(unknown)}")
    for raw in _list(rec, "put"):
        e = _entry(raw)
        state.entries[e.fid] = e
        state.retired.pop(e.fid, None)  # a forgotten file that came back
    for fid in _list(rec, "del"):
        if type(fid) is not str:
            raise RegistryError(f"del: expected a fid, got {fid!r:.40}")
        state.entries.pop(fid, None)
    for raw in _list(rec, "retire"):  # forgotten since the last compaction, or kept by it
        r = _retired(raw)
        state.entries.pop(r.fid, None)
        state.retired[r.fid] = r


def _entry(raw: dict) -> Entry:
    """An Entry from its JSON form, every field checked: a wrong type is a corrupt registry."""
    if type(raw) is not dict:
        raise RegistryError(f"entry is not an object: {raw!r:.80}")
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise RegistryError(f"entry {raw.get('fid')!r}: unknown fields {sorted(unknown)}")
    for name, value in raw.items():
        kind = TYPES[name]
        ok = (type(value) is int if kind == "int" else type(value) in (int, float) if kind == "float"
              else type(value) is bool if kind == "bool" else type(value) is str)
        if not ok:
            raise RegistryError(f"entry {raw.get('fid')!r}: field {name} should be {kind}, is {value!r:.40}")
    path = raw.get("path")
    if isinstance(path, str) and path.startswith(RAW_PATH):
        try:
            raw = {**raw, "path": os.fsdecode(base64.b64decode(path[len(RAW_PATH):], validate=True))}
        except ValueError:
            raise RegistryError(f"entry {raw.get('fid')!r}: undecodable path {path!r:.60}") from None
    return Entry(**raw)  # a missing field is a TypeError


_RETIRED_TYPES = ((str,), (int,), (int,), (int,), (str,), (int,), (str,), (int,))


def _retired(raw: list) -> Retired:
    if type(raw) is not list or len(raw) != len(_RETIRED_TYPES):
        raise RegistryError(f"bad retired identity {raw!r:.80}")
    for name, value, kinds in zip(Retired.__slots__, raw, _RETIRED_TYPES):
        if type(value) not in kinds:
            raise RegistryError(f"retired identity {raw[0]!r}: field {name} is {value!r:.40}")
    return Retired(*raw)


def _list(rec: dict, key: str) -> list:
    value = rec.get(key, [])
    if type(value) is not list:
        raise RegistryError(f"{key}: expected a list, got {value!r:.40}")
    return value


# -- framing ------------------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    return b"%08x %08x " % (len(payload), zlib.crc32(payload)) + payload + b"\n"


def frames(data: bytes) -> tuple[list[bytes], int]:
    """The payloads of the whole records at the start of `data`, and where they end.

    Reading stops at the first record that is short, malformed or fails its checksum: a
    torn write, never misread as a record."""
    out = []
    pos = 0
    while pos < len(data):
        head = data[pos : pos + HEADER_BYTES]
        try:
            if len(head) < HEADER_BYTES or head[8:9] != b" " or head[17:18] != b" ":
                break
            n, crc = int(head[:8], 16), int(head[9:17], 16)
        except ValueError:
            break
        start = pos + HEADER_BYTES
        payload = data[start : start + n]
        if len(payload) < n or data[start + n : start + n + 1] != b"\n" or zlib.crc32(payload) != crc:
            break
        out.append(payload)
        pos = start + n + 1
    return out, pos


# -- writing ------------------------------------------------------------------------------

@dataclass
class Written:
    seconds: float
    bytes: int
    records: int
    compacted: bool


class Journal:
    """The registry on disk, kept in step with the entries by appending what changed.

    The first write after start compacts, so a torn tail left by a crash is never appended
    after, and a version 1 registry is replaced by the journal."""

    def __init__(self, state_dir: str, keep_retired_s: float):
        self.dir = Path(state_dir)
        self.path = self.dir / FILENAME
        self.keep_retired_s = keep_retired_s
        # Loaded just after registry.load by the same agent: its torn tail is reported already.
        self.retired: dict[str, Retired] = load_state(state_dir, report=False).retired
        self._fd: int | None = None
        self._written: dict[str, tuple] = {}  # fid -> state_of(entry) as last written
        self._retiring: list[Retired] = []
        self._appended = 0  # bytes appended since the last compaction
        self._snapshot = 0  # bytes the last compaction wrote

    def retire(self, entries: dict[str, Entry], fid: str, now: float) -> None:
        """Forget an entry: it leaves `entries`; its identity is kept for `keep_retired_s`."""
        r = Retired.of(entries.pop(fid), now)
        self.retired[fid] = r
        self._retiring.append(r)

    def write(self, entries: dict[str, Entry], now: float | None = None) -> Written:
        """Durably record every change since the last write (nothing at all if none)."""
        t0 = time.monotonic()
        now = time.time() if now is None else now
        if self._fd is None or self._appended > max(COMPACT_MIN_BYTES, COMPACT_RATIO * self._snapshot):
            n, records = self._compact(entries, now)
            return Written(time.monotonic() - t0, n, records, True)
        # One that came back (a file matched again) is an entry again, no longer retired: in
        # memory too, or a fid the disk holds as an entry would stay retired here.
        for r in self._retiring:
            if r.fid in entries:
                self.retired.pop(r.fid, None)
        self._retiring = [r for r in self._retiring if r.fid not in entries]
        put, states = [], {}
        for fid, e in entries.items():
            s = state_of(e)
            if self._written.get(fid) != s:
                put.append(e)
                states[fid] = s
        retiring = {r.fid for r in self._retiring}
        dropped = [fid for fid in self._written if fid not in entries and fid not in retiring]
        if not (put or dropped or retiring):
            return Written(time.monotonic() - t0, 0, 0, False)
        data = _record(put, dropped, self._retiring)
        try:
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
        except OSError:
            self.close()  # the file may end in a torn record: the next write compacts
            raise
        self._appended += len(data)
        self._written.update(states)
        for fid in states:
            self.retired.pop(fid, None)
        for fid in retiring | set(dropped):
            self._written.pop(fid, None)
        self._retiring.clear()
        return Written(time.monotonic() - t0, len(data), len(put) + len(dropped) + len(retiring), False)

    def _compact(self, entries: dict[str, Entry], now: float) -> tuple[int, int]:
        """The whole state into a new file, renamed over the old one once durable."""
        self.close()
        keep = sorted((r for r in self.retired.values() if now - r.at <= self.keep_retired_s and r.fid not in entries),
                      key=lambda r: r.at)
        kept = {r.fid: r for r in keep[-MAX_RETIRED:]}
        self.retired.clear()  # in place: the reader holds this dict
        self.retired.update(kept)
        put, retired = list(entries.values()), list(self.retired.values())
        # In records of SNAPSHOT_RECORD entries, so that a look at the file stays readable.
        out = [frame(orjson.dumps({"version": VERSION}))]
        out.extend(_record(put[i : i + SNAPSHOT_RECORD], [], []) for i in range(0, len(put), SNAPSHOT_RECORD))
        out.extend(_record([], [], retired[i : i + SNAPSHOT_RECORD]) for i in range(0, len(retired), SNAPSHOT_RECORD))
        data = b"".join(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(FILENAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        except BaseException:
            os.close(fd)  # the next write compacts again
            raise
        self._fd = fd  # the renamed file: appends go on where the snapshot ends
        self._written = {fid: state_of(e) for fid, e in entries.items()}
        self._retiring.clear()
        self._appended, self._snapshot = 0, len(data)
        guard_downgrade(self.dir)
        return len(data), len(put) + len(retired)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# A path that is not UTF-8 (os.fsdecode gives it surrogates) has no JSON string: it is stored
# as its bytes in base64 after this prefix, which no path can begin with (NUL).
RAW_PATH = "\0b64:"


def _storable(e: Entry) -> Entry:
    if e.path.isascii():
        return e
    try:
        e.path.encode()
        return e
    except UnicodeEncodeError:
        return dataclasses.replace(e, path=RAW_PATH + base64.b64encode(os.fsencode(e.path)).decode())


def _record(put: list[Entry], dropped: list[str], retired: list[Retired]) -> bytes:
    rec: dict = {}
    if put:
        rec["put"] = [_storable(e) for e in put]  # orjson writes dataclasses natively: far cheaper than asdict()
    if dropped:
        rec["del"] = dropped
    if retired:
        rec["retire"] = [[getattr(r, n) for n in Retired.__slots__] for r in retired]
    return frame(orjson.dumps(rec))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
