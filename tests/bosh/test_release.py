"""The BOSH release built by the real bosh CLI (`make release`, with the test-only python-3.11
stand-in), its tarball checked, the packaging script run from the tarball's wheels with no
index, and the runtime config interpolated by `bosh interpolate`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.bosh.conftest import HOSTS, JOB, RELEASE, REPO, STANDIN, bosh_cli, check_config, render, ruby_yaml

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
    # As on a compilation VM: the install target is a link to the package's versioned directory.
    (tmp_path / "data/packages/log-shipper/1").mkdir(parents=True)
    install = tmp_path / "install"
    install.symlink_to(tmp_path / "data/packages/log-shipper/1")
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
    assert exe.read_text().splitlines()[0] == f"#!{install}/bin/python"
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


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def bosh_package_fingerprint(pkg: Path, dependencies: list[str]) -> str:
    """BOSH's v2 package fingerprint, computed here independently of the CLI: per file its
    path, digest and git-like mode (none for the packaging script), then the dependencies."""
    chunks = ["v2"]
    for f in sorted((p for p in pkg.rglob("*") if p.is_file()), key=lambda p: p.relative_to(pkg).as_posix()):
        rel = f.relative_to(pkg).as_posix()
        mode = "" if rel in ("packaging", "pre_packaging") else ("100755" if f.stat().st_mode & 0o111 else "100644")
        chunks.append(rel + _sha256(f) + mode)
    if dependencies:
        chunks.append(",".join(sorted(dependencies)))
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


def test_release_manifest_lists_the_job_and_packages_with_their_digests(release):
    mf = ruby_yaml((release.unpacked / "release.MF").read_text())
    # The stand-in python-3.11 makes it a test release, and its name says so.
    assert (mf["name"], mf["version"]) == ("log-shipper-test-standin", "0+dev.1")
    assert [j["name"] for j in mf["jobs"]] == ["log-shipper"]
    assert mf["jobs"][0]["packages"] == ["python-3.11", "log-shipper"]
    assert sorted(p["name"] for p in mf["packages"]) == ["log-shipper", "python-3.11"]
    for kind, entries in (("jobs", mf["jobs"]), ("packages", mf["packages"])):
        for e in entries:
            assert e["sha1"] == _sha256(release.unpacked / kind / f"{e['name']}.tgz"), e["name"]
            assert e["version"] == e["fingerprint"]  # a dev release versions by fingerprint


def test_package_fingerprints_are_those_of_the_packaged_files(release):
    mf = ruby_yaml((release.unpacked / "release.MF").read_text())
    for p in mf["packages"]:
        pkg = release.package(p["name"])
        assert bosh_package_fingerprint(pkg, p["dependencies"]) == p["fingerprint"], p["name"]
    # The packaged wheels are the staged blobs, byte for byte.
    pkg_wheels = sorted((release.package("log-shipper") / "log-shipper-wheels").glob("*.whl"))
    blobs = sorted((release.dir / "blobs/log-shipper-wheels").glob("*.whl"))
    assert [w.name for w in pkg_wheels] == [b.name for b in blobs]
    assert all(w.read_bytes() == b.read_bytes() for w, b in zip(pkg_wheels, blobs))
    assert (release.package("log-shipper") / "packaging").read_bytes() == \
        (RELEASE / "packages/log-shipper/packaging").read_bytes()
    assert "TEST-ONLY STAND-IN" in (release.package("python-3.11") / "packaging").read_text()


def test_job_in_the_tarball_is_the_repo_job(release):
    job = release.job("log-shipper")
    mf = ruby_yaml((job / "job.MF").read_text())
    spec = ruby_yaml((JOB / "spec").read_text())
    assert mf["name"] == "log-shipper"
    assert mf["templates"] == spec["templates"]
    assert mf["packages"] == spec["packages"]
    assert mf["properties"] == spec["properties"]
    for template in spec["templates"]:
        assert (job / "templates" / template).read_bytes() == (JOB / "templates" / template).read_bytes(), template
    assert (job / "monit").read_bytes() == (JOB / "monit").read_bytes()


def test_wheels_inside_are_this_agent_and_its_dependencies_for_the_stemcell(wheels):
    names = {w.name.split("-")[0].lower() for w in wheels.glob("*.whl")}
    assert {"log_shipper", "click", "orjson", "elasticsearch", "elastic_transport", "watchdog", "tenacity",
            "prometheus_client", "urllib3", "certifi"} <= names
    for w in wheels.glob("*.whl"):
        tags = w.name.removesuffix(".whl").split("-")[-3:]
        assert tags[0] in ("py3", "py2.py3", "cp311"), w.name
        assert tags[2] == "any" or "x86_64" in tags[2] and "manylinux" in tags[2], w.name
    (agent_wheel,) = wheels.glob("log_shipper-*.whl")
    with zipfile.ZipFile(agent_wheel) as z:
        for module in ("agent/cli.py", "agent/pipeline.py", "agent/kibana/objects.ndjson"):
            assert z.read(module) == (REPO / module).read_bytes(), module


def _create_release(release_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([bosh_cli(), "create-release", "--dir", str(release_dir), "--force",
                           "--tarball", str(tmp_path / "out.tgz")],
                          env=dict(os.environ, HOME=str(tmp_path)), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("breakage, message", [
    ("missing template", "drain.erb"),
    ("missing wheels", "Missing files for pattern 'log-shipper-wheels/*.whl'"),
    ("no src dir", "/src: no such file or directory"),
])
def test_the_real_cli_refuses_a_broken_release(release, tmp_path, breakage, message):
    """The tarball checks above mean something only if the CLI refuses what is broken."""
    broken = tmp_path / "broken"
    shutil.copytree(release.dir, broken, symlinks=True)
    if breakage == "missing template":
        (broken / "jobs/log-shipper/templates/drain.erb").unlink()
    elif breakage == "missing wheels":
        shutil.rmtree(broken / "blobs/log-shipper-wheels")
        (broken / "config/blobs.yml").write_text("{}\n")
    else:  # what every operator's first create-release hit before make-release made src/
        shutil.rmtree(broken / "src")
    result = _create_release(broken, tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_make_release_refuses_without_the_vendored_runtime(release, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TEST_ONLY_PYTHON_STANDIN"}
    copy = tmp_path / "rel"
    shutil.copytree(release.dir, copy, symlinks=True)
    shutil.rmtree(copy / "packages/python-3.11")
    result = subprocess.run(["bash", str(RELEASE / "scripts/make-release.sh")],
                            env=dict(env, RELEASE_DIR=str(copy), BOSH_CLI=bosh_cli(), HOME=str(tmp_path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "bosh vendor-package python-3.11" in result.stderr
    # The stand-in never goes into the repo's release directory.
    result = subprocess.run(["bash", str(RELEASE / "scripts/make-release.sh")],
                            env=dict(env, TEST_ONLY_PYTHON_STANDIN=str(STANDIN), BOSH_CLI=bosh_cli()),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "needs RELEASE_DIR" in result.stderr


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


def _interpolate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bosh_cli(), "interpolate", str(RELEASE / "runtime-config.yml"),
                           "-l", str(RELEASE / "vars.example.yml"), "--var-errs", *args],
                          capture_output=True, text=True, timeout=60)


def test_runtime_config_interpolates_and_its_properties_pass_check_config(tmp_path):
    # With only the example vars, exactly the CredHub variables are left for the director.
    missing = _interpolate()
    assert missing.returncode != 0
    assert re.findall(r"^\s+- (\S+)$", missing.stdout + missing.stderr, re.M) == \
        ["log_shipper_es_api_key", "log_shipper_es_ca"]

    ca = "-----BEGIN CERTIFICATE-----\nMIIBfakeCA\n-----END CERTIFICATE-----\n"
    credhub = tmp_path / "credhub.yml"
    credhub.write_text(json.dumps({"log_shipper_es_api_key": "aWQ6a2V5", "log_shipper_es_ca": {"certificate": ca}}))
    result = _interpolate("-l", str(credhub))
    assert result.returncode == 0, result.stderr
    rc = ruby_yaml(result.stdout)
    props = rc["addons"][0]["jobs"][0]["properties"]
    assert props["log_shipper"]["elasticsearch"]["hosts"] == ["https://es-1.example.com:9200",
                                                                "https://es-2.example.com:9200"]
    assert rc["releases"][0]["version"] == "latest"
    cfg = tmp_path / "config.json"
    cfg.write_text(render("config.json.erb", props).replace("/var/vcap/jobs/log-shipper/config", str(tmp_path)))
    (tmp_path / "ca.pem").write_text(render("ca.pem.erb", props))
    ok = check_config(cfg)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(cfg.read_text())["bosh"]["director"] == "bosh-prod-eu"
