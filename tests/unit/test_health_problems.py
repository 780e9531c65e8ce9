"""health.problems names why bulk requests fail when the sender is stuck (issue 14)."""

from __future__ import annotations

from agent.config import HealthConfig
from agent.health import problems


def test_stuck_sender_reason_names_the_last_error():
    cfg = HealthConfig(max_lag_age_s=60)
    why = problems(cfg, [], stuck_for=90, last_error="unusable answer to _bulk: answer has 0 items for 400 documents")
    assert why == ["no bulk request has succeeded for 90s while documents wait; "
                   "last error: unusable answer to _bulk: answer has 0 items for 400 documents"]


def test_no_last_error_keeps_the_reason_as_it_was_and_a_short_stall_is_healthy():
    cfg = HealthConfig(max_lag_age_s=60)
    assert problems(cfg, [], stuck_for=90) == ["no bulk request has succeeded for 90s while documents wait"]
    assert problems(cfg, [], stuck_for=30, last_error="deadline") == []
