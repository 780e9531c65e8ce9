"""Fault-injection fixtures for issue 4; conftest re-exports them with `from tests.support.fixtures import *`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import secrets
import shutil
import tempfile
from pathlib import Path

from tests.support import esnode, tlsproxy
from tests.support.faultproxy import FaultProxy

__all__ = ["fault_proxy", "tls_proxy", "secure_es"]


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


# Least privilege: the agent's key may create documents in log-shipper's indices and nothing else.
WRITER_ROLE = """\
log_shipper_writer:
  indices:
    - names: ["logs-*"]
      privileges: ["create_doc"]
"""


@pytest.fixture(scope="session")
def secure_es() -> Iterator[tuple[esnode.Node, esnode.Secure, Path]]:
    """A second node, security on: TLS on its HTTP layer, an admin (superuser) and a writer
    (create_doc only) from the file realm. Yields the node, its users and the wrong CA's path."""
    certs = Path(tempfile.mkdtemp(prefix="log-shipper-certs-"))
    tlsproxy.make_certs(certs)
    secure = esnode.Secure(
        ca_file=str(certs / "ca.crt"), cert_file=str(certs / "server.crt"), key_file=str(certs / "server.key"),
        admin=("admin", secrets.token_urlsafe(12)),
        users={"shipper": (secrets.token_urlsafe(12), "log_shipper_writer")}, roles_yml=WRITER_ROLE)
    node = esnode.start(secure=secure)
    yield node, secure, certs / "wrong-ca.crt"
    node.stop()
    shutil.rmtree(certs, ignore_errors=True)
