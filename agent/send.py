"""Send batches to `_bulk`: retries with backoff, per-item outcomes, dead letters.

A batch is done only when every document in it is indexed, already there (409 on
create), or dead-lettered. Nothing is ever given up on: retryable failures wait with
exponential backoff and jitter, and the log files on disk hold what cannot be sent yet.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, SerializationError, TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer
from tenacity import Retrying, retry_if_exception_type, stop_never, wait_exponential_jitter

from agent import bulk, log, metrics, template
from agent.batch import Batch
from agent.config import Config, DeadLetterConfig, ElasticsearchConfig
from agent.transport import AnswerTooLarge, BoundedNode, DeadlinePassed

RETRYABLE_STATUS = {429, 502, 503, 504}
_CREDENTIALS = re.compile(r"(//)[^/\s]*@")  # userinfo up to its last @: passwords may hold one


def redact(text: str) -> str:
    return _CREDENTIALS.sub(r"\1***@", text)


def describe(e: BaseException) -> str:
    """What went wrong, for logs: transport errors name their root cause (str() of a TlsError
    is only "TLS error"), credentials in URLs are masked, and the text is kept short."""
    text = str(e)
    if isinstance(e, TransportError):
        root = e.errors[0] if e.errors else e.__cause__
        text = f"{type(e).__name__}: {root if root is not None else e.message}"
    return redact(text)[:300]


# Only what `_items` reads: per item its status (and the error, when there is one). The full
# answer repeats index, id, version, shards and seq_no for every document (~180 bytes each),
# which the sender threads would parse, under the GIL, and hold, for every batch.
# The longest wait between attempts: after an outage the agent resumes within this of the node's
# return (at 30 s a 40 s outage was followed by ~30 s of nothing). One request per sender this
# often is nothing to a cluster, even from every VM of a platform.
MAX_BACKOFF_S = 10.0

BULK_PARAMS = {"filter_path": "errors,items.*.status,items.*.error"}


class _BulkBytes(NdjsonSerializer):
    """Bulk bodies are bytes already: the stock NDJSON serializer would copy each one twice."""

    def dumps(self, data):
        return data if isinstance(data, (bytes, bytearray)) else super().dumps(data)


class _Json(JsonSerializer):
    """Answers that are not JSON are named by their size and the parser's complaint: the stock
    serializer puts the whole answer into the error message (several times its size in memory)."""

    def loads(self, data: bytes):
        if data == b"":
            return None
        if (created := bulk.all_created(data)) is not None:
            return created
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise SerializationError(f"answer is not JSON ({len(data)} bytes): {e}") from None


def client(cfg: ElasticsearchConfig) -> Elasticsearch:
    kw: dict = dict(
        hosts=cfg.hosts,
        node_class=BoundedNode,  # answers size-capped, a total deadline per request
        serializers={"application/x-ndjson": _BulkBytes(), "application/json": _Json(),
                     "application/vnd.elasticsearch+json": _Json()},
        request_timeout=cfg.request_timeout_s,
        http_compress=cfg.compression,
        # The client fails over to the next host on connection errors; backoff is ours.
        max_retries=len(cfg.hosts) - 1,
        retry_on_timeout=len(cfg.hosts) > 1,
        retry_on_status=(),
    )
    if cfg.username:
        kw["basic_auth"] = (cfg.username, cfg.password)
    if cfg.api_key:
        kw["api_key"] = cfg.api_key
    if any(h.startswith("https://") for h in cfg.hosts):
        kw["verify_certs"] = cfg.verify_certs
        if cfg.ca_file:
            kw["ca_certs"] = cfg.ca_file
        if cfg.client_cert:
            kw["client_cert"] = cfg.client_cert
            kw["client_key"] = cfg.client_key
    return Elasticsearch(**kw)


class Retry(Exception):
    """Send again after a backoff; `cause` names why for logs and metrics."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


