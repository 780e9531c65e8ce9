"""Fleet status documents and the ranking of `log-shipper fleet`, on crafted figures."""

from __future__ import annotations

from agent import fleet
from agent.offsets import FileOffset

NOW = 1_800_000_000.0


def _file(path: str, lag: int = 0, age: float = 0.0, lost: int = 0, lost_age: float | None = None) -> FileOffset:
    return FileOffset(path, "f", "live", 1000, 1000 - lag, lag, age, 1.0, lost, lost_age)


def _job(path: str) -> str:
    return path.split("/")[3]


IDENTITY = {"agent": {"id": "a1", "version": "0.1.0"}, "host": {"name": "vm"},
            "bosh": {"deployment": "cf", "instance": {"group": "router", "index": 0, "id": "i", "az": "z1"}}}


def test_status_sums_per_job_what_offsets_shows():
    files = [_file("/var/log/gorouter/access.log", lag=100, age=30.0), _file("/var/log/gorouter/gorouter.log", lag=5, age=2.0),
             _file("/var/log/uaa/uaa.log", lost=70, lost_age=10.0)]
    facts = fleet.Facts(files, ["1 file(s) behind"], False, 3, {"gorouter": [4, 400], "nats": [1, 10]})
    doc = fleet.status_doc(IDENTITY, facts, _job, 60.0, 3600.0, NOW)
    st = doc["status"]
    assert doc["@timestamp"] == "2027-01-15T08:00:00.000Z" and doc["bosh"]["deployment"] == "cf"
    assert (st["lag_bytes"], st["oldest_unshipped_age_s"], st["lost_bytes"], st["lost_recent_bytes"]) == (105, 30.0, 70, 70)
    assert (st["shipped_lines"], st["shipped_bytes"], st["dead_letters"], st["files"]) == (5, 410, 3, 3)
    assert st["state"] == "lost" and st["lost_at"] == "2027-01-15T07:59:50.000Z"
    jobs = {j["name"]: j for j in st["jobs"]}
    assert set(jobs) == {"gorouter", "nats", "uaa"}
    assert (jobs["gorouter"]["lag_bytes"], jobs["gorouter"]["files"], jobs["gorouter"]["shipped_lines"]) == (105, 2, 4)
    assert jobs["uaa"]["lost_at"] == st["lost_at"] and "lost_at" not in jobs["gorouter"]
    assert jobs["nats"] == {"name": "nats", "files": 0, "lag_bytes": 0, "oldest_unshipped_age_s": 0.0, "lost_bytes": 0,
                            "shipped_lines": 1, "shipped_bytes": 10}


def test_state_lost_then_behind_then_refused_then_healthy():
    lost = [_file("/l/j/a.log", lost=1, lost_age=5.0)]
    assert fleet.state_of(lost, [], True, 3600.0) == "lost"
    assert fleet.state_of([_file("/l/j/a.log", lost=1, lost_age=4000.0)], [], False, 3600.0) == "healthy"
    assert fleet.state_of([], ["2 file(s) behind by more than 300s"], True, 3600.0) == "behind"
    assert fleet.state_of([], ["Elasticsearch has refused writes for 90s: http 403"], True, 3600.0) == "refused"
    assert fleet.state_of([], [], True, 3600.0) == "refused"
    assert fleet.state_of([], [], False, 3600.0) == "healthy"


def _doc(deployment: str, state: str, age: float, interval: float = 60.0, **status) -> dict:
    return {"@timestamp": fleet._iso(NOW - age), "agent": {"id": deployment}, "bosh": {"deployment": deployment,
            "instance": {"group": "g", "index": 0}}, "status": {"state": state, "interval_s": interval, **status}}


def test_rows_rank_silent_lost_behind_refused_healthy_worst_first():
    docs = [_doc("ok", "healthy", 10), _doc("refused", "refused", 10), _doc("behind-a", "behind", 10, oldest_unshipped_age_s=50),
            _doc("behind-b", "behind", 10, oldest_unshipped_age_s=500), _doc("lost", "lost", 10, lost_recent_bytes=9),
            _doc("gone", "healthy", 181), _doc("fast", "healthy", 25, interval=5.0)]
    got = [(r.deployment, r.state) for r in fleet.rows(docs, NOW)]
    assert got == [("fast", "silent"), ("gone", "silent"), ("lost", "lost"), ("behind-b", "behind"),
                   ("behind-a", "behind"), ("refused", "refused"), ("ok", "healthy")]
    gone = next(r for r in fleet.rows(docs, NOW) if r.deployment == "gone")
    assert gone.reason == "no status for 181s" and gone.instance == "g/0"
    assert fleet.table(fleet.rows(docs, NOW)).splitlines()[1].split()[:2] == ["silent", "fast"]


def test_bulk_body_has_a_deterministic_id_per_agent_and_interval():
    body = fleet.bulk_body("logs-bosh-agents", "a1", {"x": 1}, NOW + 0.7)
    assert body == b'{"create":{"_index":"logs-bosh-agents","_id":"a1-1800000000"}}\n{"x":1}\n'


def test_shipped_counts_are_taken_once():
    s = fleet.Shipped()
    s.add("gorouter", 2, 20)
    s.add("gorouter", 1, 5)
    assert s.take() == {"gorouter": [3, 25]} and s.take() == {}


def _mapped(props: dict, prefix: str = "") -> set[str]:
    out = set()
    for name, spec in props.items():
        full = f"{prefix}{name}"
        out.add(full)
        if "properties" in spec and spec.get("type") != "nested":
            out |= _mapped(spec["properties"], full + ".")
    return out


def test_fleet_dashboard_names_only_mapped_status_fields_and_resolves():
    import json

    from agent import kibana
    from tests.unit.test_kibana import named_fields

    objs = [json.loads(line) for line in kibana.FLEET_OBJECTS.read_text().splitlines()]
    ids = {(o["type"], o["id"]) for o in objs}
    assert len(ids) == len(objs)
    for o in objs:
        assert all((r["type"], r["id"]) in ids for r in o["references"]), o["id"]
    (dash,) = [o for o in objs if o["type"] == "dashboard"]
    titles = {o["attributes"]["title"] for o in objs if o["type"] == "visualization"}
    assert titles == {"Agents by state", "Lag by VM over time", "Lost bytes by VM", "Volume shipped by deployment"}
    assert len(json.loads(dash["attributes"]["panelsJSON"])) == len(dash["references"]) == 4
    named = set().union(*(named_fields(o) for o in objs))
    mapped = _mapped(fleet.MAPPING["properties"])
    assert {"status.state", "status.lag_bytes", "status.lost_bytes", "status.shipped_bytes", "agent.id"} <= named
    assert named - mapped == set()
