"""Helpers for the BOSH release tests: render templates with real Ruby ERB, parse YAML
with Ruby (PyYAML is not a dependency), and build the agent's wheels once per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "log-shipper"
RELEASE = REPO / "bosh"
RENDER_RB = Path(__file__).with_name("render.rb")
LOG_SHIPPER = Path(sys.executable).with_name("log-shipper")
WHEEL_CACHE = Path(os.environ.get("LOG_SHIPPER_WHEEL_CACHE", "/var/tmp/log-shipper-cache/wheels"))

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


def render(template: str, properties: dict, spec: dict | None = None, tmp_path: Path | None = None) -> str:
    """Render jobs/log-shipper/<template> as the director would; RenderError carries Ruby's message."""
    ctx = json.dumps({"properties": properties, "spec": SPEC if spec is None else spec})
    path = JOB / template if template == "monit" else JOB / "templates" / template
    proc = subprocess.run(
        ["ruby", str(RENDER_RB), str(JOB / "spec"), str(path), "/dev/stdin"],
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


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True,
                   capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """The agent (built from this tree) and all its dependencies as wheels.

    Dependencies are cached under WHEEL_CACHE so that a warm run needs no network; the
    agent's wheel is always rebuilt, since its code is what is under test."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    out = tmp_path_factory.mktemp("wheels")
    _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(REPO))
    agent = next(out.glob("log_shipper-*.whl"))
    try:
        _pip("wheel", "--no-index", "--find-links", str(WHEEL_CACHE), "--wheel-dir", str(WHEEL_CACHE), str(agent))
    except subprocess.CalledProcessError:
        # Cold or stale cache: fetch what is missing from the index once.
        _pip("wheel", "--find-links", str(WHEEL_CACHE), "--wheel-dir", str(WHEEL_CACHE), str(agent))
    for whl in WHEEL_CACHE.glob("*.whl"):
        if not whl.name.startswith("log_shipper-"):
            shutil.copy2(whl, out)
    return out
