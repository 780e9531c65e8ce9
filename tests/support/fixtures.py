"""Fault-injection fixtures for issue 4; conftest re-exports them with `from tests.support.fixtures import *`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import tlsproxy
from tests.support.faultproxy import FaultProxy

__all__ = ["fault_proxy", "tls_proxy"]


@pytest.fixture
def fault_proxy(es_node) -> Iterator[FaultProxy]:
    """A fresh proxy per test, so one test's fault never leaks into the next."""
    proxy = FaultProxy(es_node.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def tls_proxy(es_node) -> Iterator[tlsproxy.TlsProxy]:
    proxy = tlsproxy.start(es_node.url)
    yield proxy
    proxy.stop()
