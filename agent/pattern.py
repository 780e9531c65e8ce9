"""Operators' multiline patterns, compiled with RE2: matching takes time linear in the line.

Python's `re` backtracks: `^(a+)+$` against `aaaa...ab` runs for hours holding the GIL, so
one rule would freeze the loop, `/healthz` and SIGTERM with it. RE2 has no backtracking
and refuses what needs it (backreferences, lookaround), which `check-config` reports.
"""

from __future__ import annotations

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error comes back as an exception; nothing on stderr


class PatternError(ValueError):
    pass


def compile_pattern(pattern: str):
    """A compiled bytes pattern (`.match` anchors at the line's start, as with `re`)."""
    try:
        return re2.compile(pattern.encode(), options=_OPTIONS)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PatternError(f"{why} (patterns are RE2: no backreferences or lookaround)") from None
