"""Session fixtures: one real Elasticsearch node per test session (or `ES_URL`)."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from tests.bosh.conftest import GET_BOSH_CLI, NO_BOSH_CLI
from tests.support import esnode


@pytest.fixture(scope="session")
def es_node(request):
    node = esnode.start()
    yield node
    failed = request.session.testsfailed > 0
    if failed and node.log_file:
        print(f"\nElasticsearch logs kept in {node.workdir}")
    node.stop(keep_logs=failed)


@pytest.fixture(scope="session")
def es(es_node) -> Elasticsearch:
    return Elasticsearch(es_node.url, request_timeout=60)


@pytest.fixture
def index_name() -> str:
    """A fresh target index per test, so tests never see each other's documents."""
    return f"logs-test-{uuid.uuid4().hex[:10]}"


def pytest_terminal_summary(terminalreporter) -> None:
    """One loud line for the BOSH tests a missing CLI kept from running: a skip that is counted
    and says what to do, so it cannot pass for a green run of those tests."""
    skipped = {r.nodeid for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and NO_BOSH_CLI in r.longrepr[2]}
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} BOSH tests did not run, {NO_BOSH_CLI}: {GET_BOSH_CLI}",
                                    yellow=True, bold=True)


from tests.support.fixtures import *  # noqa: E402,F401,F403
