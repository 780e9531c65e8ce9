"""The `identifiers` analysis run by the Lucene that Elasticsearch runs, on the incident corpus.

The test node has no analysis-common module, so the variant full clusters get cannot be tried there.
Its chain is Lucene classes that module only wraps (pattern tokenizer, lowercase, truncate,
pattern_capture, unique on the same position), and those are in the test distribution's own jars:
tests/support/lucene/Chain.java indexes the corpus with them and answers `match` / `match_phrase`
queries built over the search analyzer. What this does not cover is Elasticsearch's settings parsing
and its multi-field query layer (free text over several fields): those are the core variant's tests on
the node (tests/integration/test_search.py), whose corpus and expectations this reuses.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from agent import analysis
from tests.integration.test_search import BROKER, CONTAINER, EVENTS, FREE_TEXT, NPE, ONE_REQUEST, REQ
from tests.support import esnode

SOURCE = Path(__file__).parents[1] / "support" / "lucene" / "Chain.java"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    lib = esnode.fetch_distribution() / "lib"
    jars = sorted(str(j) for j in lib.glob("lucene-*.jar") if j.name.startswith(("lucene-core-", "lucene-analysis-common-")))
    assert len(jars) == 2, jars
    out = tmp_path_factory.mktemp("lucene")
    javac = Path(esnode.JAVA_HOME) / "bin" / "javac"
    subprocess.run([str(javac), "-d", str(out), "-cp", ":".join(jars), str(SOURCE)], check=True)
    settings = analysis.IDENTIFIERS.settings
    tokenizer = settings["tokenizer"]["log_shipper_identifiers"]
    parts = settings["filter"]["log_shipper_parts"]
    # The chain Chain.java builds is the one the template declares, filter by filter.
    assert settings["analyzer"][analysis.TEXT_ANALYZER]["filter"] == [
        "lowercase", "log_shipper_truncate", "log_shipper_parts", "log_shipper_unique"]
    assert settings["analyzer"][analysis.SEARCH_ANALYZER]["filter"] == ["lowercase", "log_shipper_truncate"]
    assert (tokenizer["group"], parts["preserve_original"], settings["filter"]["log_shipper_unique"]) == (
        0, True, {"type": "unique", "only_on_same_position": True})
    head = [f"TOKENIZER\t{_b64(tokenizer['pattern'])}", f"TRUNCATE\t{settings['filter']['log_shipper_truncate']['length']}"]
    head += [f"PART\t{_b64(p)}" for p in parts["patterns"]]
    head += [f"DOC\t{name}\t{_b64(text)}" for name, text in EVENTS.items()]

    def run(queries: list[tuple[str, str]]) -> list[list[str]]:
        """(MATCH | PHRASE | TOKENS, text) -> per query the sorted event names (or the tokens)."""
        rows = head + [f"{kind}\t{i}\t{_b64(text)}" for i, (kind, text) in enumerate(queries)]
        done = subprocess.run([str(Path(esnode.JAVA_HOME) / "bin" / "java"), "-cp", ":".join([str(out), *jars]),
                               "Chain"], input="\n".join(rows) + "\n", capture_output=True, text=True, check=True)
        answers = [line.split("\t") for line in done.stdout.splitlines()]
        assert [int(a[0]) for a in answers] == list(range(len(queries)))
        return [a[1].split(",") if a[1] else [] for a in answers]

    return run


def _kind(typed: str) -> tuple[str, str]:
    return ("PHRASE", typed.strip('"')) if typed.startswith('"') else ("MATCH", typed)


# Beyond the core variant: unquoted values with punctuation are exact, and a frame's class or
# Class.method is found without its neighbours.
IDENTIFIERS_ONLY = [
    (REQ, ONE_REQUEST),
    ("CF-ServiceBrokerBadResponse", BROKER),
    (CONTAINER, {"rep_failed"}),
    ("UaaTokenServices.java:412", NPE),
    ("IdentityZoneHolder.get", NPE),
    ("org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder", NPE),
    ("createAccessToken", NPE),
    ("8d8bc2a0", ONE_REQUEST),  # one part of a guid
    ("http-nio-8080-exec-3", {"uaa_hikari"}),
    ("10.0.1.11", {"cc0_started", "nginx_put", "gr_cc", "gr_shop_502a", "gr_shop_502b", "gr_shop_200", "gr_orders_503",
                   "uaa_audit", "nginx_tf1", "nginx_tf2"}),
]


def test_operators_words_find_exactly_their_events(chain):
    cases = FREE_TEXT + IDENTIFIERS_ONLY
    got = chain([_kind(typed) for typed, _ in cases])
    assert {typed: set(g) for (typed, _), g in zip(cases, got)} == {typed: want for typed, want in cases}


def test_an_identifier_is_indexed_whole_and_as_its_parts(chain):
    (frame, guid, long_run) = chain([
        ("TOKENS", "\tat org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder.get(IdentityZoneHolder.java:58)"),
        ("TOKENS", f"vcap_request_id:{REQ}::x"),
        ("TOKENS", "a" * 5000),
    ])
    # `unique`: a part two patterns find is one term at its position; identityzoneholder is in both identifiers.
    assert sorted(frame) == sorted([
        "at",
        "org.cloudfoundry.identity.uaa.zone.identityzoneholder.get", "org", "cloudfoundry", "identity", "uaa", "zone",
        "identityzoneholder", "get", "org.cloudfoundry.identity.uaa.zone.identityzoneholder", "identityzoneholder.get",
        "identityzoneholder.java:58", "identityzoneholder", "java", "58", "identityzoneholder.java"])
    assert REQ in guid and "vcap_request_id" in guid and "x" in guid
    assert long_run == ["a" * 1000]
