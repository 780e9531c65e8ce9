"""A real single-node Elasticsearch for tests and `make run`.

Resolves the minimal distribution (integ-test-zip) by its Maven coordinates, unpacks it
once into a cache, and starts one node as an unprivileged user on a free loopback port.
`ES_URL` short-circuits all of it: the given cluster is used as is. A test run's pytest
processes (xdist workers) share one node through `shared()`; `stop_shared()` ends it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ES_VERSION = os.environ.get("LOG_SHIPPER_ES_VERSION", "8.19.21")
COORDS = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
CACHE = Path(os.environ.get("LOG_SHIPPER_CACHE", "/var/tmp/log-shipper-cache"))
ES_USER = "log-shipper-es"
JAVA_HOME = os.environ.get("ES_JAVA_HOME") or os.environ.get("JAVA_HOME") or "/usr/lib/jvm/java-17-openjdk-amd64"


def fetch_distribution() -> Path:
    """The unpacked distribution's home, downloading it only the first time."""
    home = CACHE / f"elasticsearch-{ES_VERSION}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"elasticsearch-{ES_VERSION}.zip"
    if not archive.exists():
        subprocess.run(
            ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={COORDS}", f"-DoutputDirectory={CACHE}"],
            check=True,
        )
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    for p in (tmp / f"elasticsearch-{ES_VERSION}").rglob("*"):
        # zipfile drops the mode bits; the launch scripts and the native libraries need them.
        if p.is_file() and (p.parent.name == "bin" or p.suffix == ".so"):
            p.chmod(0o755)
    (tmp / f"elasticsearch-{ES_VERSION}").rename(home)
    shutil.rmtree(tmp, ignore_errors=True)
    _open_up(CACHE)
    return home


def _open_up(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o005 | (0o050 if p.is_dir() else 0o040))


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ES_USER)
    except KeyError:
        # Not checked: a parallel worker may have added the user meanwhile (useradd exits 9); getpwnam decides.
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER])
        return pwd.getpwnam(ES_USER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    url: str
    workdir: Path | None
    proc: subprocess.Popen | None
    started_in_s: float = 0.0

    def stop(self, keep_logs: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.workdir and not keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def log_file(self) -> Path | None:
        return self.workdir / "stdout.log" if self.workdir else None


def start(heap: str = "512m", timeout_s: float = 120.0, secure: Secure | None = None) -> Node:
    """The session's node; with `secure`, a node of its own with security and TLS on (ES_URL aside)."""
    if os.environ.get("ES_URL") and secure is None:
        return Node(url=os.environ["ES_URL"].rstrip("/"), workdir=None, proc=None)
    home = fetch_distribution()
    workdir = Path(tempfile.mkdtemp(prefix="log-shipper-es-"))
    conf = workdir / "config"
    shutil.copytree(home / "config", conf)
    security = ["-Expack.security.enabled=false"] if secure is None else secure.configure(home, conf)
    for d in ("data", "logs"):
        (workdir / d).mkdir()
    http_port, transport_port = free_port(), free_port()
    env = dict(os.environ, ES_JAVA_HOME=JAVA_HOME, ES_PATH_CONF=str(conf), ES_JAVA_OPTS=f"-Xms{heap} -Xmx{heap}")
    env.pop("JAVA_HOME", None)
    cmd = [
        str(home / "bin" / "elasticsearch"),
        "-Ediscovery.type=single-node",
        "-Enetwork.host=127.0.0.1",
        f"-Ehttp.port={http_port}",
        f"-Etransport.port={transport_port}",
        f"-Epath.data={workdir / 'data'}",
        f"-Epath.logs={workdir / 'logs'}",
        *security,
        # Tests fill small disks; the default watermarks would turn indices read-only.
        "-Ecluster.routing.allocation.disk.threshold_enabled=false",
        "-Eaction.destructive_requires_name=false",
    ]
    user = None
    if os.geteuid() == 0:  # Elasticsearch refuses to run as root.
        user = _ensure_user()
        for p in [workdir, *workdir.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)
        env["HOME"] = str(workdir)
    out = open(workdir / "stdout.log", "wb")
    t0 = time.monotonic()
    drop = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if user else {}
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, **drop)
    scheme = "http" if secure is None else "https"
    node = Node(url=f"{scheme}://127.0.0.1:{http_port}", workdir=workdir, proc=proc)
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"Elasticsearch exited with {proc.returncode}; see {workdir / 'stdout.log'}")
        if _ready(node.url, secure):
            node.started_in_s = time.monotonic() - t0
            return node
        time.sleep(0.25)
    node.stop(keep_logs=True)
    raise RuntimeError(f"Elasticsearch did not answer within {timeout_s:.0f}s; see {workdir / 'stdout.log'}")


