"""Command line: thin click commands over the agent's modules."""

from __future__ import annotations

import sys

import click

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

    from agent.pipeline import Agent

    agent = Agent(_load(config_path))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()


if __name__ == "__main__":
    sys.exit(main())
