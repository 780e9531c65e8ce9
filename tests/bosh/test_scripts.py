"""The job's shell scripts, rendered and run for real: drain against a real process, and
ctl's privilege drop with the real setpriv and kernel capabilities."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.bosh.conftest import HOSTS, render

SCRIPTS = ["drain.erb", "ctl.erb", "pre-start.erb", "log-shipper.erb"]


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("use_bpm", [True, False])
@pytest.mark.parametrize("template", SCRIPTS)
def test_scripts_are_valid_bash(tmp_path, template, use_bpm):
    props = {"log_shipper": {**HOSTS["log_shipper"], "use_bpm": use_bpm}}
    script = write_script(tmp_path / template.removesuffix(".erb"), render(template, props))
    assert script.read_text().startswith("#!/bin/bash\n")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _open_to_user(tmp_path: Path) -> None:
    """The temp tree traversable by the unprivileged user the scripts drop to (pytest makes it 0700)."""
    for d in [tmp_path, *tmp_path.parents]:
        if d == Path("/"):
            break
        d.chmod(d.stat().st_mode | 0o011)


def _user_log_dir(path: Path) -> Path:
    """The agent's log directory as pre-start leaves it: owned by the agent's user ("nobody" here)."""
    path.mkdir(exist_ok=True)
    nobody = pwd.getpwnam("nobody")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    _open_to_user(path.parent)
    return path


def _fake_package(pkg: Path, body: str) -> Path:
    """A log-shipper package whose bin/log-shipper is `body`, run by the package's bin/python
    (here bash) through its shebang: the agent's exe and command line, as drain and ctl check them."""
    (pkg / "bin").mkdir(parents=True)
    (pkg / "bin/python").symlink_to("/bin/bash")
    write_script(pkg / "bin/log-shipper", f"#!{pkg}/bin/python\n{body}")
    return pkg


def _drain_env(pidfile: Path, log_dir: Path, pkg: Path) -> dict:
    return dict(os.environ, LOG_SHIPPER_PIDFILE=str(pidfile), LOG_SHIPPER_LOG_DIR=str(_user_log_dir(log_dir)),
                LOG_SHIPPER_USER="nobody", LOG_SHIPPER_PACKAGE_DIR=str(pkg))


def _spawn_flusher(tmp_path: Path, flush_s: float) -> tuple[subprocess.Popen, Path]:
    """The agent's stand-in, run from a package as the agent's user ("nobody"): a real process
    that, like the agent, takes flush_s to finish after SIGTERM. Its package and the process."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    _open_to_user(tmp_path)
    pkg = _fake_package(tmp_path / "pkg", f"""
