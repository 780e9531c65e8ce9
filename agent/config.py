"""Load the agent's JSON config into plain dataclasses, naming the field on error."""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agent.formats import FORMATS
from agent.pattern import PatternError, compile_pattern


class ConfigError(ValueError):
    """A config problem, always phrased as `<field path>: <what is wrong>`."""


@dataclass
class ElasticsearchConfig:
    hosts: list[str] = field(default_factory=lambda: ["http://127.0.0.1:9200"])
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify_certs: bool = True
    compression: bool = False
    request_timeout_s: float = 30.0
    # Credentials over http:// travel in clear text; only with this set (e.g. a loopback proxy that does TLS).
    allow_insecure_http: bool = False


@dataclass
class TargetConfig:
    # "index": a plain index (every cluster); "data_stream": needs the data-streams module.
    kind: str = "index"
    name: str = "logs-bosh-default"


@dataclass
class InputsConfig:
    root: str = "/var/vcap/sys/log"
    include: list[str] = field(default_factory=lambda: ["**/*.log"])
    # The agent's own logs would otherwise feed back into themselves.
    exclude: list[str] = field(default_factory=lambda: ["log-shipper/**"])
    # Absolute globs outside the root, e.g. /var/vcap/monit/monit.log.
    extra_paths: list[str] = field(default_factory=list)


@dataclass
class BoshConfig:
    director: str = ""
    environment: str = ""
    deployment: str = ""
    instance_group: str = ""
    index: int | None = None
    id: str = ""
    az: str = ""
    ip: str = ""


@dataclass
class BatchConfig:
    max_docs: int = 8000
    max_bytes: int = 2 * 1024 * 1024
    # Short, so a line is searchable within about a second plus the index refresh interval.
    flush_interval_s: float = 0.75
    concurrency: int = 2
    # Bytes read but not yet acknowledged; readers pause when it is reached.
    max_inflight_bytes: int = 8 * 1024 * 1024


@dataclass
class ReaderConfig:
    chunk_bytes: int = 256 * 1024
    max_line_bytes: int = 32 * 1024
    # A last line without a newline is shipped once the file has been quiet this long.
    idle_flush_s: float = 5.0
    rescan_interval_s: float = 10.0
    # How often open files' sizes are looked at (writes raise no file events): a quarter second
    # keeps a line's way to Elasticsearch well inside a second and lets one read take many lines.
    poll_interval_s: float = 0.25
    max_open_files: int = 512
    # Rotated-away or deleted files are closed this long after their last byte was read.
    close_removed_after_s: float = 5.0
    # Disk that deleted rotated copies still open may keep, on the jobs' disk: while reading is
    # paused (Elasticsearch away) one more is held per rotation. Past it the oldest are closed
    # and what was not read of them is counted lost.
    max_deleted_held_bytes: int = 256 * 1024 * 1024


@dataclass
class RegistryConfig:
    flush_interval_s: float = 1.0
    forget_after_s: float = 7 * 24 * 3600.0


@dataclass
class DeadLetterConfig:
    # "index": documents refused for good go to `index` with the error; "file": to a JSONL file in the state dir.
    kind: str = "index"
    index: str = "logs-bosh-deadletter"
    # The local file (kind "file", or when the index refuses) is bounded: .1 keeps the one before.
    max_file_bytes: int = 32 * 1024 * 1024


@dataclass
class HealthConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 17878
    allow_non_loopback: bool = False
    max_lag_age_s: float = 300.0
    lost_window_s: float = 3600.0
    refused_for_s: float = 60.0


@dataclass
class FleetConfig:
    # A status document about this agent every interval_s into `index`, for `log-shipper fleet`.
    enabled: bool = True
    interval_s: float = 60.0
    index: str = "logs-bosh-agents"


