"""The BOSH release: the packaging script run for real from wheels with no index, and the
release directory checked the way `bosh create-release` would check it.

There is no bosh CLI here (the Go module proxy refuses every bosh-cli version), so the
structural checks below stand in for create-release; they do not replace running it."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bosh.conftest import HOSTS, JOB, RELEASE, render, ruby_yaml

# Packages that come into bosh/packages only through `bosh vendor-package`, which needs the
# bosh CLI and the network; bosh/README.md pins where they come from.
VENDORED = {"python-3.11": "bosh vendor-package python-3.11"}
PYTHON_RELEASE_VERSION = "0.34.0"


def _python311() -> str:
    exe = shutil.which("python3.11")
    assert exe, "python3.11 is needed to compile the package as the stemcell's python-3.11 would"
    return exe


def _compile(tmp_path: Path, wheels: Path) -> tuple[subprocess.CompletedProcess, Path]:
    compile_dir = tmp_path / "compile"
    shutil.copytree(wheels, compile_dir / "log-shipper-wheels")
    install = tmp_path / "install"
    install.mkdir()
    # Any attempt to reach an index would hit a dead proxy: the compile must be offline.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BOSH_COMPILE_TARGET": str(compile_dir),
        "BOSH_INSTALL_TARGET": str(install),
        "LOG_SHIPPER_BUILD_PYTHON": _python311(),
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
        "PIP_CONFIG_FILE": os.devnull,
    }
    result = subprocess.run(["bash", str(RELEASE / "packages/log-shipper/packaging")], cwd=compile_dir, env=env,
                            capture_output=True, text=True, timeout=300)
    return result, install


def test_packaging_installs_the_agent_offline_from_wheels(tmp_path, wheels):
    result, install = _compile(tmp_path, wheels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--no-index" in (RELEASE / "packages/log-shipper/packaging").read_text()

    # Run away from this checkout (cwd, environment), so only the install can answer.
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60)

    exe = install / "bin" / "log-shipper"
    help_ = run(str(exe), "--help")
    assert help_.returncode == 0, help_.stderr
    assert "check-config" in help_.stdout
    where = run(str(install / "bin/python"), "-c", "import agent; print(agent.__file__)")
    assert where.stdout.startswith(str(install)), where.stdout + where.stderr
    # The installed agent accepts a config the job renders.
    cfg = tmp_path / "config.json"
    cfg.write_text(render("config.json.erb", HOSTS))
    ok = run(str(exe), "check-config", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr


def test_packaging_fails_when_a_dependency_wheel_is_missing(tmp_path, wheels):
    partial = tmp_path / "partial"
    shutil.copytree(wheels, partial)
    for whl in partial.glob("click-*.whl"):
        whl.unlink()
    result, _ = _compile(tmp_path, partial)
    assert result.returncode != 0
    assert "click" in (result.stdout + result.stderr).lower()


@pytest.fixture(scope="module")
def assembled(tmp_path_factory, wheels) -> Path:
    """The release directory as `make release` assembles it, from the prebuilt wheels."""
    out = tmp_path_factory.mktemp("release") / "log-shipper-release"
    # PATH without a bosh CLI, as on this machine; PYTHON: whichever venv runs the tests.
    env = dict(os.environ, RELEASE_DIR=str(out), WHEELS_DIR=str(wheels), PATH="/usr/bin:/bin", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(RELEASE / "scripts/make-release.sh")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no bosh CLI on PATH" in result.stderr
    return out


def _glob_files(base: Path, pattern: str) -> list[Path]:
    """BOSH package `files` globs (`*` within a name, `**` across directories)."""
    rx = re.compile("^" + "".join(
        ".*" if part == "**" else fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z")
        for part in re.split(r"(\*\*)", pattern)) + "$")
    return [p for p in base.rglob("*") if p.is_file() and rx.match(p.relative_to(base).as_posix())]


def validate_release(root: Path) -> list[str]:
    """What `bosh create-release` refuses, as a list of problems (empty: fine)."""
    problems = []
    final = ruby_yaml((root / "config/final.yml").read_text()) or {}
    if not final.get("name"):
        problems.append("config/final.yml: no name")
    blobs = ruby_yaml((root / "config/blobs.yml").read_text()) or {}
    if not isinstance(blobs, dict):
        problems.append("config/blobs.yml: not a map")
        blobs = {}
    for name, entry in blobs.items():
        f = root / "blobs" / name
        if not f.is_file():
            problems.append(f"blobs.yml: {name}: no file under blobs/")
            continue
        if entry.get("size") != f.stat().st_size:
            problems.append(f"blobs.yml: {name}: size {entry.get('size')} != {f.stat().st_size}")
        if entry.get("sha") != "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest():
            problems.append(f"blobs.yml: {name}: sha mismatch")

    packages = {}
    for spec_file in sorted((root / "packages").glob("*/spec")):
        spec = ruby_yaml(spec_file.read_text())
        pdir = spec_file.parent
        packages[spec["name"]] = spec
        if spec["name"] != pdir.name:
            problems.append(f"package {pdir.name}: spec name is {spec['name']}")
        if not (pdir / "packaging").is_file():
            problems.append(f"package {pdir.name}: no packaging script")
        for pattern in spec.get("files") or []:
            if not (_glob_files(root / "src", pattern) + _glob_files(root / "blobs", pattern)):
                problems.append(f"package {pdir.name}: files glob {pattern!r} matches nothing in src/ or blobs/")
    known = set(packages) | {p.parent.name for p in (root / "packages").glob("*/spec.lock")}

    def need(pkg: str, who: str) -> None:
        if pkg not in known and pkg not in VENDORED:
            problems.append(f"{who}: package {pkg!r} is not in packages/")

    for name, spec in packages.items():
        for dep in spec.get("dependencies") or []:
            need(dep, f"package {name}")

    jobs = sorted((root / "jobs").glob("*/spec"))
    if not jobs:
        problems.append("no jobs")
    for spec_file in jobs:
        jdir = spec_file.parent
        spec = ruby_yaml(spec_file.read_text())
        if spec["name"] != jdir.name:
            problems.append(f"job {jdir.name}: spec name is {spec['name']}")
        if not (jdir / "monit").is_file():
            problems.append(f"job {jdir.name}: no monit file")
        for template in spec.get("templates") or {}:
            if not (jdir / "templates" / template).is_file():
                problems.append(f"job {jdir.name}: template {template} is missing")
        for pkg in spec.get("packages") or []:
            need(pkg, f"job {jdir.name}")
    return problems


def test_assembled_release_passes_the_create_release_checks(assembled):
    assert validate_release(assembled) == []
    # A copy holds the jobs themselves; a link would dangle outside the repo.
    assert (assembled / "jobs").is_dir() and not (assembled / "jobs").is_symlink()
    names = {p.name.split("-")[0] for p in (assembled / "blobs/log-shipper-wheels").glob("*.whl")}
    assert {"log_shipper", "click", "orjson", "elasticsearch", "watchdog", "tenacity"} <= names


def test_the_checks_catch_a_broken_release(assembled, tmp_path):
    """The validator must fail on what create-release fails on, or its pass means nothing."""
    broken = tmp_path / "broken"
    shutil.copytree(assembled, broken)
    (broken / "jobs/log-shipper/templates/drain.erb").unlink()
    shutil.rmtree(broken / "blobs/log-shipper-wheels")
    (broken / "config/final.yml").write_text("---\nblobstore: {provider: local}\n")
    spec = broken / "jobs/log-shipper/spec"
    spec.write_text(spec.read_text().replace("- log-shipper\n", "- log-shipper\n- no-such-package\n", 1))
    problems = "\n".join(validate_release(broken))
    assert "template drain.erb is missing" in problems
    assert "matches nothing" in problems
    assert "no file under blobs/" in problems
    assert "final.yml: no name" in problems
    assert "'no-such-package' is not in packages/" in problems


def test_release_root_in_the_repo_links_the_top_level_jobs():
    assert (RELEASE / "jobs").resolve() == JOB.parent.resolve()
    assert (RELEASE / "jobs/log-shipper/spec").is_file()
    assert ruby_yaml((RELEASE / "config/final.yml").read_text())["name"] == "log-shipper"
    assert ruby_yaml((RELEASE / "config/blobs.yml").read_text()) is not None


def test_vendored_runtime_is_pinned_and_documented():
    job = ruby_yaml((JOB / "spec").read_text())
    pkg = ruby_yaml((RELEASE / "packages/log-shipper/spec").read_text())
    assert set(VENDORED) <= set(job["packages"])
    assert set(VENDORED) <= set(pkg["dependencies"])
    readme = (RELEASE / "README.md").read_text()
    for command in VENDORED.values():
        assert command in readme
    assert f"v{PYTHON_RELEASE_VERSION}" in readme


def test_runtime_config_is_a_valid_addon_for_this_job():
    rc = ruby_yaml((RELEASE / "runtime-config.yml").read_text())
    assert rc["releases"][0]["name"] == "log-shipper"
    (addon,) = rc["addons"]
    (job,) = addon["jobs"]
    assert (job["name"], job["release"]) == ("log-shipper", "log-shipper")
    assert addon["include"] and addon["exclude"]
    # Every property it sets is one the job declares.
    declared = set(ruby_yaml((JOB / "spec").read_text())["properties"])

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and f"{prefix}{k}" not in declared:
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    assert set(leaves(job["properties"])) <= declared
