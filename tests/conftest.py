"""Session fixtures: one real Elasticsearch node per test run, shared by xdist workers (or `ES_URL`)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from tests.bosh.conftest import GET_BOSH_CLI, NO_BOSH_CLI
from tests.support import esnode


# The run's directory for what its processes (xdist workers) share: made by the controller (or the
# only process), inherited by workers through the environment, which they are started with later.
RUN_DIR = "LOG_SHIPPER_TEST_RUN_DIR"


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):
        os.environ[RUN_DIR] = tempfile.mkdtemp(prefix="log-shipper-run-")


def pytest_sessionfinish(session) -> None:
    if hasattr(session.config, "workerinput"):
        return
    kept = esnode.stop_shared(Path(os.environ[RUN_DIR]), keep_logs=session.testsfailed > 0)
    if kept:
        print(f"\nElasticsearch logs kept in {kept}")


def pytest_unconfigure(config) -> None:
    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(RUN_DIR), ignore_errors=True)


@pytest.fixture(scope="session")
def es_node() -> esnode.Node:
    """One node for the whole run, shared by all workers: tests keep apart by index name."""
    return esnode.shared(Path(os.environ[RUN_DIR]))


@pytest.fixture(scope="session")
def es(es_node) -> Elasticsearch:
    return Elasticsearch(es_node.url, request_timeout=60)


@pytest.fixture
def index_name() -> str:
    """A fresh target index per test, so tests never see each other's documents."""
    return f"logs-test-{uuid.uuid4().hex[:10]}"


# Fixtures costly enough to build once per run: their tests go to one xdist worker (--dist loadgroup),
# which builds them once, instead of to every worker. The secured node is a second JVM.
ONE_WORKER = {"secure_es": "secure-node", "release": "bosh-release", "shipped": "search-shipped",
              "incident": "search-incident"}


def pytest_itemcollected(item) -> None:
    """Marked as collected, so the mark is there when xdist reads the groups (collection's end)."""
    group = next((g for f, g in ONE_WORKER.items() if f in getattr(item, "fixturenames", ())), None)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_terminal_summary(terminalreporter) -> None:
    """One loud line for the BOSH tests a missing CLI kept from running: a skip that is counted
    and says what to do, so it cannot pass for a green run of those tests."""
    skipped = {r.nodeid for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and NO_BOSH_CLI in r.longrepr[2]}
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} BOSH tests did not run, {NO_BOSH_CLI}: {GET_BOSH_CLI}",
                                    yellow=True, bold=True)


from tests.support.fixtures import *  # noqa: E402,F401,F403
