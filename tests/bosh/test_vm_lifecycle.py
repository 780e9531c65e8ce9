"""The job on a VM, driven the way the BOSH agent drives it, under Debian's real monit.

/var/vcap lives in a private mount namespace (tests/bosh/vm.py), laid out as on a stemcell:
/var/vcap/sys -> data/sys, packages and jobs as links into data/. Both packages are compiled
from the release tarball the real bosh CLI built, by their own packaging scripts, into
BOSH_INSTALL_TARGET; the templates are rendered from the tarball's job. Then, as the agent
does: pre-start, `monit start all`; job logs grow and logrotate rotates them with the stanza
bosh-agent writes; the agent is killed with SIGKILL and monit restarts it; for the update,
`monit unmonitor all`, drain, `monit stop all`, a new package version and re-rendered
templates while the logs keep growing, pre-start and start again. At the end every line on
disk is in the real Elasticsearch node exactly once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.bosh.conftest import SPEC, Release, make_release, render, ruby_yaml
from tests.bosh.vm import VM
from tests.reliability.harness import LINE_RE, Writer
from tests.support.agentproc import all_messages, count

pytestmark = pytest.mark.es

REPO = Path(__file__).resolve().parents[2]
MONITRC = "/var/vcap/bosh/etc/monitrc"
LOG = "/var/vcap/data/sys/log"  # what /var/vcap/sys/log points to
PIDFILE = "/var/vcap/data/sys/run/log-shipper/log-shipper.pid"
UPGRADE_VERSION = "0.1.0+lifecycle2"
DAC_READ_SEARCH = 1 << 2

# The stemcell's monitrc, with a unix socket instead of 127.0.0.1:2822 (other tests may run
# beside this one) and a 1 s cycle instead of 10 s. The start delay leaves the test time to
# unmonitor the job before monit's first cycle would start it, as the BOSH agent keeps a
# job stopped until its pre-start has run.
MONITRC_TEXT = """set daemon 1 with start delay 5
set logfile /var/vcap/monit/monit.log
set pidfile /var/vcap/monit/monit.pid
set idfile /var/vcap/monit/monit.id
set statefile /var/vcap/monit/monit.state
set httpd unixsocket /var/vcap/monit/monit.sock
  allow cleartext /var/vcap/monit/monit.user
include /var/vcap/monit/job/*.monitrc
"""

# bosh-agent's /etc/logrotate.d/vcap (platform SetupLogrotate), with a small size so that
# every pass of this test rotates.
LOGROTATE_TEXT = " ".join(f"/var/vcap/data/sys/log/{g}" for g in (
    "*.log", ".*.log", "*/*.log", "*/.*.log", "*/*/*.log", "*/*/.*.log")) + """ {
  missingok
  rotate 7
  compress
  copytruncate
  size=16k
}
"""

LAYOUT = r"""
set -euo pipefail
mkdir -p /var/vcap/data/sys/log /var/vcap/data/sys/run /var/vcap/data/packages /var/vcap/data/jobs \
  /var/vcap/data/compile /var/vcap/packages /var/vcap/jobs /var/vcap/monit/job /var/vcap/bosh/etc
ln -s /var/vcap/data/sys /var/vcap/sys
chown root:vcap /var/vcap/data/sys/log && chmod 0750 /var/vcap/data/sys/log
# gorouter: a job that owns its log directory; uaa: root-only files, readable by the agent
# only through CAP_DAC_READ_SEARCH.
install -d -o vcap -g vcap -m 0750 /var/vcap/data/sys/log/gorouter
install -d -o root -g root -m 0700 /var/vcap/data/sys/log/uaa
install -o root -g root -m 0600 /dev/null /var/vcap/data/sys/log/uaa/uaa.log
install -o vcap -g vcap -m 0644 /dev/null /var/vcap/data/sys/log/gorouter/gorouter.log
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _props(es_url: str, index: str, health_port: int, environment: str) -> dict:
    return {"log_shipper": {
        "elasticsearch": {"hosts": [es_url]},
        "target": {"name": index},
        "dead_letter": {"kind": "file"},
        "extra_paths": ["/var/vcap/monit/monit.log"],
        "formats": [{"glob": "**", "format": "raw"}],
        "health": {"port": health_port},
        "director": "lifecycle-director",
        "environment": environment,
    }}


