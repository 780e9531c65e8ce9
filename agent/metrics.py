"""The agent's counters, kept as Prometheus metrics in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LINES_READ = Counter("log_shipper_lines_read", "Events read from log files", ["job"], registry=REGISTRY)
BYTES_READ = Counter("log_shipper_bytes_read", "File bytes (newlines included) read from log files", ["job"], registry=REGISTRY)
LINES_ACKED = Counter("log_shipper_lines_acked", "Events acknowledged by Elasticsearch", ["job"], registry=REGISTRY)
BYTES_ACKED = Counter("log_shipper_bytes_acked", "File bytes (newlines included) acknowledged by Elasticsearch", ["job"], registry=REGISTRY)
DEAD_LETTERED = Counter("log_shipper_dead_lettered", "Documents Elasticsearch refused for good", ["job"], registry=REGISTRY)
DUPLICATES = Counter("log_shipper_duplicates", "Replayed documents Elasticsearch already had (409)", registry=REGISTRY)
LOST_BYTES = Counter("log_shipper_lost_bytes", "Bytes rotated away before they were read", ["job"], registry=REGISTRY)
LOST_UNKNOWN = Counter("log_shipper_lost_generations_unknown_size",
                       "Generations or spool segments lost whose size cannot be known", ["job"], registry=REGISTRY)
RETRIES = Counter("log_shipper_retries", "Bulk retries by cause", ["cause"], registry=REGISTRY)
BULK_SECONDS = Histogram(
    "log_shipper_bulk_request_seconds",
    "Latency of _bulk requests",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
INFLIGHT_BYTES = Gauge("log_shipper_inflight_bytes", "Bytes read but not yet acknowledged", registry=REGISTRY)
INFLIGHT_LIMIT = Gauge("log_shipper_inflight_limit_bytes", "Budget of bytes in flight", registry=REGISTRY)
SPOOL_BYTES = Gauge("log_shipper_spool_bytes", "Bytes of spool segments on disk", registry=REGISTRY)
SPOOL_SEGMENTS = Gauge("log_shipper_spool_segments", "Spool segments not yet acknowledged", registry=REGISTRY)
SPOOL_OLDEST_AGE = Gauge("log_shipper_spool_oldest_seconds", "Age of the oldest spool segment", registry=REGISTRY)
SPOOL_LIMIT = Gauge("log_shipper_spool_limit_bytes", "spool.max_bytes", registry=REGISTRY)
OPEN_FILES = Gauge("log_shipper_open_files", "Log files held open", registry=REGISTRY)
REGISTRY_WRITE_SECONDS = Histogram(
    "log_shipper_registry_write_seconds",
    "Time to write the registry durably",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
    registry=REGISTRY,
)
