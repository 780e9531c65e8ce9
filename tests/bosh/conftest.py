"""Helpers for the BOSH release tests: render templates with real Ruby ERB, parse YAML
with Ruby (PyYAML is not a dependency), find the real bosh CLI, and build the release
tarball with it once per session."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "log-shipper"
RELEASE = REPO / "bosh"
RENDER_RB = Path(__file__).with_name("render.rb")
LOG_SHIPPER = Path(sys.executable).with_name("log-shipper")
STANDIN = Path(__file__).with_name("test-only-python-3.11")

# What a director hands a template for instance router/2 in deployment cf.
SPEC = {
    "deployment": "cf",
    "name": "router",
    "index": 2,
    "id": "5f1c0a9e-7d4e-4c8e-9a55-0c1d2e3f4a5b",
    "az": "z1",
    "address": "10.0.16.7",
    "ip": "10.0.16.7",
    "bootstrap": False,
}

HOSTS = {"log_shipper": {"elasticsearch": {"hosts": ["https://es.example.com:9200"]}}}


class RenderError(Exception):
    pass


def render(template: str, properties: dict, spec: dict | None = None, job: Path = JOB) -> str:
    """Render <job>/<template> as the director would; RenderError carries Ruby's message.

    job: jobs/log-shipper by default, or a job unpacked from a release tarball (job.MF)."""
    ctx = json.dumps({"properties": properties, "spec": SPEC if spec is None else spec})
    path = job / template if template == "monit" else job / "templates" / template
    job_spec = job / "spec" if (job / "spec").exists() else job / "job.MF"
    proc = subprocess.run(
        ["ruby", str(RENDER_RB), str(job_spec), str(path), "/dev/stdin"],
        input=ctx, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return proc.stdout


def ruby_yaml(text: str):
    """Parse YAML the way a Ruby/Go tool would see it, returned as plain Python via JSON."""
    proc = subprocess.run(
        ["ruby", "-ryaml", "-rjson", "-e", "puts JSON.generate(YAML.safe_load(STDIN.read))"],
        input=text, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(proc.stdout)


def check_config(path: Path, exe: Path = LOG_SHIPPER) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "check-config", "--config", str(path)], capture_output=True, text=True, timeout=60)


# Where the CLI comes from, said once: in the skip reason of every test that needed it, and in
# the run's closing line (tests/conftest.py counts the skips that start with NO_BOSH_CLI).
NO_BOSH_CLI = "no bosh CLI"
GET_BOSH_CLI = ("get v7.10.6 (bosh/README.md) from the cloudfoundry/bosh-cli GitHub releases, then set BOSH_CLI, "
                "put bosh on PATH or place it at ../shared/tools/bosh")


def find_bosh_cli() -> str | None:
    """The real bosh CLI, found as make-release.sh finds it; never vendored by the project."""
    candidates = [os.environ.get("BOSH_CLI"), shutil.which("bosh"), str(REPO.parent / "shared/tools/bosh")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def bosh_cli() -> str:
    """The CLI; without one a test that needs it does not run, except under CI, where it fails."""
    cli = find_bosh_cli()
    if cli is not None:
        return cli
    message = f"{NO_BOSH_CLI}: {GET_BOSH_CLI}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (CI=true: the BOSH tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def tmp_path(request) -> Iterator[Path]:
    """A temp dir outside pytest's /tmp/pytest-of-<user>: the scripts tested here drop to an
    unprivileged user who must traverse to it, and every pytest session that starts on the machine
    resets that root to 0700, cutting the traversal mid-test (ctl's test failed so while another
    run started). Kept when the test fails, like pytest's own."""
    failed_before = request.session.testsfailed
    name = re.sub(r"[^\w.-]", "_", request.node.name)[:40]  # a parameter id may hold a "/"
    path = Path(tempfile.mkdtemp(prefix=f"log-shipper-{name}-"))
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Release:
    dir: Path       # the assembled release directory (a copy, never bosh/ itself)
    tarball: Path
    unpacked: Path  # the tarball extracted: release.MF, jobs/*.tgz, packages/*.tgz

    def package(self, name: str) -> Path:
        """packages/<name>.tgz of the tarball, extracted (what a compilation VM receives)."""
        out = self.unpacked / "packages" / name
        if not out.exists():
            with tarfile.open(self.unpacked / "packages" / f"{name}.tgz") as t:
                t.extractall(out, filter="tar")
        return out

    def job(self, name: str) -> Path:
        out = self.unpacked / "jobs" / name
        if not out.exists():
            with tarfile.open(self.unpacked / "jobs" / f"{name}.tgz") as t:
                t.extractall(out, filter="tar")
        return out


def make_release(release_dir: Path, tarball: Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    """`make release` into a copy, with the test-only python-3.11 stand-in, by the real CLI."""
    full_env = dict(os.environ, RELEASE_DIR=str(release_dir), TARBALL=str(tarball), PYTHON=sys.executable,
                    BOSH_CLI=bosh_cli(), TEST_ONLY_PYTHON_STANDIN=str(STANDIN), HOME=str(home), **env)
    return subprocess.run(["bash", str(RELEASE / "scripts/make-release.sh")], env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Release:
    base = tmp_path_factory.mktemp("release")
    result = make_release(base / "log-shipper-release", base / "log-shipper.tgz", base)
    assert result.returncode == 0, result.stdout + result.stderr
    unpacked = base / "unpacked"
    with tarfile.open(base / "log-shipper.tgz") as t:
        t.extractall(unpacked, filter="tar")
    return Release(base / "log-shipper-release", base / "log-shipper.tgz", unpacked)


@pytest.fixture(scope="session")
def wheels(release) -> Path:
    """The wheels inside the release tarball's log-shipper package."""
    return release.package("log-shipper") / "log-shipper-wheels"
