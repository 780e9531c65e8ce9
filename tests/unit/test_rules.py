"""Which format and multiline rule a file gets."""

from __future__ import annotations

from agent.config import FormatRule, MultilineConfig
from agent.rules import Rule, Rules, default_rule


def test_rules_operator_glob_first_then_the_built_in_default():
    ml = MultilineConfig(start="^\\[")
    rules = Rules([FormatRule(glob="uaa/*.log", format="raw", multiline=ml), FormatRule(glob="**/special.log", format="lager")])
    assert rules.of("uaa/uaa.log") == Rule("raw", ml)
    assert rules.of("some/deep/special.log") == Rule("lager")
    assert rules.of("gorouter/access.log") == default_rule("gorouter/access.log") == Rule("gorouter_access")
    assert Rules([]).of("uaa/uaa.log").format == "uaa"
