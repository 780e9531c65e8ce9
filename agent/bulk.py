"""What a `_bulk` answer means for each document of the request: a pure function, no I/O.

The sender applies the outcome (health, metrics, push-back, dead letters, what to send again);
the rules live here alone so they can be tested with crafted answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeadLetter:
    """A document refused for good (a 4xx other than 401/403/409/429), with its error."""

    action: bytes
    source: bytes
    error: dict


@dataclass
class Outcome:
    indexed: int = 0
    duplicates: int = 0  # 409 on create: a replay of a document that is there already
    retry: list[bytes] = field(default_factory=list)  # action and source lines to send again
    refused: tuple[int, dict] | None = None  # the first 401/403 item: (status, error)
    dead: list[DeadLetter] = field(default_factory=list)
    pushed_back: bool = False  # an item got 429: Elasticsearch asks for fewer requests

    @property
    def retry_body(self) -> bytes:
        return b"\n".join(self.retry) + b"\n" if self.retry else b""


def docs_in(body: bytes | bytearray) -> int:
    """Documents in an NDJSON bulk body of create actions (two lines each, newline-terminated)."""
    return body.count(b"\n") // 2


def classify(answer: dict, body: bytes | bytearray) -> Outcome:
    """Sort the request's documents by the answer's items, which are in request order."""
    if not answer.get("errors"):
        return Outcome(indexed=docs_in(body))
    lines = bytes(body).split(b"\n")  # bytes: the sender reads ids out of the action lines
    out = Outcome()
    for i, item in enumerate(answer["items"]):
        res = next(iter(item.values()))
        status = res.get("status", 0)
        if status < 300:
            out.indexed += 1
            continue
        if status == 409:
            out.duplicates += 1
            continue
        action, source = lines[2 * i], lines[2 * i + 1]
        if status == 429 or status >= 500:
            out.pushed_back |= status == 429
            out.retry += (action, source)
        elif status in (401, 403):  # a write block or missing privilege: temporary, never dead
            out.refused = out.refused or (status, res.get("error", {}))
            out.retry += (action, source)
        else:
            out.dead.append(DeadLetter(action, source, res.get("error", {})))
    return out
