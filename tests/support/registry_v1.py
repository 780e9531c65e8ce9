"""The registry writer of log-shipper before the journal (version 1: registry.json rewritten whole), kept
verbatim from agent/registry.py at 782ef38 so that the upgrade is tested on files the old code wrote,
and the benchmark can compare old with new."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from agent import log

VERSION = 1
FILENAME = "registry.json"


@dataclass
class Entry:
    fid: str
    path: str
    dev: int
    ino: int
    head_len: int
    head_hash: str
    offset: int = 0  # every byte before it is acknowledged by Elasticsearch
    tail: str = ""  # hash of the bytes just before `offset`
    size: int = 0  # size last seen
    caught_up_at: float = 0.0  # last time offset reached size: the oldest unshipped byte is younger
    updated_at: float = 0.0  # last time the agent saw or shipped this file
    lost_bytes: int = 0  # bytes rotated away before they were read
    lost_at: float = 0.0
    gone: bool = False  # file (and every copy) gone, or fully drained copy


class RegistryError(Exception):
    pass


def path_in(state_dir: str) -> Path:
    return Path(state_dir) / FILENAME


def load(state_dir: str) -> dict[str, Entry]:
    """Entries by fid. A corrupt registry is moved aside and the agent starts afresh.

    Starting afresh is safe: present files are read from the start, and because document
    ids are derived from file identity and offset, lines already indexed are refused by
    Elasticsearch as duplicates (409) instead of being indexed twice.
    """
    path = path_in(state_dir)
    try:
        raw = orjson.loads(path.read_bytes())
        if raw.get("version") != VERSION:
            raise RegistryError(f"unsupported registry version {raw.get('version')!r}")
        return {e["fid"]: Entry(**e) for e in raw["entries"]}
    except FileNotFoundError:
        return {}
    except (orjson.JSONDecodeError, RegistryError, KeyError, TypeError, AttributeError) as e:
        aside = path.with_name(f"{FILENAME}.corrupt-{int(time.time())}")
        os.replace(path, aside)
        log.error(
            "registry_corrupt",
            "registry unreadable; moved aside, rereading present files from the start (already indexed lines are not duplicated)",
            path=str(path),
            moved_to=str(aside),
            error=str(e)[:200],
        )
        return {}


def save(state_dir: str, entries: dict[str, Entry], forget_after_s: float, now: float | None = None) -> float:
    """Write atomically (temp file, fsync, rename, fsync dir); returns seconds taken."""
    t0 = time.monotonic()
    now = time.time() if now is None else now
    for fid in [f for f, e in entries.items() if e.gone and now - e.updated_at > forget_after_s]:
        del entries[fid]
    path = path_in(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # orjson writes dataclasses natively: far cheaper than asdict() for thousands of entries.
    data = orjson.dumps({"version": VERSION, "entries": list(entries.values())})
    tmp = path.with_name(FILENAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.monotonic() - t0