class PushBack:
    """How many bulk requests may be in flight: halved when Elasticsearch pushes back
    (429), grown by one after a run of successes, so recovering agents do not pile on."""

    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = ceiling
        self.active = 0
        self.successes = 0
        self._cond = threading.Condition()

    def __enter__(self) -> PushBack:
        with self._cond:
            self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def pushed_back(self) -> None:
        with self._cond:
            self.limit = max(1, self.limit // 2)
            self.successes = 0

    def succeeded(self) -> None:
        with self._cond:
            self.successes += 1
            if self.successes >= 10 and self.limit < self.ceiling:
                self.limit += 1
                self.successes = 0
                self._cond.notify_all()


@dataclass
class Health:
    """What the sender knows about Elasticsearch, for /healthz."""

    refused_since: float | None = None  # auth refused or indices read-only
    refused_reason: str = ""
    last_success: float | None = None
    last_failure: float | None = None  # a request (or the template) failed and is being retried
    last_error: str = ""
    tls_failing: bool = False

    def failing(self) -> bool:
        """Failed since the last success: down, refusing, pushing back; not merely slow."""
        return self.last_failure is not None and (self.last_success is None or self.last_failure > self.last_success)


class DeadLetters:
    """Documents Elasticsearch refuses for good: kept with their error, never block the file."""

    def __init__(self, es: Elasticsearch, cfg: DeadLetterConfig, state_dir: str):
        self.es = es
        self.cfg = cfg
        self.file = Path(state_dir) / "dead-letter.jsonl"
        self._lock = threading.Lock()

    def put(self, items: list[tuple[bytes, dict]]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        docs = [
            {"@timestamp": now, "error.type": err.get("type", ""), "error.message": redact(str(err.get("reason", "")))[:2000],
             "event.original": source.decode(errors="replace")}
            for source, err in items
        ]
        if self.cfg.kind == "index" and self._to_index(docs):
            return
        data = b"".join(orjson.dumps(d) + b"\n" for d in docs)
        with self._lock:
            self._make_room(len(data))
            # 0600: the documents hold text from root-only logs.
            with open(os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as f:
                f.write(data)

    def _make_room(self, n: int) -> None:
        """Bounded: past max_file_bytes the file becomes dead-letter.jsonl.1 (the one before it
        goes), so at most twice the bound stays on disk."""
        try:
            size = os.stat(self.file).st_size
        except FileNotFoundError:
            return
        if size + n > self.cfg.max_file_bytes:
            os.replace(self.file, self.file.with_name(self.file.name + ".1"))
            log.warn("dead_letter_rotated", "dead-letter file reached its bound; kept the last one as .1, "
                     "dropped the one before", file=str(self.file), max_file_bytes=self.cfg.max_file_bytes,
                     hint="fix the mapping conflicts listed in it, or set dead_letter.kind index")

    def _to_index(self, docs: list[dict]) -> bool:
        body = b"".join(b'{"index":{"_index":"%s"}}\n%s\n' % (self.cfg.index.encode(), orjson.dumps(d)) for d in docs)
        try:
            resp = self.es.perform_request(
                "POST", "/_bulk", body=body, headers={"content-type": "application/json", "accept": "application/json"}
            )
            return isinstance(resp.body, dict) and resp.body.get("errors") is False  # else: keep them in the file
        except (ApiError, TransportError) as e:
            log.warn("dead_letter_index_failed", "dead-letter index refused; writing to the local file instead",
                     index=self.cfg.index, file=str(self.file), error=redact(str(e))[:300])
            return False


class Sender:
    """Worker threads that take batches and return them done through `on_done`."""

    def __init__(self, cfg: Config, es: Elasticsearch, on_done: Callable[[Batch], None]):
        self.cfg = cfg
        self.es = es
        self.on_done = on_done
        self.pushback = PushBack(cfg.batch.concurrency)
        self.health = Health()
        self.dead = DeadLetters(es, cfg.dead_letter, cfg.state_dir)
        self.stopping = threading.Event()
        self._queue: list[Batch] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"sender-{i}", daemon=True) for i in range(cfg.batch.concurrency)
        ] + [threading.Thread(target=self._work_status, name="sender-status", daemon=True)]
        self._status: Batch | None = None
        self.in_flight = 0
        self.waiting_since = 0.0  # when in_flight last rose from zero
        self._setup_done = False
        self._setup_lock = threading.Lock()
        self._bad_answer_logged = ""  # the last kind of bad answer logged, until the next good answer

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, batch: Batch) -> None:
        if batch.status:
            self._submit_status(batch)
            return
        with self._cond:
            self._queue.append(batch)
            if not self.in_flight:
                self.waiting_since = time.time()
            self.in_flight += 1
            self._cond.notify_all()  # notify() could wake only the status thread, which would not take it

    def _submit_status(self, batch: Batch) -> None:
        """The agent's status has a thread of its own, so logs that Elasticsearch refuses or
        retries never hold it back; a newer status replaces one not yet delivered."""
        with self._cond:
            old, self._status = self._status, batch
            self._cond.notify_all()
        if old is not None:
            self.on_done(old)

    def stop(self) -> None:
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self.stopping.is_set())
                if not self._queue:
                    return
                batch = self._queue.pop(0)
            try:
                delivered = self._deliver(batch)
            except Exception as e:  # a bug: exit and let monit restart us; offsets on disk are safe
                log.error("sender_crashed", "internal error while sending; exiting so the job restarts",
                          error=f"{type(e).__name__}: {redact(str(e))[:300]}")
                os._exit(70)
            if delivered:
                with self._cond:
                    self.in_flight -= 1
                self.on_done(batch)

    def _work_status(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._status is not None or self.stopping.is_set())
                batch, self._status = self._status, None
            if batch is None:
                return
            try:
                self._deliver(batch, superseded=lambda: self._status is not None)
            except Exception as e:  # a bug: exit and let monit restart us; offsets on disk are safe
                log.error("sender_crashed", "internal error while sending; exiting so the job restarts",
                          error=f"{type(e).__name__}: {redact(str(e))[:300]}")
                os._exit(70)
            self.on_done(batch)

    def _deliver(self, batch: Batch, superseded: Callable[[], bool] = lambda: False) -> bool:
        """Send until every document is settled; False only when stopping (or superseded) first."""
        jobs = _jobs_of(batch)
        # The batch's own buffer goes out as it is (no copy: the loop has a new batch already);
        # the batch lets go of it, so it is freed once sent. The budget still counts it.
        first = batch.body
        pending: list[bytes | bytearray] = [first]
        batch.body = bytearray()
        while pending:
            body = pending.pop()
            for attempt in Retrying(
                retry=retry_if_exception_type(Retry),
                wait=wait_exponential_jitter(initial=0.25, max=MAX_BACKOFF_S, jitter=1),
                stop=stop_never,
                before_sleep=self._before_sleep,
                reraise=True,
            ):
                with attempt:
                    if (self.stopping.is_set() or superseded()) and attempt.retry_state.attempt_number > 1:
                        return False
                    self._ensure_setup()
                    docs = batch.docs if body is first else None  # retries and halves are counted
                    retry_body, halves = self._send_once(body, jobs, batch.status, docs)
                    pending.extend(halves)
                    if retry_body:
                        body = retry_body
                        raise Retry("item_rejected", "some documents were refused for now (429/5xx)")
        return True

    def _ensure_setup(self) -> None:
        """The index template goes in before the first document, so mappings are ours."""
        if self._setup_done:
            return
        with self._setup_lock:
            if self._setup_done:
                return
            try:
                what = template.install(self.es, self.cfg.target.kind, self.cfg.target.name)
                if self.cfg.fleet.enabled:
                    from agent import fleet

                    fleet.install_template(self.es, self.cfg.fleet.index)
            except ApiError as e:
                detail = f"installing the index template failed: {describe(e)}"
                if e.meta.status == 403:
                    what = self._template_not_ours(detail)
                else:
                    if e.meta.status == 401:
                        self._refused(e.meta.status, detail)
                    raise Retry("setup", detail) from None
            except TlsError as e:
                self._tls_failed(e)
                raise Retry("tls", f"installing the index template failed: {describe(e)}") from None
            except TransportError as e:
                raise Retry("setup", f"installing the index template failed: {describe(e)}") from None
            log.info("template", f"index template {what}", target=self.cfg.target.name)
            self._setup_done = True

    def _template_not_ours(self, detail: str) -> str:
        """A least-privilege key (create_doc only) may neither install nor read templates: they
        come from `log-shipper setup` with an admin key. Ship; if setup never ran, the first
        documents are refused for the missing index, and that refusal names the step."""
        name = template.template_name(self.cfg.target.name)
        try:
            current = template.installed_version(self.es, name)
        except ApiError:
            log.info("template_not_managed", "this key may not manage index templates (least privilege); "
                     "shipping with the template that `log-shipper setup` installed", template=name,
                     hint="if setup has not run: log-shipper setup --config <config with an admin key>")
            return "managed by log-shipper setup (this key may not read it)"
        if current is None:
            detail = (f"no index template {name} and this key may not install it: run `log-shipper setup` "
                      f"with a key that has the manage_index_templates cluster privilege ({detail})")
            self._refused(403, detail)
            raise Retry("setup", detail)
        return f"v{current} present, installed by log-shipper setup (this key may not manage templates)"

    def _before_sleep(self, state) -> None:
        self.health.last_failure = time.time()
        exc = state.outcome.exception()
        cause = getattr(exc, "cause", "error")
        metrics.RETRIES.labels(cause).inc()
        if state.attempt_number in (1, 5) or state.attempt_number % 20 == 0:
            log.warn("bulk_retry", f"Elasticsearch not taking documents ({cause}); retrying with backoff, nothing dropped",
                     attempt=state.attempt_number, wait_s=round(state.upcoming_sleep, 2), detail=redact(str(exc))[:300])

    def _send_once(self, body: bytes, jobs: dict[bytes, str], status: bool = False,
                   docs: int | None = None) -> tuple[bytes, list[bytes]]:
        """One `_bulk` request. Returns (documents to retry, halves to send separately). A status
        document taken says nothing of the log indices: it does not end a refusal."""
        t0 = time.monotonic()
        try:
            with self.pushback:
                resp = self.es.perform_request(
                    "POST", "/_bulk", body=body, params=BULK_PARAMS,
                    headers={"content-type": "application/x-ndjson", "accept": "application/json"},
                )
            out = bulk.classify(resp.body, body, docs)
        except UnsupportedProductError as e:  # a 2xx without Elasticsearch's product header
            self._unusable(f"{describe(e)} (http {e.meta.status}, content-type {e.meta.mimetype})")
        except ApiError as e:
            return self._whole_request_failed(e.meta.status, e, body)
        except TlsError as e:
            self._tls_failed(e)
            raise Retry("tls", describe(e)) from None
        except (TransportConnectionError, ConnectionTimeout) as e:
            return self._no_answer(e, body)
        except (SerializationError, bulk.OddAnswer) as e:
            self._unusable(describe(e))
        finally:
            metrics.BULK_SECONDS.observe(time.monotonic() - t0)
        self.health.tls_failing = False
        self.health.last_success = time.time()
        self._bad_answer_logged = ""
        return self._apply(out, jobs, status), []

    def _unusable(self, detail: str) -> NoReturn:
        """An answer that does not say what became of each document: none is taken as indexed,
        the whole request goes again (documents that did get in come back as 409 duplicates)."""
        self.health.last_error = f"unusable answer to _bulk: {detail}"
        self._log_bad_answer("bulk_answer_unusable", "Elasticsearch's answer to a bulk request does not say what "
                             "became of each document; nothing counted as indexed, sending the batch again",
                             detail=detail, hint="check what answers at elasticsearch.hosts: a proxy, load balancer "
                             "or other service in front of Elasticsearch, or a node that is not Elasticsearch")
        raise Retry("unusable_answer", detail) from None

    def _log_bad_answer(self, event: str, msg: str, level: Callable = log.error, **fields) -> None:
        """Once per kind and episode: bulk_retry keeps counting the attempts."""
        if self._bad_answer_logged != event:
            self._bad_answer_logged = event
            level(event, msg, hosts=[redact(h) for h in self.cfg.elasticsearch.hosts], **fields)

    def _no_answer(self, e: TransportError, body: bytes) -> tuple[bytes, list[bytes]]:
        """No (complete) answer: the connection failed, the deadline passed, or the answer was too large."""
        detail = describe(e)
        self.health.last_error = detail
        root = e.__cause__  # what the node raised from (the transport rewrites `errors` on failover)
        if isinstance(root, AnswerTooLarge):
            halves = _halves(body)
            self._log_bad_answer("bulk_answer_too_large", "Elasticsearch's answer to a bulk request was too large "
                                 "to read; nothing counted as indexed, sending the batch again in halves",
                                 docs=bulk.docs_in(body), detail=detail,
                                 hint="an answer this large is not Elasticsearch's filtered bulk answer: check what "
                                      "answers at elasticsearch.hosts, or lower batch.max_docs")
            if halves:
                return b"", halves
            raise Retry("answer_too_large", detail) from None
        if isinstance(root, DeadlinePassed):
            self._log_bad_answer("bulk_deadline_passed", "no complete answer to a bulk request within its deadline; "
                                 "nothing counted as indexed, sending the batch again", level=log.warn, detail=detail,
                                 hint="Elasticsearch, or something in front of it, answers too slowly: check its load "
                                      "and the network; raise elasticsearch.request_timeout_s only if big batches "
                                      "legitimately take longer")
            raise Retry("deadline", detail) from None
        raise Retry("connection", detail) from None

    def _refused(self, status: int, detail: str) -> None:
        """Auth refused, or a write block (403 cluster_block_exception, e.g. disk full): temporary
        until an operator acts, so wait and retry; never dead-letter. Logged once per episode."""
        missing = "auto_create" in detail
        hint = ("the index does not exist and this key may not create it: run `log-shipper setup` with an "
                "admin key, which creates the target, dead-letter and fleet indices" if missing else
                "check credentials, role privileges (create_doc on the target indices) or a read-only index block")
        if self.health.refused_since is None:
            self.health.refused_since = time.time()
            log.error("es_refused", "Elasticsearch refuses our writes: check credentials, role privileges, "
                      "or a read-only index block (disk full); retrying, nothing dropped",
                      status=status, detail=detail, hint=hint)
        self.health.refused_reason = f"http {status}: " + (hint if missing else detail[:120])

    def _tls_failed(self, e: TransportError) -> None:
        detail = describe(e)
        self.health.last_error = detail
        if not self.health.tls_failing:
            self.health.tls_failing = True
            log.error("es_tls_failed", "TLS with Elasticsearch failed: check elasticsearch.ca_file (the CA that signed "
                      "the server certificate), verify_certs, client_cert/client_key and the host name; "
                      "retrying, nothing dropped", hosts=[redact(h) for h in self.cfg.elasticsearch.hosts],
                      detail=detail)

    def _whole_request_failed(self, status: int, e: ApiError, body: bytes) -> tuple[bytes, list[bytes]]:
        detail = redact(str(e))[:300]
        self.health.last_error = detail
        if status == 413:
            halves = _halves(body)
            if halves:
                log.warn("bulk_too_large", "Elasticsearch refused the batch as too large; splitting it",
                         docs=bulk.docs_in(body), hint="lower batch.max_bytes below http.max_content_length")
                return b"", halves
        if status in RETRYABLE_STATUS:
            if status == 429:
                self.pushback.pushed_back()
            raise Retry(f"http_{status}", detail)
        if status in (401, 403):
            self._refused(status, detail)
            raise Retry(f"http_{status}", detail)
        raise Retry(f"http_{status}", detail)

    def _apply(self, out: bulk.Outcome, jobs: dict[bytes, str], status: bool = False) -> bytes:
        """Health, metrics, push-back and dead letters for one answer; returns what to send again.
        A status document taken says nothing of the log indices: it does not end a refusal."""
        if out.duplicates:
            metrics.DUPLICATES.inc(out.duplicates)
        if out.refused:
            self._refused(out.refused[0], redact(str(out.refused[1]))[:300])
        elif not out.retry and not status:
            self.health.refused_since = None
        if out.dead:
            for d in out.dead:
                metrics.DEAD_LETTERED.labels(jobs.get(_fid_of(d.action), "")).inc()
            log.warn("dead_lettered", "Elasticsearch refused documents for good; kept in the dead-letter target",
                     count=len(out.dead), target=self.cfg.dead_letter.kind,
                     first_error=redact(str(out.dead[0].error))[:300])
            self.dead.put([(d.source, d.error) for d in out.dead])
        if out.pushed_back:
            self.pushback.pushed_back()
        else:
            self.pushback.succeeded()
        return out.retry_body


def _halves(body: bytes | bytearray) -> list[bytes]:
    """A bulk body cut in two at a document boundary; none for a single document. Found with
    find(), not split(): a split would hold every line of the batch as an object of its own."""
    docs = bulk.docs_in(body)
    if docs < 2:
        return []
    cut = -1
    for _ in range(docs // 2 * 2):
        cut = body.find(b"\n", cut + 1)
    return [bytes(body[: cut + 1]), bytes(body[cut + 1 :])]


def _fid_of(action: bytes) -> bytes:
    start = action.find(b'"_id":"') + 7
    return action[start : action.find(b"-", start)]


def _jobs_of(batch: Batch) -> dict[bytes, str]:
    return {s.fid.encode(): s.job for s in batch.segments}