class BoshVM:
    """What the BOSH agent does on a VM, for the one job of this release."""

    def __init__(self, vm: VM):
        self.vm = vm
        vm.sh(LAYOUT)
        vm.path(MONITRC).write_text(MONITRC_TEXT)
        vm.path(MONITRC).chmod(0o600)
        # The agent's credentials for monit's API, random per VM, as the stemcell's.
        vm.path("/var/vcap/monit/monit.user").write_text(f"vcap:{os.urandom(12).hex()}\n")
        vm.path("/var/vcap/monit/monit.user").chmod(0o600)
        vm.path("/var/vcap/bosh/etc/logrotate.conf").write_text(LOGROTATE_TEXT)
        self.rotations = 0

    def install_packages(self, release: Release) -> dict[str, str]:
        """Compile each package of the tarball the way a compilation VM does, into the path
        jobs see it at (/var/vcap/packages/<name> -> data/packages/<name>/<fingerprint>)."""
        mf = ruby_yaml((release.unpacked / "release.MF").read_text())
        installed = {}
        # Dependencies first: python-3.11 has none, log-shipper needs it.
        for pkg in sorted(mf["packages"], key=lambda p: len(p["dependencies"])):
            name, fp = pkg["name"], pkg["fingerprint"]
            data = f"/var/vcap/data/packages/{name}/{fp}"
            installed[name] = data
            if self.vm.path(data).exists():
                continue  # unchanged fingerprint: BOSH keeps the compiled package
            compile_dir = f"/var/vcap/data/compile/{name}"
            self.vm.sh(f"""
                set -euo pipefail
                rm -rf {compile_dir} && mkdir -p {compile_dir} {data}
                tar -xzf {release.unpacked}/packages/{name}.tgz -C {compile_dir}
                ln -sfn {data} /var/vcap/packages/{name}
            """)
            self.vm.run("bash", "-e", "packaging", cwd=compile_dir, timeout=300, env={
                "BOSH_COMPILE_TARGET": compile_dir, "BOSH_INSTALL_TARGET": f"/var/vcap/packages/{name}",
                "BOSH_PACKAGE_NAME": name, "BOSH_PACKAGE_VERSION": fp,
                # No index is reachable: the compile must use only what the package carries.
                "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                "PIP_CONFIG_FILE": "/dev/null",
            })
        return installed

    def apply_job(self, release: Release, props: dict, generation: int) -> str:
        """Render every template of the tarball's job into data/jobs/log-shipper/<version>,
        link /var/vcap/jobs/log-shipper to it and hand its monit file to monit."""
        job = release.job("log-shipper")
        mf = ruby_yaml((job / "job.MF").read_text())
        rendered = {dest: render(src, props, SPEC, job=job) for src, dest in mf["templates"].items()}
        rendered["monit"] = render("monit", props, SPEC, job=job)
        digest = hashlib.sha256(repr(sorted(rendered.items())).encode()).hexdigest()[:12]
        target = f"/var/vcap/data/jobs/log-shipper/{generation}-{digest}"
        for dest, text in rendered.items():
            path = self.vm.path(f"{target}/{dest}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755 if dest.startswith("bin/") else 0o644)
        self.vm.sh(f"""
            ln -sfn {target} /var/vcap/jobs/log-shipper
            cp {target}/monit /var/vcap/monit/job/0000_log-shipper.monitrc
        """)
        return target

    def monit(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.vm.run("monit", "-c", MONITRC, *args, check=check, timeout=60)

    def start_monit(self) -> None:
        """The monit daemon, as the stemcell starts it; ready once its socket answers."""
        self.vm.run("monit", "-c", MONITRC)
        deadline = time.monotonic() + 30
        while self.monit("summary", check=False).returncode != 0:
            assert time.monotonic() < deadline, self.monit("summary", check=False).stderr
            time.sleep(0.2)

    def logrotate(self) -> None:
        """One pass of the stemcell's hourly cron job."""
        self.vm.run("logrotate", "-s", "/var/vcap/bosh/etc/logrotate.state", "/var/vcap/bosh/etc/logrotate.conf")
        self.rotations += 1

    def agent_pid(self) -> int | None:
        try:
            pid = int(self.vm.path(PIDFILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return None
        return None if state == "Z" else pid

    def summary(self) -> dict[str, str]:
        """monit summary: service name -> status."""
        out = self.monit("summary").stdout
        return dict(re.findall(r"^ (\S+)\s{2,}(.+?)\s{2,}\w+\s*$", out, re.M))

    def wait_status(self, status: str, timeout: float = 60) -> None:
        """monit acts on a command at its next cycle: until the job shows `status`."""
        deadline = time.monotonic() + timeout
        while self.summary().get("log-shipper") != status:
            assert time.monotonic() < deadline, self.monit("summary").stdout
            time.sleep(0.2)

    def wait_running(self, not_pid: int | None = None, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.agent_pid()
            if pid and pid != not_pid and self.summary().get("log-shipper") == "OK":
                return pid
            time.sleep(0.2)
        raise AssertionError(f"agent not running under monit after {timeout}s: {self.monit('summary').stdout}"
                             + self.agent_log()[-3000:])

    def agent_log(self) -> str:
        d = self.vm.path(f"{LOG}/log-shipper")
        text = ""
        for p in sorted(d.glob("log-shipper.stderr.log*")):
            text += (gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()).decode(errors="replace")
        return text

    def lines_on_disk(self, jobs: list[str]) -> set[tuple[str, int]]:
        found = set()
        for job in jobs:
            for p in self.vm.path(f"{LOG}/{job}").iterdir():
                data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
                for ln in data.split(b"\n")[:-1]:
                    if m := LINE_RE.match(ln):
                        found.add((m.group(1).decode(), int(m.group(2))))
        return found


def indexed_lines(es, index: str) -> tuple[Counter, list[dict]]:
    """How often each test line is in the index, and the documents."""
    docs = all_messages(es, index, ["message", "log.file.path", "bosh.environment"])
    seen = Counter((m.group(1).decode(), int(m.group(2))) for d in docs if (m := LINE_RE.match(d["message"].encode())))
    return seen, docs


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def assert_least_privilege(pid: int, vm: VM) -> None:
    """The agent runs as its own user (not vcap, the jobs' user), in its own group only, with
    CAP_DAC_READ_SEARCH alone."""
    st = proc_status(pid)
    uid = vm.uid("log-shipper")
    assert uid != vm.vcap_uid
    gid = int(vm.sh("id -g log-shipper").stdout)
    assert st["Uid"].split() == [str(uid)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(gid)] * 4, st["Gid"]
    assert st["Groups"].split() in ([], [str(gid)]), st["Groups"]
    assert int(st["CapEff"], 16) == DAC_READ_SEARCH, st["CapEff"]
    assert int(st["CapPrm"], 16) == DAC_READ_SEARCH, st["CapPrm"]
    assert int(st["CapBnd"], 16) == DAC_READ_SEARCH, st["CapBnd"]
    assert st["NoNewPrivs"].strip() == "1"


def assert_out_of_a_jobs_reach(vm: VM, pid: int) -> None:
    """A job's user (vcap) can neither signal the agent nor write its state, run or log directory."""
    uid = vm.uid("log-shipper")
    for d, mode in (("/var/vcap/data/log-shipper", 0o700), (f"{LOG}/log-shipper", 0o750),
                    ("/var/vcap/data/sys/run/log-shipper", 0o755)):
        st = vm.path(d).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0 if "/run/" in d else uid, mode), d
    agent_id = vm.path("/var/vcap/data/log-shipper/agent-id")
    deadline = time.monotonic() + 30
    while not agent_id.exists():  # written once the agent has loaded its config
        assert time.monotonic() < deadline, "the agent wrote no agent-id"
        time.sleep(0.2)
    assert agent_id.stat().st_uid == uid
    as_vcap = "setpriv --reuid=vcap --regid=vcap --clear-groups --"
    for cmd in (f"kill -TERM {pid}", "touch /var/vcap/data/sys/run/log-shipper/x",
                f"ln -s /etc/shadow {LOG}/log-shipper/planted.log", "ls /var/vcap/data/log-shipper"):
        result = vm.sh(f"{as_vcap} {cmd}", check=False)
        assert result.returncode != 0, f"vcap could: {cmd}"
    assert Path(f"/proc/{pid}").exists()


def _upgrade_wheels(release: Release, out: Path) -> Path:
    """The release's wheels with the agent rebuilt as a new version: the package update."""
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                              "bosh", "tests", "__pycache__"))
    for f, old, new in ((src / "pyproject.toml", 'version = "0.1.0"', f'version = "{UPGRADE_VERSION}"'),
                        (src / "agent/__init__.py", '__version__ = "0.1.0"', f'__version__ = "{UPGRADE_VERSION}"')):
        text = f.read_text()
        assert old in text, f"{f}: version line changed; update this test"
        f.write_text(text.replace(old, new))
    wheels = out / "wheels"
    shutil.copytree(release.package("log-shipper") / "log-shipper-wheels", wheels)
    for w in wheels.glob("log_shipper-*.whl"):
        w.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(src)],
                   check=True, capture_output=True, timeout=300)
    return wheels