def shared(run_dir: Path) -> Node:
    """The test run's one node: the first process to ask starts it, the others get its URL.

    Its starter may finish first, so no process stops it but the run's controller (stop_shared).
    The returned Node has no proc: stopping it is a no-op."""
    if os.environ.get("ES_URL"):
        return start()
    state = run_dir / "es-node.json"
    with open(run_dir / "es-node.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not state.exists():
            node = start()
            state.write_text(json.dumps({"url": node.url, "workdir": str(node.workdir), "pid": node.proc.pid}))
        s = json.loads(state.read_text())
    return Node(url=s["url"], workdir=Path(s["workdir"]), proc=None)


def stop_shared(run_dir: Path, keep_logs: bool) -> Path | None:
    """Stop the run's node if one was started; its workdir when the logs are kept."""
    state = run_dir / "es-node.json"
    if not state.exists():
        return None
    s = json.loads(state.read_text())
    pid, workdir = s["pid"], Path(s["workdir"])
    _terminate(pid)
    if keep_logs:
        return workdir
    shutil.rmtree(workdir, ignore_errors=True)
    return None


def _terminate(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after grace_s; the node is not our child (its starter may have exited)."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """False once the process is gone or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ready(url: str, secure: Secure | None = None) -> bool:
    req = urllib.request.Request(f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s")
    ctx = None
    if secure is not None:
        token = base64.b64encode(f"{secure.admin[0]}:{secure.admin[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        ctx = ssl.create_default_context(cafile=secure.ca_file)
    try:
        # The minimal distribution has no `GET /`; cluster health is always there.
        with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Secure:
    """Security on, as a production cluster has it: TLS on the node's HTTP layer (a CA and a
    server certificate made with openssl), file-realm users, and roles from roles.yml."""

    ca_file: str
    cert_file: str
    key_file: str
    admin: tuple[str, str]
    users: dict[str, tuple[str, str]]  # name -> (password, role)
    roles_yml: str

    def configure(self, home: Path, conf: Path) -> list[str]:
        for src in (self.ca_file, self.cert_file, self.key_file):
            shutil.copy(src, conf / Path(src).name)
        (conf / "roles.yml").write_text(self.roles_yml)
        env = dict(os.environ, ES_JAVA_HOME=JAVA_HOME, ES_PATH_CONF=str(conf))
        env.pop("JAVA_HOME", None)
        for name, (password, role) in {self.admin[0]: (self.admin[1], "superuser"), **self.users}.items():
            subprocess.run([str(home / "bin" / "elasticsearch-users"), "useradd", name, "-p", password, "-r", role],
                           env=env, check=True, capture_output=True)
        return [
            "-Expack.security.enabled=true",
            "-Expack.security.http.ssl.enabled=true",
            f"-Expack.security.http.ssl.key={Path(self.key_file).name}",
            f"-Expack.security.http.ssl.certificate={Path(self.cert_file).name}",
            f"-Expack.security.http.ssl.certificate_authorities={Path(self.ca_file).name}",
            "-Expack.security.authc.realms.file.file1.order=0",
        ]


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["fetch"]:
        print(fetch_distribution())