trap 'sleep {flush_s}; echo yes >{out}/flushed; exit 0' TERM
touch {out}/ready
while :; do sleep 0.05; done
""")
    # Not reaped until the test is done: drain must tell an exited (zombie) agent from a live one.
    proc = subprocess.Popen([str(pkg / "bin/log-shipper"), "run"], user="nobody", group="nogroup", extra_groups=[])
    _wait_for(out / "ready", "flusher did not start")
    return proc, pkg


def test_drain_terms_the_agent_waits_for_its_flush_and_prints_only_zero(tmp_path):
    proc, pkg = _spawn_flusher(tmp_path, flush_s=1.0)
    pidfile = tmp_path / "log-shipper.pid"
    pidfile.write_text(f"{proc.pid}\n")
    drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
    env = _drain_env(pidfile, tmp_path / "log", pkg)

    started = time.monotonic()
    result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
    elapsed = time.monotonic() - started

    assert result.returncode == 0
    assert result.stdout == "0\n"  # the drain protocol: one integer, nothing else
    assert elapsed >= 1.0, "drain returned before the agent had flushed"
    assert (tmp_path / "out/flushed").read_text() == "yes\n"
    assert proc.poll() is not None
    assert "exited after" in (tmp_path / "log" / "drain.log").read_text()


def test_drain_gives_up_after_its_timeout_and_still_prints_zero(tmp_path):
    proc, pkg = _spawn_flusher(tmp_path, flush_s=30)
    try:
        pidfile = tmp_path / "pid"
        pidfile.write_text(str(proc.pid))
        props = {"log_shipper": {**HOSTS["log_shipper"], "drain_timeout_s": 1}}
        drain = write_script(tmp_path / "drain", render("drain.erb", props))
        env = _drain_env(pidfile, tmp_path / "log", pkg)
        started = time.monotonic()
        result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
        assert result.stdout == "0\n"
        assert 1.0 <= time.monotonic() - started < 10
        assert "still running after 1s" in (tmp_path / "log/drain.log").read_text()
    finally:
        proc.kill()


def test_drain_with_no_agent_running_prints_zero(tmp_path):
    drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
    env = _drain_env(tmp_path / "absent.pid", tmp_path / "log", tmp_path / "pkg")
    result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
    assert (result.returncode, result.stdout) == (0, "0\n")


# The stand-in for the package's bin/log-shipper: records who it runs as and what it can do,
# then waits for SIGTERM like the agent. What is tested is ctl's setpriv/cap setup around it.
PROBE = """
out="$VCAP_ROOT/data/log-shipper"
echo $$ >"$out/pid"
id -u >"$out/uid"
grep -E '^Cap(Eff|Bnd|Amb):' /proc/self/status >"$out/caps"
grep -E '^NoNewPrivs:' /proc/self/status >>"$out/caps"
cat "$VCAP_ROOT/sys/log/other-job/secret.log" >"$out/read" 2>&1 || true
if echo tampered >>"$VCAP_ROOT/sys/log/other-job/secret.log" 2>/dev/null; then echo yes; else echo no; fi >"$out/wrote"
echo "$*" >"$out/args"
trap 'echo TERM >"$out/exit"; exit 0' TERM
while :; do sleep 0.1; done
"""


def _vcap_tree(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A /var/vcap with the probe as bin/log-shipper and a root-only job log; ctl and its env."""
    vcap = tmp_path / "vcap"
    (vcap / "jobs/log-shipper/bin").mkdir(parents=True)
    other = vcap / "sys/log/other-job"
    other.mkdir(parents=True)
    (other / "secret.log").write_text("only root may read this\n")
    (other / "secret.log").chmod(0o600)
    other.chmod(0o700)
    _fake_package(vcap / "packages/log-shipper", PROBE)
    # The job's wrapper, as bin/log-shipper execs the package's (nice and the venv aside).
    write_script(vcap / "jobs/log-shipper/bin/log-shipper",
                 '#!/bin/bash\nexec "$VCAP_ROOT/packages/log-shipper/bin/log-shipper" "$@"\n')
    ctl = write_script(tmp_path / "ctl", render("ctl.erb", HOSTS))
    env = dict(os.environ, VCAP_ROOT=str(vcap), LOG_SHIPPER_USER="nobody",
               LOG_SHIPPER_CGROUP_ROOT=str(tmp_path / "no-cgroupfs"))
    # The traversal to the temp tree must not depend on the capability under test.
    _open_to_user(tmp_path)
    return vcap, ctl, env


def _ctl(ctl: Path, env: dict, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ctl), action], env=env, capture_output=True, text=True, timeout=60)


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctl_runs_the_agent_unprivileged_with_only_dac_read_search(tmp_path):
    assert os.geteuid() == 0, "ctl runs as root under monit; this test must too (it does in CI)"
    user = pwd.getpwnam("nobody")
    vcap, ctl, env = _vcap_tree(tmp_path)
    secret, other = vcap / "sys/log/other-job/secret.log", vcap / "sys/log/other-job"
    state = vcap / "data/log-shipper"
    pid = None
    try:
        # monit (5.18+) waits for the start program: ctl start must return, the agent running on.
        start = _ctl(ctl, env, "start")
        assert start.returncode == 0, start.stderr
        _wait_for(state / "args", "the agent stand-in never ran: " +
                  (vcap / "sys/log/log-shipper/log-shipper.stderr.log").read_text())
        time.sleep(0.2)

        pid = int((state / "pid").read_text())
        assert (vcap / "sys/run/log-shipper/log-shipper.pid").read_text().strip() == str(pid)
        assert _alive(pid)
        assert (state / "uid").read_text().strip() == str(user.pw_uid)
        caps = dict(line.split(":\t") for line in (state / "caps").read_text().splitlines())
        dac_read_search = 1 << 2
        assert int(caps["CapEff"], 16) == dac_read_search
        assert int(caps["CapBnd"], 16) == dac_read_search
        assert int(caps["CapAmb"], 16) == dac_read_search
        assert caps["NoNewPrivs"].strip() == "1"
        assert (state / "read").read_text() == "only root may read this\n"
        assert (state / "wrote").read_text().strip() == "no"
        assert (state / "args").read_text().strip() == "run"
        # Only the agent's own directories changed hands; the other job's did not.
        assert state.stat().st_uid == user.pw_uid
        assert (vcap / "sys/log/log-shipper").stat().st_uid == user.pw_uid
        assert (secret.stat().st_uid, secret.stat().st_mode & 0o777) == (0, 0o600)
        assert (other.stat().st_uid, other.stat().st_mode & 0o777) == (0, 0o700)
        assert "memory and CPU not capped" in (vcap / "sys/log/log-shipper/log-shipper.stdout.log").read_text()
        # The agent's own logs are the agent user's files, opened after the drop.
        for name in ("log-shipper.stdout.log", "log-shipper.stderr.log"):
            assert (vcap / "sys/log/log-shipper" / name).stat().st_uid == user.pw_uid, name

        again = _ctl(ctl, env, "start")
        assert again.returncode == 0, again.stderr
        assert f"already running as pid {pid}" in (vcap / "sys/log/log-shipper/ctl.log").read_text()

        stop = _ctl(ctl, env, "stop")
        assert stop.returncode == 0, stop.stderr
        assert (state / "exit").read_text() == "TERM\n"  # exited on SIGTERM, not killed
        assert not _alive(pid)
        assert not (vcap / "sys/run/log-shipper/log-shipper.pid").exists()
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv],
                   check=True, capture_output=True, timeout=30)


