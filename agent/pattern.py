"""Operators' multiline patterns, compiled with RE2: matching takes time linear in the line.

Python's `re` backtracks: `^(a+)+$` against `aaaa...ab` runs for hours holding the GIL, so
one rule would freeze the loop, `/healthz` and SIGTERM with it. RE2 has no backtracking
and refuses what needs it (backreferences, lookaround), which `check-config` reports.
"""

from __future__ import annotations

import re

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error comes back as an exception; nothing on stderr


class PatternError(ValueError):
    pass


# Patterns the agent itself ships (agent/rules.py), without nested repetition, so `re` runs them in linear
# time as well; those get `re`, whose call costs a fraction of the RE2 binding's (~0.3 vs ~2-3 µs a line).
_LINEAR_IN_RE: set[str] = set()


def linear_in_re(pattern: str) -> str:
    """Mark a pattern written in this code base, with no nested repetition, as safe for `re`; returns it."""
    _LINEAR_IN_RE.add(pattern)
    return pattern


def compile_pattern(pattern: str):
    """A compiled bytes pattern (`.match` anchors at the line's start, as with `re`)."""
    if pattern in _LINEAR_IN_RE:
        return re.compile(pattern.encode())
    try:
        return re2.compile(pattern.encode(), options=_OPTIONS)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PatternError(f"{why} (patterns are RE2: no backreferences or lookaround)") from None
