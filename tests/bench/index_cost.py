"""What the index template costs in the node: bytes per document on disk and bulk throughput.

    .venv/bin/python -m tests.bench.index_cost [--lines 300000] [--rounds 3] [--threads 4] [--compare OLD.json]

The agent's own documents for the benchmark corpus (tests/bench/corpus.py, the same encoder as the
agent) are pre-built once. Each round deletes the index, installs the template as the agent does
(template.install) and bulk-loads them with tests/bench/run.py's multi-threaded loader: documents/s.
With --compare, a second index template body (e.g. an older version's, as JSON) is measured the same
way, its rounds alternating with the current template's, so both see the same load on a shared machine.
After each template's last round: refresh, force-merge to one segment, and `_stats` primary store size
divided by the document count, a figure that does not depend on when segments happened to merge.
A real node (esnode.start(heap="1g"), or ES_URL). A measurement, not a test.

An older version's body, e.g. v1 (commit 782ef38), for --compare:
    git archive 782ef38 | tar -x -C /tmp/v1 && cd /tmp/v1 && PYTHONPATH=. python -c 'import json; from agent import
    template; print(json.dumps(template.template_body("bench-index-cost*", False)))' > /tmp/v1-template.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from elasticsearch import Elasticsearch

from agent import template
from tests.bench import corpus
from tests.bench.run import CACHE, build_bodies, direct_load, es_count

INDEX = "bench-index-cost"


def _install(es: Elasticsearch, body: dict | None) -> str:
    es.options(ignore_status=404).indices.delete(index=f"{INDEX}*")
    es.options(ignore_status=404).indices.delete_index_template(name=template.template_name(INDEX))
    if body is None:
        return template.install(es, "index", INDEX)
    es.indices.put_index_template(name=template.template_name(INDEX), body=body)
    return f"given template v{body.get('version')}"


def _load(es: Elasticsearch, url: str, bodies: list[bytes], docs: int, threads: int) -> float:
    took = direct_load(url, bodies, threads)
    got = es_count(url, INDEX)
    if got != docs:
        raise RuntimeError(f"indexed {got} of {docs} documents")
    return docs / took


def _size(es: Elasticsearch) -> dict:
    es.indices.forcemerge(index=INDEX, max_num_segments=1)
    es.indices.refresh(index=INDEX)
    stats = es.indices.stats(index=INDEX, metric="store,docs")["_all"]["primaries"]
    store = stats["store"]["size_in_bytes"]
    return {"store_bytes": store, "bytes_per_doc": store / stats["docs"]["count"]}


def measure(url: str, bodies: list[bytes], docs: int, rounds: int, threads: int, templates: dict) -> dict:
    es = Elasticsearch(url, request_timeout=600)
    out = {name: {"docs_s": []} for name in templates}
    for r in range(rounds):
        for name, body in templates.items():
            out[name]["template"] = _install(es, body)
            out[name]["docs_s"].append(_load(es, url, bodies, docs, threads))
            if r == rounds - 1:
                out[name].update(_size(es))
    for o in out.values():
        o["median_docs_s"] = statistics.median(o["docs_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--compare", type=Path, help="another index template body (JSON) to measure alongside")
    ap.add_argument("--out", default="index-cost.json")
    args = ap.parse_args()
    root, _ = corpus.ensure(CACHE, args.lines)
    bodies, docs = build_bodies(root, INDEX)
    templates: dict = {"current": None}
    if args.compare:
        templates = {"compared": json.loads(args.compare.read_text()), **templates}
    from tests.support import esnode

    node = esnode.start(heap="1g")
    try:
        results = measure(node.url, bodies, docs, args.rounds, args.threads, templates)
    finally:
        node.stop()
    print(f"{docs:,} docs, bulk bodies {sum(map(len, bodies)) / docs:.0f} B/doc")
    for name, r in results.items():
        print(f"{name}: {r['template']}")
        print(f"  bulk docs/s per round: {', '.join(f'{x:,.0f}' for x in r['docs_s'])}; median {r['median_docs_s']:,.0f}")
        print(f"  after force-merge: {r['store_bytes']:,} B primary store, {r['bytes_per_doc']:.1f} B/doc")
    Path(args.out).write_text(json.dumps({"docs": docs, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
