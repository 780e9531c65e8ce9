"""nginx terminating TLS with basic auth in front of the test node, like a secured production cluster.

Throwaway certificates come from the `openssl` CLI: a CA, a server certificate it signs for
127.0.0.1/localhost, and a second unrelated CA to test that verification really happens.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.esnode import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

NGINX_CONF = """\
daemon off;
# One process as the current user: no worker user to switch to, so no file ownership to arrange.
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;  # the default 1m would answer big bulk requests with nginx's own 413
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        auth_basic "log-shipper test";
        auth_basic_user_file {d}/htpasswd;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 300s;
        }}
    }}
}}
"""

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class TlsProxy:
    url: str
    ca_file: str
    wrong_ca_file: str
    username: str
    password: str
    workdir: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _openssl(*args: str, cwd: Path, stdin: str | None = None) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          check=True).stdout


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext", *CURVE, "-days", "7",
             "-subj", f"/CN=log-shipper {name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def make_certs(d: Path) -> None:
    """ca.crt, server.crt + server.key (for 127.0.0.1 and localhost, signed by ca), wrong-ca.crt in `d`."""
    (d / "openssl.cnf").write_text(OPENSSL_CNF)
    _make_ca(d, "ca")
    _make_ca(d, "wrong-ca")
    _openssl("req", "-new", "-config", "openssl.cnf", *CURVE, "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-set_serial", str(secrets.randbits(63)), "-days", "7",
             "-extfile", "openssl.cnf", "-extensions", "server_ext", "-out", "server.crt", cwd=d)


def start(upstream_url: str, username: str = "shipper", timeout_s: float = 10.0) -> TlsProxy:
    d = Path(tempfile.mkdtemp(prefix="log-shipper-tls-"))
    make_certs(d)
    password = secrets.token_urlsafe(12)
    hashed = _openssl("passwd", "-apr1", "-stdin", cwd=d, stdin=password + "\n").strip()
    (d / "htpasswd").write_text(f"{username}:{hashed}\n")

    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, port=port, upstream=upstream_url.rstrip("/")))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    proxy = TlsProxy(f"https://127.0.0.1:{port}", str(d / "ca.crt"), str(d / "wrong-ca.crt"),
                     username, password, d, proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (d / "error.log").read_text(errors="replace")
            shutil.rmtree(d, ignore_errors=True)
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"nginx did not listen on {port} within {timeout_s:.0f}s")