def test_root_side_scripts_write_through_no_link_the_agents_user_planted(tmp_path):
    """Issue 13: ctl and drain run as root, in a directory the agent's user owns. That user
    replaces their log files with links to root's files; root must not write through them."""
    vcap, ctl, env = _vcap_tree(tmp_path)
    log_dir = _user_log_dir(vcap / "sys/log/log-shipper")
    state = vcap / "data/log-shipper"
    guarded = tmp_path / "root-only"
    guarded.mkdir(mode=0o755)
    targets = {name: guarded / f"{name}.target" for name in
               ("ctl.log", "log-shipper.stderr.log", "drain.log")}
    for t in targets.values():
        t.write_text("root's file\n")
        t.chmod(0o644)
    absent = guarded / "created-by-root"  # a link to a file that does not exist yet
    pid = None
    try:
        assert _ctl(ctl, env, "start").returncode == 0
        # Written by ctl before it returns (the probe's own pid file may still be empty).
        pid = int((vcap / "sys/run/log-shipper/log-shipper.pid").read_text())
        _wait_for(state / "args", "the agent stand-in never ran")

        # While it runs: ctl.log, written by `ctl start` when the agent is already up.
        (log_dir / "ctl.log").unlink(missing_ok=True)
        _as_nobody("ln", "-s", str(targets["ctl.log"]), str(log_dir / "ctl.log"))
        assert _ctl(ctl, env, "start").returncode == 0
        assert _ctl(ctl, env, "stop").returncode == 0
        assert not _alive(pid)

        # Stopped: the agent's stderr and stdout logs, which `ctl start` redirects.
        for name, target in (("log-shipper.stderr.log", targets["log-shipper.stderr.log"]),
                             ("log-shipper.stdout.log", absent)):
            (log_dir / name).unlink()
            _as_nobody("ln", "-s", str(target), str(log_dir / name))
        _ctl(ctl, env, "start")
        time.sleep(1)  # the background start has had its chance to open the logs
        _ctl(ctl, env, "stop")

        # drain.log, written by bin/drain.
        _as_nobody("ln", "-s", str(targets["drain.log"]), str(log_dir / "drain.log"))
        drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
        result = subprocess.run([str(drain)], capture_output=True, text=True, timeout=30,
                                env=_drain_env(vcap / "sys/run/log-shipper/log-shipper.pid", log_dir,
                                               vcap / "packages/log-shipper"))
        assert (result.returncode, result.stdout) == (0, "0\n")

        for name, t in targets.items():
            assert (t.read_text(), t.stat().st_uid) == ("root's file\n", 0), name
        assert not absent.exists()
        assert sorted(p.name for p in guarded.iterdir()) == sorted(t.name for t in targets.values())
    finally:
        pidfile = vcap / "sys/run/log-shipper/log-shipper.pid"
        for p in {pid, int(pidfile.read_text()) if pidfile.exists() else None}:
            if p and _alive(p):
                os.kill(p, signal.SIGKILL)


def test_ctl_refuses_a_link_where_its_own_directory_belongs(tmp_path):
    """chown/chmod of the agent's directories must not follow a link to someone else's."""
    vcap, ctl, env = _vcap_tree(tmp_path)
    victim = tmp_path / "root-dir"
    victim.mkdir(mode=0o700)
    (vcap / "data").mkdir(parents=True, exist_ok=True)
    (vcap / "data/log-shipper").symlink_to(victim)
    result = _ctl(ctl, env, "start")
    assert result.returncode == 1
    assert "refusing" in result.stderr and "symbolic link" in result.stderr
    assert (victim.stat().st_uid, victim.stat().st_mode & 0o777) == (0, 0o700)
    assert not (vcap / "sys/run/log-shipper/log-shipper.pid").exists()