@dataclass
class SpoolConfig:
    # Compressed segments under state_dir/spool while Elasticsearch is away. 256 MiB is a few
    # percent of a small VM's ephemeral disk (/var/vcap/data, often 10-20 GiB, shared with the
    # jobs' data) and, at 5-10x zlib on log lines, holds 1-2.5 GiB of logs: about an hour of
    # a busy router. 0 turns the spool off (the files on disk are then the only buffer).
    max_bytes: int = 256 * 1024 * 1024


@dataclass
class MultilineConfig:
    # Exactly one of the two: a line matching `start` begins an event, or a line matching
    # `continuation` belongs to the event before it.
    start: str | None = None
    continuation: str | None = None
    max_lines: int = 500
    max_bytes: int = 64 * 1024
    timeout_s: float = 2.0


@dataclass
class FormatRule:
    glob: str = "**"
    format: str = "raw"
    multiline: MultilineConfig | None = None


@dataclass
class Config:
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    bosh: BoshConfig = field(default_factory=BoshConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    dead_letter: DeadLetterConfig = field(default_factory=DeadLetterConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    # First matching rule wins; files matching none use the built-in defaults.
    formats: list[FormatRule] = field(default_factory=list)
    state_dir: str = "/var/vcap/data/log-shipper"
    # Used by `log-shipper volume` to estimate cost; 0 means no estimate.
    price_per_gib: float = 0.0


def load(path: str | Path) -> Config:
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return from_dict(raw)


def from_dict(raw: Any) -> Config:
    cfg = _build(Config, raw, "")
    _validate(cfg)
    return cfg


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: must be an object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{_join(where, unknown[0])}: unknown field (known: {', '.join(sorted(names))})")
    values = {k: _coerce(hints[k], v, _join(where, k)) for k, v in raw.items()}
    return cls(**values)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be a whole number, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, not {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover - schema bug


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _validate(cfg: Config) -> None:
    es = cfg.elasticsearch
    if not es.hosts:
        raise ConfigError("elasticsearch.hosts: must name at least one URL")
    for i, h in enumerate(es.hosts):
        if not h.startswith(("http://", "https://")):
            raise ConfigError(f"elasticsearch.hosts[{i}]: must start with http:// or https://")
    if (es.username or es.api_key) and not es.allow_insecure_http:
        for i, h in enumerate(es.hosts):
            if h.startswith("http://"):
                raise ConfigError(f"elasticsearch.hosts[{i}]: credentials would cross the network in clear text over "
                                  "http://; use https:// or set elasticsearch.allow_insecure_http")
    if es.api_key and es.username:
        raise ConfigError("elasticsearch.api_key: set either api_key or username/password, not both")
    if bool(es.username) != bool(es.password):
        raise ConfigError("elasticsearch.password: username and password go together")
    if bool(es.client_cert) != bool(es.client_key):
        raise ConfigError("elasticsearch.client_key: client_cert and client_key go together")
    for name in ("ca_file", "client_cert", "client_key"):
        p = getattr(es, name)
        if p and not Path(p).is_file():
            raise ConfigError(f"elasticsearch.{name}: no such file: {p}")
    if cfg.target.kind not in ("index", "data_stream"):
        raise ConfigError(f"target.kind: must be 'index' or 'data_stream', not {cfg.target.kind!r}")
    if not cfg.target.name or cfg.target.name != cfg.target.name.lower() or " " in cfg.target.name:
        raise ConfigError(f"target.name: must be a lowercase index name without spaces, not {cfg.target.name!r}")
    if not cfg.inputs.root.startswith("/"):
        raise ConfigError("inputs.root: must be an absolute path")
    if not cfg.inputs.include:
        raise ConfigError("inputs.include: must name at least one glob")
    for i, p in enumerate(cfg.inputs.extra_paths):
        if not p.startswith("/"):
            raise ConfigError(f"inputs.extra_paths[{i}]: must be an absolute path or glob")
    for name in ("max_docs", "max_bytes", "concurrency", "max_inflight_bytes"):
        if getattr(cfg.batch, name) < 1:
            raise ConfigError(f"batch.{name}: must be at least 1")
    if cfg.batch.max_inflight_bytes < cfg.batch.max_bytes:
        raise ConfigError("batch.max_inflight_bytes: must be at least batch.max_bytes")
    if cfg.spool.max_bytes < 0 or 0 < cfg.spool.max_bytes < cfg.batch.max_bytes:
        raise ConfigError(f"spool.max_bytes: must be 0 (off) or at least batch.max_bytes ({cfg.batch.max_bytes}), "
                          f"not {cfg.spool.max_bytes}")
    if cfg.reader.max_line_bytes < 16:
        raise ConfigError("reader.max_line_bytes: must be at least 16")
    if cfg.reader.close_removed_after_s < cfg.reader.idle_flush_s:
        raise ConfigError("reader.close_removed_after_s: must be at least reader.idle_flush_s, so a removed "
                          "file's last partial line is shipped by the idle flush rather than cut at close")
    if not 0 < cfg.reader.poll_interval_s <= 10:
        raise ConfigError("reader.poll_interval_s: must be above 0 and at most 10")
    if cfg.reader.max_deleted_held_bytes < 0:
        raise ConfigError("reader.max_deleted_held_bytes: must be 0 (let deleted copies go at once) or more")
    if cfg.reader.chunk_bytes < 4096:
        raise ConfigError("reader.chunk_bytes: must be at least 4096")
    if cfg.dead_letter.max_file_bytes < 1024:
        raise ConfigError("dead_letter.max_file_bytes: must be at least 1024")
    if cfg.dead_letter.kind not in ("index", "file"):
        raise ConfigError(f"dead_letter.kind: must be 'index' or 'file', not {cfg.dead_letter.kind!r}")
    if not 0 < cfg.health.port < 65536:
        raise ConfigError("health.port: must be between 1 and 65535")
    if cfg.health.enabled and not cfg.health.allow_non_loopback and not _is_loopback(cfg.health.host):
        raise ConfigError(
            f"health.host: {cfg.health.host} is not a loopback address; "
            "set health.allow_non_loopback to expose offsets beyond this VM"
        )
    if cfg.health.lost_window_s > cfg.registry.forget_after_s:
        raise ConfigError("health.lost_window_s: must be at most registry.forget_after_s, which is how long "
                          "lost bytes are remembered")
    if cfg.fleet.interval_s < 1:
        raise ConfigError("fleet.interval_s: must be at least 1")
    if not cfg.fleet.index or cfg.fleet.index != cfg.fleet.index.lower() or " " in cfg.fleet.index:
        raise ConfigError(f"fleet.index: must be a lowercase index name without spaces, not {cfg.fleet.index!r}")
    if cfg.bosh.index is not None and cfg.bosh.index < 0:
        raise ConfigError("bosh.index: must not be negative")
    for i, rule in enumerate(cfg.formats):
        _validate_rule(rule, f"formats[{i}]")
    if not cfg.state_dir.startswith("/"):
        raise ConfigError("state_dir: must be an absolute path")
    if cfg.price_per_gib < 0:
        raise ConfigError("price_per_gib: must not be negative")


def _validate_rule(rule: FormatRule, where: str) -> None:
    if rule.format not in FORMATS:
        raise ConfigError(f"{where}.format: unknown format {rule.format!r} (known: {', '.join(sorted(FORMATS))})")
    ml = rule.multiline
    if ml is None:
        return
    if (ml.start is None) == (ml.continuation is None):
        raise ConfigError(f"{where}.multiline: set exactly one of start or continuation")
    for name in ("start", "continuation"):
        pattern = getattr(ml, name)
        if pattern is not None:
            try:
                compile_pattern(pattern)
            except PatternError as e:
                raise ConfigError(f"{where}.multiline.{name}: not a valid regular expression: {e}") from None
    if ml.max_lines < 1 or ml.max_bytes < 16:
        raise ConfigError(f"{where}.multiline: max_lines must be at least 1 and max_bytes at least 16")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
