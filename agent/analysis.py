"""How log text is analysed, so an operator finds an event by the word they remember.

Log text is full of joined identifiers: `java.lang.NullPointerException`, `UaaTokenServices.java:412`,
`org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder.get`, `api.sys.example.com`. The standard
analyzer keeps such a name as one token, so `NullPointerException` alone finds nothing; and it splits
guids and `CF-` codes at dashes, so an unquoted guid matches every event sharing one of its parts. Two variants, chosen at
template install by what the cluster can do:

- `identifiers` (clusters with the analysis-common module, i.e. every default distribution): one field.
  Each identifier is indexed whole and as its parts (every alphanumeric run, dash-, dot- and
  underscore-joined runs, a frame's class and Class.method), all at the identifier's position; a query
  keeps what the operator typed whole. So a part, the whole name, a guid and a phrase each match
  exactly what contains them. Checked with Lucene's own classes in tests/unit/test_analysis_lucene.py.
- `core` (the minimal distribution: standard, simple, whitespace, keyword, stop analyzers only): the
  field keeps the standard analyzer (whole names, phrases, numbers as before) and gains a
  `words` sub-field indexed by `simple` (letter runs: class and package names, parts of error codes)
  and searched by `standard`, so a typed whole name is not split into common words there. Digits are
  not in `words`: `Http11NioProtocol` is found by its full name only. Free text (Kibana's default)
  searches both through `index.query.default_field`; a field query needs `message.words:` for a part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elasticsearch import ApiError, Elasticsearch

TEXT_ANALYZER = "log_shipper_text"
SEARCH_ANALYZER = "log_shipper_text_search"

# One token per identifier: alphanumeric runs joined by single . : @ - (never a trailing one, so
# "NullPointerException:" or "(Foo.java:3)" lose their punctuation). A slash separates: a route is a
# phrase of its segments, so "/v2/service_instances" finds every path under it. Java regex syntax.
_IDENTIFIER = r"[\p{L}\p{N}_$]+(?:[.:@\-][\p{L}\p{N}_$]+)*"
_RUN = r"[\p{L}\p{N}_$]+"
# The parts an identifier is also indexed as (pattern_capture finds every match of each).
_PARTS = [
    r"([\p{L}\p{N}]+)",  # NullPointerException, java, 412, 8d8bc2a0, vcap, request
    rf"({_RUN}(?:-{_RUN})+)",  # a whole guid inside key:guid, CF-ServiceBrokerBadResponse, http-nio-8080-exec-1
    rf"({_RUN}(?:\.{_RUN})+)",  # UaaTokenServices.java, api.sys.example.com, 10.0.1.11
    rf"({_RUN})",  # vcap_request_id, error_code
    rf"^((?:{_RUN}\.)+{_RUN})\.{_RUN}$",  # a frame's class: org.cloudfoundry.identity.uaa.zone.IdentityZoneHolder
    rf"({_RUN}\.{_RUN})$",  # a frame's Class.method (IdentityZoneHolder.get), a host's domain (example.com)
]
# Lucene refuses a term over 32766 bytes, and with it the whole document; the standard tokenizer
# splits at 255 characters. A very long unbroken run is kept as its first 1000 characters.
_TRUNCATE = {"type": "truncate", "length": 1000}
_TOKENIZER = {"type": "pattern", "pattern": _IDENTIFIER, "group": 0}
_PARTS_FILTER = {"type": "pattern_capture", "preserve_original": True, "patterns": _PARTS}
# A part found by two patterns (java in java.lang.X) is one term at that position, not two.
_UNIQUE = {"type": "unique", "only_on_same_position": True}


@dataclass(frozen=True)
class Variant:
    name: str
    description: str  # what install and setup print
    settings: dict = field(default_factory=dict)  # index `analysis` settings
    text: dict = field(default_factory=dict)  # mapping of a log text field
    subfields: tuple[str, ...] = ()  # multi-fields free text searches besides the field itself

    def default_fields(self, text_fields: list[str], keyword_fields: list[str]) -> list[str]:
        """`index.query.default_field`: text with its sub-fields, and the keywords (job, ids, hosts)."""
        return [f"{t}{s}" for t in text_fields for s in ("", *self.subfields)] + keyword_fields


IDENTIFIERS = Variant(
    name="identifiers",
    description="words inside identifiers via analysis-common (pattern tokenizer + pattern_capture)",
    settings={
        "tokenizer": {"log_shipper_identifiers": _TOKENIZER},
        "filter": {"log_shipper_truncate": _TRUNCATE, "log_shipper_parts": _PARTS_FILTER, "log_shipper_unique": _UNIQUE},
        "analyzer": {
            TEXT_ANALYZER: {"type": "custom", "tokenizer": "log_shipper_identifiers",
                            "filter": ["lowercase", "log_shipper_truncate", "log_shipper_parts", "log_shipper_unique"]},
            SEARCH_ANALYZER: {"type": "custom", "tokenizer": "log_shipper_identifiers",
                              "filter": ["lowercase", "log_shipper_truncate"]},
        },
    },
    # Log text is searched, not ranked: norms would only cost disk.
    text={"type": "text", "norms": False, "analyzer": TEXT_ANALYZER, "search_analyzer": SEARCH_ANALYZER},
)

CORE = Variant(
    name="core",
    description="words inside identifiers via core analyzers only (standard + simple `words` sub-fields; no analysis-common)",
    text={"type": "text", "norms": False,
          "fields": {"words": {"type": "text", "norms": False, "analyzer": "simple", "search_analyzer": "standard"}}},
    subfields=(".words",),
)

BY_NAME = {v.name: v for v in (IDENTIFIERS, CORE)}


def detect(es: Elasticsearch) -> tuple[Variant, str]:
    """The variant this cluster can index, and why: the identifiers chain is tried with `_analyze`."""
    try:
        got = es.indices.analyze(tokenizer=_TOKENIZER, filter=["lowercase", _TRUNCATE, _PARTS_FILTER, _UNIQUE],
                                 text="at java.lang.NullPointerException:")
    except ApiError as e:
        if e.status_code == 400:  # "failed to find global tokenizer under [pattern]": no analysis-common
            return CORE, "no analysis-common on this cluster"
        if e.status_code in (401, 403):
            return CORE, f"cannot check the cluster's analyzers ({e.status_code} on _analyze)"
        raise
    tokens = {t["token"] for t in got.get("tokens", [])}
    if {"java.lang.nullpointerexception", "nullpointerexception", "at"} <= tokens:
        return IDENTIFIERS, "analysis-common present"
    return CORE, f"analysis-common answered unexpected tokens {sorted(tokens)[:6]}"