JOB_UID = 64123  # a job's user (vcap on a VM), not the agent's: no name needed for setpriv


def _as_job(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={JOB_UID}", f"--regid={JOB_UID}", "--clear-groups", "--", *argv],
                          check=True, capture_output=True, text=True, timeout=30)


def _run_dir_as_bosh_agent_makes_it(vcap: Path) -> Path:
    """/var/vcap/sys/run/log-shipper as bosh-agent leaves it: root:vcap 0770, a job's to write."""
    run = vcap / "sys/run/log-shipper"
    run.mkdir(parents=True)
    os.chown(run, 0, JOB_UID)
    run.chmod(0o770)
    return run


def _spawn_victim(tmp_path: Path) -> subprocess.Popen:
    """Another job's live process (root's here), which records any signal it gets."""
    got = tmp_path / "victim-signals"
    proc = subprocess.Popen(["bash", "-c", f"trap 'echo TERM >>{got}' TERM; touch {got}; while :; do sleep 0.1; done"])
    _wait_for(got, "victim did not start")
    return proc


def test_ctl_writes_through_no_pidfile_link_and_trusts_no_planted_pid(tmp_path):
    """Issue 31, finding 1: root's ctl writes the pidfile in a directory a job can write, and
    believes and signals the pid it finds there."""
    vcap, ctl, env = _vcap_tree(tmp_path)
    run = _run_dir_as_bosh_agent_makes_it(vcap)
    pidfile, state = run / "log-shipper.pid", vcap / "data/log-shipper"
    guarded = tmp_path / "shadow"  # any root file, e.g. /etc/shadow
    guarded.write_text("root:$6$hash:19000:0:99999:7:::\n")
    guarded.chmod(0o640)
    victim = _spawn_victim(tmp_path)
    agents: list[int] = []
    try:
        # A link to a root file: root must not write the agent's pid through it.
        _as_job("ln", "-s", str(guarded), str(pidfile))
        assert _ctl(ctl, env, "start").returncode == 0
        _wait_for(state / "args", "the agent stand-in never ran")
        agents.append(int(pidfile.read_text()))
        assert guarded.read_text() == "root:$6$hash:19000:0:99999:7:::\n" and guarded.stat().st_uid == 0
        assert not pidfile.is_symlink() and (pidfile.stat().st_uid, pidfile.stat().st_nlink) == (0, 1)
        assert (run.stat().st_uid, run.stat().st_gid, run.stat().st_mode & 0o777) == (0, 0, 0o755)
        assert agents[0] == int((state / "pid").read_text()) and _alive(agents[0])
        ctl_log = vcap / "sys/log/log-shipper/ctl.log"
        assert f"removed {pidfile}: not a pidfile ctl wrote" in ctl_log.read_text()
        # The job can no longer plant anything there.
        with pytest.raises(subprocess.CalledProcessError):
            _as_job("sh", "-c", f"echo {victim.pid} >{run}/planted")
        assert _ctl(ctl, env, "stop").returncode == 0
        assert not _alive(agents[0])

        # A planted live pid: the job's own file, then root's stale pidfile whose pid now names
        # another process. Neither makes start say "already running"; stop signals neither.
        for owner in (JOB_UID, 0):
            (state / "args").unlink()
            run.chmod(0o777)
            pidfile.write_text(f"{victim.pid}\n")
            os.chown(pidfile, owner, owner)
            stop = _ctl(ctl, env, "stop")
            assert stop.returncode == 0 and _alive(victim.pid), stop.stderr
            assert _ctl(ctl, env, "start").returncode == 0
            _wait_for(state / "args", f"the agent did not start past a planted pid (owner {owner})")
            agents.append(int(pidfile.read_text()))
            assert agents[-1] == int((state / "pid").read_text()) != victim.pid
            assert "already running" not in ctl_log.read_text()
            assert _ctl(ctl, env, "stop").returncode == 0
            assert not _alive(agents[-1])
        assert f"names pid {victim.pid}, which is not the agent: ignored, not signalled" in ctl_log.read_text()

        # drain, given a pidfile that names the victim, does not signal it either.
        pidfile.write_text(f"{victim.pid}\n")
        log_dir = vcap / "sys/log/log-shipper"
        drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
        result = subprocess.run([str(drain)], capture_output=True, text=True, timeout=30,
                                env=_drain_env(pidfile, log_dir, vcap / "packages/log-shipper"))
        assert (result.returncode, result.stdout) == (0, "0\n")
        assert f"names pid {victim.pid}, which is not the agent: not signalled" in (log_dir / "drain.log").read_text()
        assert _alive(victim.pid) and (tmp_path / "victim-signals").read_text() == ""
    finally:
        victim.kill()
        for p in agents:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
