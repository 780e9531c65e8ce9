"""Who logs how much: acknowledged lines and bytes per job in hourly buckets, kept across restarts."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import orjson

FILENAME = "volume.json"
KEEP_HOURS = 24 * 31
GIB = 1024**3


class Volume:
    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, FILENAME)
        self.buckets: dict[str, dict[int, list[int]]] = load(state_dir)  # job -> hour -> [lines, bytes]
        self.dirty = False

    def add(self, job: str, lines: int, nbytes: int, now: float | None = None) -> None:
        hour = int((time.time() if now is None else now) // 3600)
        b = self.buckets.setdefault(job, {}).setdefault(hour, [0, 0])
        b[0] += lines
        b[1] += nbytes
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        oldest = int(time.time() // 3600) - KEEP_HOURS
        data = {job: {str(h): v for h, v in hours.items() if h >= oldest} for job, hours in self.buckets.items()}
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(orjson.dumps(data))
        os.replace(tmp, self.path)
        self.dirty = False


def load(state_dir: str) -> dict[str, dict[int, list[int]]]:
    try:
        raw = orjson.loads(open(os.path.join(state_dir, FILENAME), "rb").read())
        return {job: {int(h): v for h, v in hours.items()} for job, hours in raw.items()}
    except (FileNotFoundError, orjson.JSONDecodeError, ValueError, AttributeError):
        return {}


@dataclass
class Producer:
    job: str
    lines: int
    bytes: int
    share: float
    cost: float | None


def top(buckets: dict[str, dict[int, list[int]]], window_s: float, price_per_gib: float,
        now: float | None = None) -> list[Producer]:
    since = int(((time.time() if now is None else now) - window_s) // 3600)
    sums = {job: [sum(v[0] for h, v in hours.items() if h >= since), sum(v[1] for h, v in hours.items() if h >= since)]
            for job, hours in buckets.items()}
    total = sum(b for _, b in sums.values()) or 1
    rows = [Producer(job, lines, nbytes, round(nbytes / total, 4), round(nbytes / GIB * price_per_gib, 4) if price_per_gib else None)
            for job, (lines, nbytes) in sums.items() if lines]
    return sorted(rows, key=lambda p: p.bytes, reverse=True)
