"""The job's shell scripts, rendered and run for real: drain against a real process, and
ctl's privilege drop with the real setpriv and kernel capabilities."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
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


def _spawn_flusher(tmp_path: Path, flush_s: float) -> subprocess.Popen:
    """A real process that, like the agent, takes flush_s to finish after SIGTERM."""
    code = textwrap.dedent(f"""
        import signal, sys, time
        def term(*_):
            time.sleep({flush_s})
            open({str(tmp_path / "flushed")!r}, "w").write("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        open({str(tmp_path / "ready")!r}, "w").close()
        while True:
            time.sleep(0.05)
    """)
    # Not reaped until the test is done: drain must tell an exited (zombie) agent from a live one.
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline, "flusher did not start"
        time.sleep(0.05)
    return proc


def test_drain_terms_the_agent_waits_for_its_flush_and_prints_only_zero(tmp_path):
    proc = _spawn_flusher(tmp_path, flush_s=1.0)
    pidfile = tmp_path / "log-shipper.pid"
    pidfile.write_text(f"{proc.pid}\n")
    drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
    env = dict(os.environ, LOG_SHIPPER_PIDFILE=str(pidfile), LOG_SHIPPER_LOG_DIR=str(tmp_path / "log"))

    started = time.monotonic()
    result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
    elapsed = time.monotonic() - started

    assert result.returncode == 0
    assert result.stdout == "0\n"  # the drain protocol: one integer, nothing else
    assert elapsed >= 1.0, "drain returned before the agent had flushed"
    assert (tmp_path / "flushed").read_text() == "yes"
    assert proc.poll() is not None
    assert "exited after" in (tmp_path / "log" / "drain.log").read_text()


def test_drain_gives_up_after_its_timeout_and_still_prints_zero(tmp_path):
    proc = _spawn_flusher(tmp_path, flush_s=30)
    try:
        pidfile = tmp_path / "pid"
        pidfile.write_text(str(proc.pid))
        props = {"log_shipper": {**HOSTS["log_shipper"], "drain_timeout_s": 1}}
        drain = write_script(tmp_path / "drain", render("drain.erb", props))
        env = dict(os.environ, LOG_SHIPPER_PIDFILE=str(pidfile), LOG_SHIPPER_LOG_DIR=str(tmp_path))
        started = time.monotonic()
        result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
        assert result.stdout == "0\n"
        assert 1.0 <= time.monotonic() - started < 10
        assert "still running after 1s" in (tmp_path / "drain.log").read_text()
    finally:
        proc.kill()


def test_drain_with_no_agent_running_prints_zero(tmp_path):
    drain = write_script(tmp_path / "drain", render("drain.erb", HOSTS))
    env = dict(os.environ, LOG_SHIPPER_PIDFILE=str(tmp_path / "absent.pid"), LOG_SHIPPER_LOG_DIR=str(tmp_path))
    result = subprocess.run([str(drain)], capture_output=True, text=True, env=env, timeout=30)
    assert (result.returncode, result.stdout) == (0, "0\n")


# The stand-in for bin/log-shipper: records who it runs as and what it can do, then
# waits for SIGTERM like the agent. What is tested is ctl's setpriv/cap setup around it.
PROBE = """#!/bin/bash
out="$VCAP_ROOT/data/log-shipper"
id -u >"$out/uid"
grep -E '^Cap(Eff|Bnd|Amb):' /proc/self/status >"$out/caps"
grep -E '^NoNewPrivs:' /proc/self/status >>"$out/caps"
cat "$VCAP_ROOT/sys/log/other-job/secret.log" >"$out/read" 2>&1 || true
if echo tampered >>"$VCAP_ROOT/sys/log/other-job/secret.log" 2>/dev/null; then echo yes; else echo no; fi >"$out/wrote"
echo "$*" >"$out/args"
trap 'exit 0' TERM
while :; do sleep 0.1; done
"""


def test_ctl_runs_the_agent_unprivileged_with_only_dac_read_search(tmp_path):
    assert os.geteuid() == 0, "ctl runs as root under monit; this test must too (it does in CI)"
    user = pwd.getpwnam("nobody")
    vcap = tmp_path / "vcap"
    (vcap / "jobs/log-shipper/bin").mkdir(parents=True)
    other = vcap / "sys/log/other-job"
    other.mkdir(parents=True)
    secret = other / "secret.log"
    secret.write_text("only root may read this\n")
    secret.chmod(0o600)
    other.chmod(0o700)
    write_script(vcap / "jobs/log-shipper/bin/log-shipper", PROBE)
    ctl = write_script(tmp_path / "ctl", render("ctl.erb", HOSTS))
    env = dict(os.environ, VCAP_ROOT=str(vcap), LOG_SHIPPER_USER="nobody",
               LOG_SHIPPER_CGROUP_ROOT=str(tmp_path / "no-cgroupfs"))
    # The traversal to the temp tree must not depend on the capability under test.
    for d in [tmp_path, *tmp_path.parents]:
        if d == Path("/"):
            break
        d.chmod(d.stat().st_mode | 0o011)

    agent = subprocess.Popen(["bash", str(ctl), "start"], env=env)
    state = vcap / "data/log-shipper"
    try:
        deadline = time.monotonic() + 15
        while not (state / "args").exists():
            assert agent.poll() is None, f"ctl start exited {agent.returncode}: " + \
                (vcap / "sys/log/log-shipper/log-shipper.stderr.log").read_text()
            assert time.monotonic() < deadline, "the agent stand-in never ran"
            time.sleep(0.05)
        time.sleep(0.2)

        assert (vcap / "sys/run/log-shipper/log-shipper.pid").read_text().strip() == str(agent.pid)
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

        started = time.monotonic()
        stop = subprocess.run(["bash", str(ctl), "stop"], env=env, capture_output=True, text=True, timeout=30)
        assert stop.returncode == 0, stop.stderr
        # The stand-in exits at once on SIGTERM; an unreaped zombie must not hold stop up.
        assert time.monotonic() - started < 5
        assert agent.wait(timeout=10) == 0  # exited on SIGTERM, not killed
        assert not (vcap / "sys/run/log-shipper/log-shipper.pid").exists()
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGKILL)
            agent.wait()