@pytest.fixture
def releases(release, tmp_path) -> tuple[Release, Release]:
    """Dev releases 1 and 2 from one release directory, as an operator's two `make release`."""
    wheels = _upgrade_wheels(release, tmp_path / "upgrade")
    rel_dir = tmp_path / "release-dir"
    shutil.copytree(release.dir, rel_dir, symlinks=True)
    tarball = tmp_path / "log-shipper-2.tgz"
    # The same HOME: the CLI keeps the dev builds of release 1 in ~/.bosh/cache.
    result = make_release(rel_dir, tarball, release.dir.parent, WHEELS_DIR=str(wheels))
    assert result.returncode == 0, result.stderr
    unpacked = tmp_path / "unpacked-2"
    with tarfile.open(tarball) as t:
        t.extractall(unpacked, filter="tar")
    return release, Release(rel_dir, tarball, unpacked)


def test_job_lifecycle_under_monit_ships_every_line_once(releases, es_node, es, index_name, tmp_path):
    v1, v2 = releases
    mf1, mf2 = (ruby_yaml((r.unpacked / "release.MF").read_text()) for r in (v1, v2))
    assert mf2["version"] == "0+dev.2"
    fps = [{p["name"]: p["fingerprint"] for p in mf["packages"]} for mf in (mf1, mf2)]
    assert fps[0]["log-shipper"] != fps[1]["log-shipper"] and fps[0]["python-3.11"] == fps[1]["python-3.11"]

    health_port = _free_port()
    vm = VM(tmp_path / "vm-var")
    writer = None
    try:
        host = BoshVM(vm)
        jobs = ["gorouter", "uaa"]
        installed = host.install_packages(v1)
        shebang = vm.run("head", "-1", "/var/vcap/packages/log-shipper/bin/log-shipper").stdout
        assert shebang == "#!/var/vcap/packages/log-shipper/bin/python\n"
        host.apply_job(v1, _props(es_node.url, index_name, health_port, "lifecycle-v1"), 1)
        host.start_monit()
        host.monit("unmonitor", "all")
        host.wait_status("Not monitored")

        writer = Writer({j: vm.path(f"{LOG}/{j}/{j}.log") for j in jobs}, lines_per_s=150, keep_open=True)
        for j in jobs:
            writer.write(j, 20)
        writer.start()

        # What an earlier version, which ran the agent as vcap, left: its id and its own log.
        old_id = "0f6b3c1e-5a47-4c2d-9e3b-7d1a2b3c4d5e"
        vm.sh(f"""
            install -d -o vcap -g vcap -m 0750 /var/vcap/data/log-shipper {LOG}/log-shipper
            printf %s {old_id} >/var/vcap/data/log-shipper/agent-id
            echo '{{"event": "old"}}' >{LOG}/log-shipper/log-shipper.stderr.log
            chown vcap:vcap /var/vcap/data/log-shipper/agent-id {LOG}/log-shipper/log-shipper.stderr.log
        """)

        # Deploy: pre-start, then monit starts the job.
        pre = vm.run("/var/vcap/jobs/log-shipper/bin/pre-start")
        assert "config ok" in pre.stdout, pre.stdout + pre.stderr
        assert "created system user log-shipper" in pre.stdout, pre.stdout
        host.monit("start", "all")
        pid = host.wait_running()
        assert_least_privilege(pid, vm)
        assert_out_of_a_jobs_reach(vm, pid)
        # pre-start handed the old state to the agent's user: the same id, the same log.
        assert vm.path("/var/vcap/data/log-shipper/agent-id").read_text() == old_id
        # ctl's own lines reach the agent's log dir (as the agent's user, through the capability).
        assert "memory and CPU not capped" in vm.path(f"{LOG}/log-shipper/log-shipper.stdout.log").read_text()
        # The agent came from the compiled package (a venv on the stand-in python-3.11).
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"/var/vcap/packages/log-shipper/bin/log-shipper" in cmdline, cmdline

        time.sleep(3)
        host.logrotate()
        time.sleep(2)

        # A crash: monit notices within a cycle and starts the job again.
        os.kill(pid, signal.SIGKILL)
        pid2 = host.wait_running(not_pid=pid)
        assert_least_privilege(pid2, vm)
        time.sleep(2)
        host.logrotate()
        time.sleep(2)

        # Update: the agent's drain sequence, then stop.
        host.monit("unmonitor", "all")
        host.wait_status("Not monitored")
        drain = vm.run("/var/vcap/jobs/log-shipper/bin/drain", "job_changed", "hash_changed", "log-shipper")
        assert drain.stdout == "0\n", drain.stdout + drain.stderr
        assert host.agent_pid() is None, "drain returned with the agent still running"
        assert "exited after" in vm.path(f"{LOG}/log-shipper/drain.log").read_text()
        host.monit("stop", "all")
        host.wait_status("Not monitored")

        # New package version and re-rendered templates while the logs keep growing.
        installed2 = host.install_packages(v2)
        assert installed2["python-3.11"] == installed["python-3.11"]
        assert installed2["log-shipper"] != installed["log-shipper"]
        host.apply_job(v2, _props(es_node.url, index_name, health_port, "lifecycle-v2"), 2)
        host.monit("reload")
        host.logrotate()  # rotation while the agent is down: it finds the rest in the .gz copy
        time.sleep(2)
        version = vm.run("/var/vcap/jobs/log-shipper/bin/log-shipper", "--version").stdout
        assert UPGRADE_VERSION in version

        assert "created" not in vm.run("/var/vcap/jobs/log-shipper/bin/pre-start").stdout
        host.monit("start", "all")
        pid3 = host.wait_running(not_pid=pid2)
        assert_least_privilege(pid3, vm)
        time.sleep(3)

        writer.stop()
        writer = None
        host.logrotate()

        # Every line on disk (live files and rotated copies) is indexed exactly once.
        expected = host.lines_on_disk(jobs)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if count(es, index_name) >= len(expected) and expected <= set(indexed_lines(es, index_name)[0]):
                break
            time.sleep(1)
        time.sleep(2)  # stragglers would be duplicates
        seen, docs = indexed_lines(es, index_name)
        log = host.agent_log()
        lost = expected - set(seen)
        dups = [k for k, n in seen.items() if n > 1]
        print(f"\nlines on disk {len(expected)}, indexed {len(seen)}, logrotate passes {host.rotations}")
        assert not lost, f"{len(lost)} lines not indexed, e.g. {sorted(lost)[:5]}\n{log[-3000:]}"
        assert not dups, f"{len(dups)} lines indexed twice, e.g. {dups[:5]}"
        assert set(seen) <= expected, "indexed lines that were never on disk"
        assert any(k[0] == "uaa" for k in seen), "the root-only job's lines were not read"
        rotated = [p.name for j in jobs for p in vm.path(f"{LOG}/{j}").iterdir() if p.name.endswith(".gz")]
        assert len(rotated) >= 2 * len(jobs), rotated

        # The upgrade took: the new agent version ran, with the re-rendered config.
        starts = [e.get("version") for e in map(json.loads, log.splitlines()) if e.get("event") == "start"]
        assert starts[-1] == UPGRADE_VERSION and "0.1.0" in starts, starts
        envs = Counter(d.get("bosh.environment") for d in docs)
        assert envs["lifecycle-v1"] and envs["lifecycle-v2"], envs
        # monit's own log is an extra path: its account of the crash reached Elasticsearch too.
        monit_docs = [d["message"] for d in docs if d["log.file.path"] == "/var/vcap/monit/monit.log"]
        assert any("'log-shipper' process is not running" in m for m in monit_docs), monit_docs[:10]
        assert "Traceback" not in log and '"sender_crashed"' not in log, log[-3000:]

        summary = host.summary()
        assert summary.get("log-shipper") == "OK" and set(summary.values()) == {"OK"}, host.monit("summary").stdout
        check = vm.run("/var/vcap/jobs/log-shipper/bin/log-shipper", "check", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        if writer:
            writer.stop()
        vm.run("monit", "-c", MONITRC, "quit", check=False, timeout=30)
        vm.destroy()
