"""A deterministic Cloud Foundry log corpus for the benchmark: /var/vcap/sys/log-shaped, per job dirs.

Shapes follow agent/formats/* and the real samples in tests/unit/test_formats.py: gorouter access
lines, lager JSON of both generations (epoch string, zap float, RFC 3339 + "level"), Cloud Controller
JSON (epoch float and RFC 3339), UAA log4j lines with multi-line Java stack traces, monit's plain
text. The same seed always gives byte-identical files, so runs compare; the corpus is cached under
`where` by version and layout. Two layouts of the same line shapes: `jobs` (one file per job, 11
files) and `per_format` (one file per built-in format: gorouter access, lager, Cloud Controller, UAA,
and monit's plain text, which the default rule leaves to `auto`).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

VERSION = 1
T0 = 1_764_287_940  # 2025-11-27T23:59:00Z; each file's clock advances by a few ms per line

APPS = [("%08x-%04x-4%03x-8%03x-%012x" % (i * 2654435761 & 0xFFFFFFFF, i, i, i, i * 7919)) for i in range(64)]
HOSTS = ["api.sys.example.com", "login.sys.example.com", "shop.apps.example.com", "orders.apps.example.com",
         "payments-v2.apps.example.com", "uaa.sys.example.com", "doppler.sys.example.com", "cart.apps.example.com"]
PATHS = ["/", "/v3/apps?per_page=5000", "/healthz", "/api/v1/orders/%d", "/static/app-%d.js", "/login?redirect=%2Fhome",
         "/v2/info", "/api/v1/carts/%d/items", "/images/%d.png", "/oauth/token"]
METHODS = [b"GET"] * 7 + [b"POST", b"PUT", b"DELETE"]
STATUS = [200] * 14 + [201, 204, 302, 304, 404, 500, 502]
AGENTS = ["curl/7.88.1", "Go-http-client/1.1", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
          "cf/8.7.10+5b7ce3c.2024-04-04 (go1.21.5; amd64 linux)", "okhttp/4.12.0", "python-requests/2.31.0",
          'Mozilla/5.0 \\"quoted\\" agent', "Mözilla/5.0 (Macintosh) café"]
LAGER_MSGS = {
    "rep": ["rep.executing-container-operation.ordinary-lrp-processor.process-running-container.succeeded",
            "rep.auction-perform-work.handling", "rep.container-metrics-reporter.emitting", "rep.sync-actual-lrps.starting",
            "rep.executing-container-operation.task-processor.failed-creating-container"],
    "garden": ["guardian.create.containerizer-create.finished", "guardian.api.garden-server.get-properties.got-properties",
               "guardian.metrics-notifier.emit", "guardian.run.exec.finished", "guardian.destroy.failed"],
    "bbs": ["bbs.request.start-actual-lrp.starting", "bbs.convergence.completed", "bbs.request.desire-lrp.complete",
            "bbs.locket-lock.acquired-lock", "bbs.task-completion-workpool.failed"],
    "route_emitter": ["route-emitter.watcher.handling-event", "route-emitter.syncer.syncing", "route-emitter.nats-emitter.emitted"],
    "locket": ["locket.lock.started", "locket.fetch.finished", "locket.lock.register-ttl.failed-compare-and-release"],
    "gorouter": ["route-registered", "endpoint-registered", "prune-stale-droplet", "backend-endpoint-failed", "route-unregistered"],
}
ERRORS = ["mounting file: mounting file: exit status 2", 'dial tcp 10.0.16.7:8889: connect: connection refused',
          'unexpected "status" in response: \\"503\\"', "context deadline exceeded"]
CC_MSGS = ['Started GET "/v3/apps?per_page=5000" for user: %s, ip: 10.0.1.%d with vcap-request-id: %s at 2025-11-27 23:59:00 UTC',
           "Completed 200 vcap-request-id: %s::%s", "Request failed: 404: {\"code\"=>10010, \"title\"=>\"CF-ResourceNotFound\"}",
           'Job (id: %d) started: {"job_class":"VCAP::CloudController::Jobs::DeleteActionJob"}']
UAA_LOGGERS = ["Audit", "UaaTokenServices", "ClientAdminEndpoints", "SamlLoginServerKeyManager", "JdbcScimUserProvisioning",
               "UaaAuthenticationFailureHandler"]
AUDIT = ["UserAuthenticationSuccess ('admin'): principal=%s, origin=[remoteAddress=52.19.1.%d, clientId=cf], identityZoneId=[uaa]",
         "TokenIssuedEvent ('[\"cloud_controller.read\",\"openid\"]'): principal=%s, origin=[caller=cf, details=(remoteAddress=10.0.1.%d)], identityZoneId=[uaa]",
         "ClientAuthenticationSuccess ('Client authentication success'): principal=%s, origin=[remoteAddress=10.0.2.%d], identityZoneId=[uaa]"]
TRACE = [b"org.springframework.dao.DataAccessResourceFailureException: Could not open JDBC Connection for transaction",
         b"\tat org.springframework.jdbc.datasource.DataSourceTransactionManager.doBegin(DataSourceTransactionManager.java:309)",
         b"\tat org.springframework.transaction.support.AbstractPlatformTransactionManager.startTransaction(AbstractPlatformTransactionManager.java:400)",
         b"\tat org.cloudfoundry.identity.uaa.scim.jdbc.JdbcScimUserProvisioning.retrieveByUsername(JdbcScimUserProvisioning.java:180)",
         b"\tat org.cloudfoundry.identity.uaa.authentication.manager.AuthzAuthenticationManager.authenticate(AuthzAuthenticationManager.java:95)",
         b"\tat java.base/java.lang.Thread.run(Thread.java:840)",
         b"Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms.",
         b"\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
         b"\t... 87 common frames omitted"]


def _iso(ns: int, digits: int = 9) -> bytes:
    s, frac = divmod(ns, 1_000_000_000)
    return b"%s.%sZ" % (_sec(s), (b"%09d" % frac)[:digits])


_secs: dict[int, bytes] = {}


def _sec(s: int) -> bytes:
    out = _secs.get(s)
    if out is None:
        import time
        out = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)).encode()
        if len(_secs) > 100_000:
            _secs.clear()
        _secs[s] = out
    return out


def _uuid(r: random.Random) -> str:
    return "%08x-%04x-4%03x-%04x-%012x" % (r.getrandbits(32), r.getrandbits(16), r.getrandbits(12),
                                          0x8000 | r.getrandbits(14), r.getrandbits(48))


def gorouter_access(r: random.Random, ns: int, i: int) -> bytes:
    app = r.choice(APPS)
    path = r.choice(PATHS)
    if "%d" in path:
        path = path % r.randrange(100000)
    rid = _uuid(r)
    trace = "%016x" % r.getrandbits(64)
    return (b'%s - [%s] "%s %s HTTP/1.1" %d %d %d "-" "%s" "10.0.%d.%d:%d" "10.0.16.%d:61%03d" '
            b'x_forwarded_for:"203.0.113.%d, 10.0.1.11" x_forwarded_proto:"https" vcap_request_id:"%s" '
            b'response_time:0.%06d gorouter_time:0.000%03d app_id:"%s" app_index:"%d" instance_id:"%s" '
            b'x_cf_routererror:"-" x_b3_traceid:"%s" x_b3_spanid:"%s" x_b3_parentspanid:"-" b3:"%s-%s"') % (
        r.choice(HOSTS).encode(), _iso(ns), r.choice(METHODS), path.encode(), r.choice(STATUS), r.randrange(2000),
        r.randrange(60000), r.choice(AGENTS).encode(), r.randrange(4), r.randrange(256), r.randrange(1024, 65535),
        r.randrange(64), r.randrange(1000), r.randrange(256), rid.encode(), r.randrange(400000), r.randrange(999),
        app.encode(), r.randrange(4), _uuid(r).encode(), trace.encode(), trace.encode(), trace.encode(), trace.encode())


def lager(r: random.Random, ns: int, i: int, job: str, gen: str) -> bytes:
    msg = r.choice(LAGER_MSGS[job])
    failed = "failed" in msg
    data = {"session": "%d.%d" % (r.randrange(1, 40), r.randrange(1, 9000)), "container-guid": r.choice(APPS)}
    if r.random() < 0.4:
        data["process-guid"] = r.choice(APPS) + "-" + _uuid(r)
    if failed:
        data["error"] = r.choice(ERRORS)
    import json
    d = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    if gen == "epoch":  # lager v1: epoch seconds as a string, numeric level
        s, frac = divmod(ns, 1_000_000_000)
        return b'{"timestamp":"%d.%09d","source":"%s","message":"%s","log_level":%d,"data":%s}' % (
            s, frac, job.encode(), msg.encode(), 2 if failed else r.choice((0, 1, 1, 1)), d)
    if gen == "zap":  # gorouter's zap: float seconds, numeric level, source vcap.gorouter.*
        return b'{"log_level":%d,"timestamp":%.9f,"message":"%s","source":"vcap.gorouter.registry","data":%s}' % (
            2 if failed else 1, ns / 1e9, msg.encode(), d)
    # lager v2 (logging.format.timestamp: rfc3339)
    return b'{"timestamp":"%s","level":"%s","source":"%s","message":"%s","data":%s}' % (
        _iso(ns), b"error" if failed else r.choice((b"debug", b"info", b"info")), job.encode(), msg.encode(), d)


def cloud_controller(r: random.Random, ns: int, i: int, gen: str) -> bytes:
    k = r.randrange(len(CC_MSGS))
    rid = _uuid(r)
    msg = CC_MSGS[k]
    if k == 0:
        msg = msg % (_uuid(r), r.randrange(256), rid)
    elif k == 1:
        msg = msg % (rid, _uuid(r))
    elif k == 3:
        msg = msg % r.randrange(10**6)
    import json
    m = json.dumps(msg, ensure_ascii=False).encode()
    ts = b'"%s"' % _iso(ns, 6) if gen == "rfc3339" else b"%.7f" % (ns / 1e9)
    return (b'{"timestamp":%s,"message":%s,"log_level":"%s","source":"cc.api","data":{"request_guid":"%s::%s"},'
            b'"thread_id":47073419%06d,"fiber_id":47073422%06d,"process_id":%d,"file":"/var/vcap/packages/'
            b'cloud_controller_ng/cloud_controller_ng/middleware/request_logs.rb","lineno":23,"method":"call"}') % (
        ts, m, b"error" if k == 2 else b"info", rid.encode(), _uuid(r).encode(), r.randrange(10**6),
        r.randrange(10**6), 3000 + r.randrange(8))


def uaa(r: random.Random, ns: int, i: int, style: int) -> list[bytes]:
    logger = r.choice(UAA_LOGGERS)
    if style == 0:
        s, frac = divmod(ns, 1_000_000_000)
        when = _sec(s).replace(b"T", b" ") + b".%03d" % (frac // 1_000_000)
    else:
        when = _iso(ns, 3 if style == 1 else 6)
    trace = r.random() < 0.03
    level = b"ERROR" if trace else r.choice((b" INFO", b" INFO", b"DEBUG", b" WARN"))
    if logger == "Audit":
        text = r.choice(AUDIT) % (_uuid(r), r.randrange(256))
    else:
        text = "Processing request for user %s in zone uaa" % _uuid(r)
    head = b"[%s] uaa - %d [http-nio-8080-exec-%d] .... %s --- %s: %s" % (
        when, 4000 + r.randrange(10), r.randrange(1, 20), level, logger.encode(), text.encode())
    if not trace:
        return [head]
    return [head, *TRACE[: r.randrange(4, len(TRACE) + 1)]]


# (relative path, share of lines, generator)
FILES = [
    ("gorouter/access.log", 0.26, lambda r, ns, i: [gorouter_access(r, ns, i)]),
    ("gorouter/gorouter.stdout.log", 0.06, lambda r, ns, i: [lager(r, ns, i, "gorouter", "zap")]),
    ("rep/rep.stdout.log", 0.10, lambda r, ns, i: [lager(r, ns, i, "rep", "epoch")]),
    ("garden/garden.stdout.log", 0.10, lambda r, ns, i: [lager(r, ns, i, "garden", "rfc3339")]),
    ("bbs/bbs.stdout.log", 0.06, lambda r, ns, i: [lager(r, ns, i, "bbs", "rfc3339")]),
    ("route_emitter/route_emitter.stdout.log", 0.05, lambda r, ns, i: [lager(r, ns, i, "route_emitter", "epoch")]),
    ("locket/locket.stdout.log", 0.03, lambda r, ns, i: [lager(r, ns, i, "locket", "rfc3339")]),
    ("cloud_controller_ng/cloud_controller_ng.log", 0.12, lambda r, ns, i: [cloud_controller(r, ns, i, "epoch")]),
    ("cloud_controller_worker/cloud_controller_worker.log", 0.05, lambda r, ns, i: [cloud_controller(r, ns, i, "rfc3339")]),
    ("uaa/uaa.log", 0.13, lambda r, ns, i: uaa(r, ns, i, i % 3)),
    ("uaa/uaa_events.log", 0.04, lambda r, ns, i: uaa(r, ns, i, 1)),
]


MONIT = ["'%s' process is running with pid %d", "'%s' Monit reloaded", "'%s' trying to restart",
         "'system_localhost' mem usage of %d.4%% matches resource limit [mem usage > 90.0%%]",
         "'%s' process is not running", "Awakened by User defined signal 1"]


def monit(r: random.Random, ns: int, i: int) -> bytes:
    import time
    k = r.randrange(len(MONIT))
    msg = MONIT[k]
    job = r.choice(sorted(LAGER_MSGS))
    if k == 0:
        msg = msg % (job, 1000 + r.randrange(30000))
    elif k == 3:
        msg = msg % (90 + r.randrange(10))
    elif "%s" in msg:
        msg = msg % job
    level = b"error    " if k == 4 else b"info     "
    return b"[UTC %s] %s: %s" % (time.strftime("%b %d %H:%M:%S", time.gmtime(ns // 1_000_000_000)).encode(), level,
                                 msg.encode())


def _mix(choices: list[tuple[float, object]]):
    """A generator that picks one of `choices` (weight, generator) per event."""
    weights = [w for w, _ in choices]
    gens = [g for _, g in choices]

    def gen(r: random.Random, ns: int, i: int) -> list[bytes]:
        return r.choices(gens, weights)[0](r, ns, i)

    return gen


# The same shapes, one file per format, in the shares of `FILES` (monit's share taken from lager's).
PER_FORMAT = [
    ("gorouter/access.log", 0.26, FILES[0][2]),
    ("gorouter/gorouter.stdout.log", 0.36, _mix([(share, gen) for _, share, gen in FILES[1:7]])),
    ("cloud_controller_ng/cloud_controller_ng.log", 0.17, _mix([(share, gen) for _, share, gen in FILES[7:9]])),
    ("uaa/uaa.log", 0.17, _mix([(share, gen) for _, share, gen in FILES[9:11]])),
    ("monit/monit.log", 0.04, lambda r, ns, i: [monit(r, ns, i)]),
]
LAYOUTS = {"jobs": FILES, "per_format": PER_FORMAT}


def write_file(path: Path, lines: int, gen, seed: int) -> int:
    r = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = T0 * 1_000_000_000 + seed * 1_000_003
    n = 0
    buf: list[bytes] = []
    with open(path, "wb", buffering=1 << 20) as f:
        while n < lines:
            ns += r.randrange(1, 4_000_000)
            out = gen(r, ns, n)
            buf += out
            n += len(out)
            if len(buf) >= 4096:
                buf.append(b"")
                f.write(b"\n".join(buf))
                buf = []
        if buf:
            buf.append(b"")
            f.write(b"\n".join(buf))
    return n


def build(root: Path, total_lines: int = 2_000_000, seed: int = 6, layout: str = "jobs") -> dict:
    """Write the corpus under root (a log root with per-job dirs); returns {relpath: lines}."""
    counts = {}
    for k, (rel, share, gen) in enumerate(LAYOUTS[layout]):
        counts[rel] = write_file(root / rel, max(1, round(total_lines * share)), gen, seed * 100 + k)
    return counts


def ensure(where: Path, total_lines: int = 2_000_000, layout: str = "jobs") -> tuple[Path, dict]:
    """The cached corpus under `where` (built once per VERSION, layout and size)."""
    import json
    name = f"corpus-v{VERSION}-{total_lines}" if layout == "jobs" else f"corpus-v{VERSION}-{layout}-{total_lines}"
    root = where / name / "sys" / "log"
    manifest = root.parent / "manifest.json"
    if manifest.exists():
        return root, json.loads(manifest.read_text())
    tmp = root.parent.with_name(root.parent.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    counts = build(tmp / "log", total_lines, layout=layout)
    (tmp / "manifest.json").write_text(json.dumps(counts))
    os.rename(tmp, root.parent)
    return root, counts


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/log-shipper-bench")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
    root, counts = ensure(out, n, sys.argv[3] if len(sys.argv) > 3 else "jobs")
    print(root, sum(counts.values()), counts)
