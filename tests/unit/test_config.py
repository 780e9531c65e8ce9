"""Config checks that protect operators: each names the field."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, from_dict


def test_credentials_over_plain_http_are_refused_unless_the_operator_says_so():
    with pytest.raises(ConfigError, match=r"^elasticsearch\.hosts\[1\]: credentials would cross the network in clear text"):
        from_dict({"elasticsearch": {"hosts": ["https://a:9200", "http://b:9200"], "username": "u", "password": "p"}})
    with pytest.raises(ConfigError, match=r"^elasticsearch\.hosts\[0\]"):
        from_dict({"elasticsearch": {"hosts": ["http://a:9200"], "api_key": "k"}})
    ok = from_dict({"elasticsearch": {"hosts": ["http://127.0.0.1:9200"], "api_key": "k", "allow_insecure_http": True}})
    assert ok.elasticsearch.allow_insecure_http
    assert from_dict({"elasticsearch": {"hosts": ["http://a:9200"]}}).elasticsearch.username is None  # no credentials: fine


def test_fleet_settings_are_checked():
    with pytest.raises(ConfigError, match=r"^fleet\.interval_s: must be at least 1"):
        from_dict({"fleet": {"interval_s": 0.5}})
    with pytest.raises(ConfigError, match=r"^fleet\.index: must be a lowercase index name"):
        from_dict({"fleet": {"index": "Agents"}})


def test_the_bound_on_deleted_copies_held_is_checked():
    with pytest.raises(ConfigError, match=r"^reader\.max_deleted_held_bytes: must be 0"):
        from_dict({"reader": {"max_deleted_held_bytes": -1}})
    assert from_dict({"reader": {"max_deleted_held_bytes": 0}}).reader.max_deleted_held_bytes == 0
