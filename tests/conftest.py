"""Session fixtures: one real Elasticsearch node per test session (or `ES_URL`)."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

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
from tests.support.fixtures import *  # noqa: E402,F401,F403
