"""Command line: thin click commands over the agent's modules."""

from __future__ import annotations

import os
import sys
import threading

import click
import orjson

from agent import __version__
from agent.config import Config, ConfigError, load

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    envvar="LOG_SHIPPER_CONFIG",
    default="/var/vcap/jobs/log-shipper/config/config.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The agent's JSON config file.",
)


def _load(config_path: str) -> Config:
    try:
        return load(config_path)
    except ConfigError as e:
        raise click.ClickException(f"config error: {e}") from None


@click.group()
@click.version_option(__version__, prog_name="log-shipper")
def main() -> None:
    """Ship /var/vcap/sys/log into Elasticsearch: no loss, no duplicates, flat memory."""


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: str) -> None:
    """Validate the config file and exit non-zero, naming the field, if it is wrong."""
    cfg = _load(config_path)
    click.echo(f"config ok: {len(cfg.elasticsearch.hosts)} Elasticsearch host(s), target {cfg.target.kind} {cfg.target.name}")


@main.command()
@CONFIG_OPTION
def run(config_path: str) -> None:
    """Run the agent until SIGTERM or SIGINT, then flush and save offsets."""
    import signal

    # Handlers before anything slow: a stop that comes while the agent loads and makes its first
    # scan (monit stopping a job it just started) is carried out once it runs, not by the default
    # action, which killed it with -15.
    stop_asked = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_asked.set())
    signal.signal(signal.SIGINT, lambda *_: stop_asked.set())

    from agent.pipeline import Agent, tune_malloc
    from agent.registry import RegistryError

    cfg = _load(config_path)
    tune_malloc()
    try:
        agent = Agent(cfg)
        agent.start()
    except RegistryError as e:  # e.g. written by a newer agent: refused rather than misread
        raise click.ClickException(f"registry: {e}") from None
    except OSError as e:
        if e.filename is None:  # the health endpoint could not listen
            raise click.ClickException(
                f"health.port: cannot listen on {cfg.health.host}:{cfg.health.port} ({e.strerror}); "
                "pick a free port or set health.enabled false") from None
        raise click.ClickException(f"{e.filename}: {e.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    if stop_asked.is_set():  # after the handlers: a signal from here on reaches agent.stop()
        agent.stop()
    agent.run()


def _offset_rows(cfg: Config) -> tuple[list, dict[str, str]]:
    """Rows of the registry and the files, and the directories that cannot be listed."""
    from agent import offsets, registry
    from agent.contain import Jail
    from agent.discover import Discovery

    try:
        entries = registry.load(cfg.state_dir) if os.path.exists(registry.path_in(cfg.state_dir)) else {}
    except registry.RegistryError as e:
        raise click.ClickException(f"registry: {e}") from None
    disc = Discovery(cfg.inputs, threading.Event())
    found = disc.scan() if os.path.isdir(cfg.inputs.root) else []
    return offsets.view(list(entries.values()), Jail.of(cfg.inputs), found), disc.unlisted


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def offsets(config_path: str, as_json: bool) -> None:
    """Per file: size, committed offset, lag, age of the oldest unshipped byte, bytes lost.

    Read from the registry and the file system, so it works with the agent stopped."""
    from agent.offsets import table

    cfg = _load(config_path)
    rows, _unlisted = _offset_rows(cfg)
    sp = _spool_status(cfg)
    if as_json:
        click.echo(orjson.dumps({"files": [r.as_dict() for r in rows], "spool": sp}).decode())
    else:
        click.echo(table(rows))
        click.echo(f"\nLOST {sum(r.lost_bytes for r in rows)} bytes in total; "
                   f"SPOOL {sp.bytes} of {sp.max_bytes} bytes, {sp.segments} segment(s), oldest {sp.oldest_age_s:.0f}s")


def _spool_status(cfg: Config):
    from agent import spool

    return spool.status(os.path.join(cfg.state_dir, "spool"), cfg.spool.max_bytes)


@main.command()
@CONFIG_OPTION
def check(config_path: str) -> None:
    """Exit 0 when healthy, 1 with reasons otherwise (for monit or any health checker).

    Asks the running agent's /healthz; with the agent down, applies the same rules to the
    registry and the files."""
    cfg = _load(config_path)
    reasons = _ask_agent(cfg)
    if reasons is None:
        from agent import health

        rows, unlisted = _offset_rows(cfg)
        reasons = health.problems(cfg.health, rows, unlisted_dirs=unlisted, spool=_spool_status(cfg))
    if reasons:
        for r in reasons:
            click.echo(f"unhealthy: {r}", err=True)
        sys.exit(1)
    click.echo("healthy")


def _ask_agent(cfg: Config) -> list[str] | None:
    import urllib.error
    import urllib.request

    if not cfg.health.enabled:
        return None
    url = f"http://{cfg.health.host}:{cfg.health.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return orjson.loads(r.read())["reasons"]
    except urllib.error.HTTPError as e:
        return orjson.loads(e.read())["reasons"]
    except OSError:
        return None


@main.command()
@CONFIG_OPTION
@click.option("--window", default="24h", show_default=True, help="How far back: e.g. 1h, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def volume(config_path: str, window: str, as_json: bool) -> None:
    """Top producers by bytes shipped, with their share and, given price_per_gib, a cost."""
    from dataclasses import asdict

    from agent import volume as vol

    cfg = _load(config_path)
    try:
        seconds = float(window[:-1]) * {"h": 3600, "d": 86400, "m": 60}[window[-1]]
    except (KeyError, ValueError):
        raise click.BadParameter("use a number with m, h or d, e.g. 24h", param_hint="--window") from None
    rows = vol.top(vol.load(cfg.state_dir), seconds, cfg.price_per_gib)
    where = {"deployment": cfg.bosh.deployment, "instance_group": cfg.bosh.instance_group, "window": window}
    if as_json:
        click.echo(orjson.dumps({**where, "producers": [asdict(r) for r in rows]}).decode())
        return
    click.echo(f"deployment {where['deployment'] or '-'}, instance group {where['instance_group'] or '-'}, last {window}")
    click.echo(f"{'JOB':<32} {'LINES':>12} {'BYTES':>14} {'SHARE':>7} {'COST':>10}")
    for r in rows:
        cost = f"{r.cost:.4f}" if r.cost is not None else "-"
        click.echo(f"{r.job or '(outside root)':<32} {r.lines:>12} {r.bytes:>14} {r.share:>7.1%} {cost:>10}")


@main.command()
@click.option("--es", "es_url", required=True, envvar="LOG_SHIPPER_FLEET_ES", help="Elasticsearch URL.")
@click.option("--deployment", default=None, help="Only agents of this BOSH deployment.")
@click.option("--index", default="logs-bosh-agents", show_default=True, help="The status index (fleet.index).")
@click.option("--username", envvar="LOG_SHIPPER_FLEET_USERNAME", default=None)
@click.option("--password", envvar="LOG_SHIPPER_FLEET_PASSWORD", default=None)
@click.option("--api-key", envvar="LOG_SHIPPER_FLEET_API_KEY", default=None)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def fleet(es_url: str, deployment: str | None, index: str, username: str | None, password: str | None,
          api_key: str | None, ca_file: str | None, as_json: bool) -> None:
    """Every agent's latest status, worst first: silent, lost, behind, refused, healthy.

    Exits 1 when any agent is not healthy, so it can run from cron or a CI job."""
    import time
    from dataclasses import asdict

    from elasticsearch import Elasticsearch

    from agent import fleet as fleet_mod
    from agent.send import redact

    kw: dict = {"request_timeout": 30}
    if username:
        kw["basic_auth"] = (username, password or "")
    if api_key:
        kw["api_key"] = api_key
    if ca_file:
        kw["ca_certs"] = ca_file
    try:
        docs = fleet_mod.latest(Elasticsearch(es_url, **kw), index, deployment)
    except Exception as e:  # noqa: BLE001 - any client error becomes one operator-readable line
        raise click.ClickException(f"reading {index} failed: {redact(str(e))[:300]}") from None
    agents = fleet_mod.rows(docs, time.time())
    if as_json:
        click.echo(orjson.dumps([asdict(a) for a in agents]).decode())
    else:
        click.echo(fleet_mod.table(agents) if agents else f"no agent status in {index}*")
    if not agents or any(a.state != "healthy" for a in agents):
        sys.exit(1)


@main.command()
@CONFIG_OPTION
@click.option("--kibana", "kibana_url", default=None, help="Also import the saved objects into this Kibana.")
def setup(config_path: str, kibana_url: str | None) -> None:
    """Install the index template (and lifecycle where the cluster has one); optionally Kibana objects."""
    from agent import send, template

    cfg = _load(config_path)
    es = send.client(cfg.elasticsearch)
    try:
        click.echo(template.install(es, cfg.target.kind, cfg.target.name))
        indices = [cfg.target.name] if cfg.target.kind == "index" else []
        if cfg.dead_letter.kind == "index":
            indices.append(cfg.dead_letter.index)
        if cfg.fleet.enabled:
            from agent import fleet

            fleet.install_template(es, cfg.fleet.index)
            click.echo(f"fleet status index template installed for {cfg.fleet.index}*")
            indices.append(cfg.fleet.index)
        # The agent's own key needs no right to create indices: setup makes them.
        made = template.create_indices(es, indices)
        click.echo(f"indices created: {', '.join(made)}" if made else "indices: all present")
    except Exception as e:  # noqa: BLE001 - any client error becomes one operator-readable line
        raise click.ClickException(f"setup failed: {send.redact(str(e))[:300]}") from None
    if kibana_url:
        from agent import kibana

        files = [kibana.OBJECTS] + ([kibana.FLEET_OBJECTS] if cfg.fleet.enabled else [])
        for ndjson in files:
            try:
                result = kibana.import_objects(kibana_url, ndjson=ndjson, username=cfg.elasticsearch.username,
                                               password=cfg.elasticsearch.password, api_key=cfg.elasticsearch.api_key,
                                               ca_file=cfg.elasticsearch.ca_file)
            except kibana.KibanaImportError as e:
                raise click.ClickException(f"kibana import of {ndjson.name} failed: {e}") from None
            click.echo(f"kibana: imported {result.get('successCount', 0)} saved objects from {ndjson.name}")


if __name__ == "__main__":
    sys.exit(main())
