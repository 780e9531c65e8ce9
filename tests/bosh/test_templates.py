"""Job templates rendered with real Ruby ERB, checked against the real agent CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest

from agent import config as agent_config
from tests.bosh.conftest import HOSTS, JOB, SPEC, RenderError, check_config, render, ruby_yaml

JOB_CONFIG_DIR = "/var/vcap/jobs/log-shipper/config"

PEM_CA = "-----BEGIN CERTIFICATE-----\nMIIBfakeCA\n-----END CERTIFICATE-----"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBfakeCLIENT\n-----END CERTIFICATE-----"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIBfakeKEY\n-----END PRIVATE KEY-----"


def props(**log_shipper) -> dict:
    p = copy.deepcopy(HOSTS)
    for key, value in log_shipper.items():
        p["log_shipper"][key] = value
    return p


def render_config(properties: dict, spec: dict | None = None) -> dict:
    return json.loads(render("config.json.erb", properties, spec))


def write_job_config(tmp_path: Path, properties: dict, spec: dict | None = None) -> Path:
    """Render config.json and the PEM templates into tmp_path, as the director lays out
    /var/vcap/jobs/log-shipper/config, with the config's paths pointing there."""
    text = render("config.json.erb", properties, spec)
    for template, name in (("ca.pem.erb", "ca.pem"), ("client.pem.erb", "client.pem"), ("client.key.erb", "client.key")):
        (tmp_path / name).write_text(render(template, properties, spec))
    path = tmp_path / "config.json"
    path.write_text(text.replace(JOB_CONFIG_DIR, str(tmp_path)))
    return path


def test_defaults_with_hosts_pass_check_config_and_carry_bosh_metadata(tmp_path):
    path = write_job_config(tmp_path, HOSTS)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "config ok: 1 Elasticsearch host(s), target index logs-bosh-default" in result.stdout

    cfg = json.loads(path.read_text())
    # The same meanings as syslog-release's structured data.
    assert cfg["bosh"] == {
        "director": "",
        "environment": "",
        "deployment": "cf",
        "instance_group": "router",
        "index": 2,
        "id": SPEC["id"],
        "az": "z1",
        "ip": "10.0.16.7",
    }
    assert cfg["state_dir"] == "/var/vcap/data/log-shipper"
    assert cfg["inputs"]["root"] == "/var/vcap/sys/log"
    assert cfg["inputs"]["exclude"] == ["log-shipper/**"]
    assert cfg["health"] == {"host": "127.0.0.1", "port": 17878}
    # No TLS or auth unless asked for.
    assert not {"ca_file", "client_cert", "client_key", "username", "password", "api_key"} & set(cfg["elasticsearch"])


def test_spec_defaults_are_the_agents_defaults(tmp_path):
    """The spec repeats the agent's defaults for operators to read; they must not drift."""
    path = write_job_config(tmp_path, HOSTS)
    cfg = agent_config.load(path)
    d = agent_config.Config()
    assert cfg.target == d.target
    assert cfg.dead_letter == d.dead_letter
    assert cfg.batch == d.batch
    assert cfg.health == d.health
    assert cfg.fleet == d.fleet
    assert cfg.spool == d.spool
    assert cfg.inputs == d.inputs
    assert cfg.formats == d.formats
    assert cfg.state_dir == d.state_dir
    assert cfg.price_per_gib == d.price_per_gib
    assert dataclasses.replace(cfg.elasticsearch, hosts=d.elasticsearch.hosts) == d.elasticsearch
    assert dataclasses.replace(cfg.reader, max_open_files=d.reader.max_open_files) == d.reader


def test_several_hosts_api_key_formats_and_extra_paths(tmp_path):
    formats = [
        {"glob": "uaa/*.log", "format": "raw", "multiline": {"start": r"^\[\d{4}-", "max_lines": 200}},
        {"glob": "**", "format": "raw"},
    ]
    p = props(
        elasticsearch={"hosts": ["https://es1:9200", "https://es2:9200", "https://es3:9200"], "api_key": "aWQ6a2V5",
                       "compression": True},
        target={"kind": "data_stream", "name": "logs-bosh-prod"},
        extra_paths=["/var/vcap/monit/monit.log"],
        exclude=["*/audit.log"],
        director="bosh-eu",
        environment="prod-eu",
        formats=formats,
        max_line_bytes=65536,
        batch={"max_inflight_bytes": 67108864, "concurrency": 4},
        price_per_gib=0.25,
    )
    path = write_job_config(tmp_path, p)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "3 Elasticsearch host(s), target data_stream logs-bosh-prod" in result.stdout

    cfg = json.loads(path.read_text())
    assert cfg["elasticsearch"]["api_key"] == "aWQ6a2V5"
    assert cfg["elasticsearch"]["compression"] is True
    assert cfg["formats"] == formats
    assert cfg["inputs"]["extra_paths"] == ["/var/vcap/monit/monit.log"]
    assert cfg["inputs"]["exclude"] == ["log-shipper/**", "*/audit.log"]
    assert cfg["bosh"]["director"] == "bosh-eu" and cfg["bosh"]["environment"] == "prod-eu"
    assert cfg["reader"]["max_line_bytes"] == 65536
    assert cfg["batch"]["max_inflight_bytes"] == 67108864 and cfg["batch"]["concurrency"] == 4
    assert cfg["price_per_gib"] == 0.25


def test_tls_pems_are_written_to_files_the_config_points_at(tmp_path):
    p = props(elasticsearch={
        "hosts": ["https://es:9200"], "username": "shipper", "password": "s3cret",
        "tls": {"ca": PEM_CA, "certificate": PEM_CERT, "private_key": PEM_KEY},
    })
    cfg = render_config(p)
    es = cfg["elasticsearch"]
    assert es["ca_file"] == f"{JOB_CONFIG_DIR}/ca.pem"
    assert es["client_cert"] == f"{JOB_CONFIG_DIR}/client.pem"
    assert es["client_key"] == f"{JOB_CONFIG_DIR}/client.key"
    assert (es["username"], es["password"]) == ("shipper", "s3cret")
    # The spec maps each PEM template to the file name the config names.
    spec = ruby_yaml((JOB / "spec").read_text())
    assert spec["templates"]["ca.pem.erb"] == "config/ca.pem"
    assert spec["templates"]["client.pem.erb"] == "config/client.pem"
    assert spec["templates"]["client.key.erb"] == "config/client.key"

    path = write_job_config(tmp_path, p)
    assert (tmp_path / "ca.pem").read_text().strip() == PEM_CA
    assert (tmp_path / "client.pem").read_text().strip() == PEM_CERT
    assert (tmp_path / "client.key").read_text().strip() == PEM_KEY
    result = check_config(path)
    assert result.returncode == 0, result.stderr

    # The agent really checks those files: without them the same config is refused.
    (tmp_path / "ca.pem").unlink()
    result = check_config(path)
    assert result.returncode != 0 and "elasticsearch.ca_file" in result.stderr


@pytest.mark.parametrize(
    "properties, message",
    [
        ({"log_shipper": {}}, "log_shipper.elasticsearch.hosts is required"),
        ({"log_shipper": {"elasticsearch": {"hosts": []}}}, "log_shipper.elasticsearch.hosts is required"),
        ({"log_shipper": {"elasticsearch": {"hosts": ["https://a:9200", "es:9200"]}}},
         "log_shipper.elasticsearch.hosts[1] must start with http:// or https://"),
        (props(elasticsearch={"hosts": ["https://a"], "username": "u", "password": "p", "api_key": "k"}),
         "set either api_key or username/password"),
        (props(elasticsearch={"hosts": ["https://a"], "username": "u"}), "username and log_shipper.elasticsearch.password go together"),
        (props(elasticsearch={"hosts": ["https://a"], "tls": {"certificate": PEM_CERT}}), "tls.private_key go together"),
    ],
)
def test_operator_mistakes_fail_at_render_time_with_a_clear_message(properties, message):
    with pytest.raises(RenderError) as e:
        render("config.json.erb", properties)
    assert message in str(e.value)


def test_ship_own_logs_removes_the_self_exclusion():
    cfg = render_config(props(ship_own_logs=True, exclude=["log-shipper/**", "x/**"]))
    assert cfg["inputs"]["exclude"] == ["x/**"]


def test_dns_address_is_not_put_into_the_ip_field():
    spec = dict(SPEC, address="5f1c0a9e.router.default.cf.bosh", ip=None, az=None, index=0)
    cfg = render_config(HOSTS, spec)
    assert cfg["bosh"]["ip"] == ""
    assert cfg["bosh"]["az"] == ""
    assert cfg["bosh"]["index"] == 0
    cfg = render_config(HOSTS, dict(spec, address="10.1.2.3"))
    assert cfg["bosh"]["ip"] == "10.1.2.3"


def _declared() -> set[str]:
    return set(ruby_yaml((JOB / "spec").read_text())["properties"])


def _read_by_templates() -> set[str]:
    names = set()
    files = list((JOB / "templates").glob("*.erb")) + [JOB / "monit"]
    for f in files:
        for call in re.finditer(r"\b(?:if_)?p\(([^)]*)\)", f.read_text()):
            names.update(re.findall(r'"(log_shipper\.[^"]+)"', call.group(1)))
    return names


def test_every_property_read_is_declared_and_every_declared_one_is_read():
    read = _read_by_templates()
    declared = _declared()
    assert read, "the scan found no p()/if_p() calls at all"
    assert read - declared == set(), "read by a template but not declared in the spec"
    assert declared - read == set(), "declared in the spec but never used"
    # Every property says what it is for.
    spec = ruby_yaml((JOB / "spec").read_text())
    assert all(v and v.get("description") for v in spec["properties"].values())


def test_renderer_refuses_undeclared_properties_like_a_director(tmp_path):
    """The renderer must be as strict as BOSH, or the tests above would prove little."""
    spec = tmp_path / "spec"
    spec.write_text("name: x\nproperties:\n  a.b: {description: d, default: 1}\n  a.c: {description: d}\n")
    tpl = tmp_path / "t.erb"
    import subprocess

    from tests.bosh.conftest import RENDER_RB

    def run(body: str) -> subprocess.CompletedProcess:
        tpl.write_text(body)
        ctx = tmp_path / "ctx.json"
        ctx.write_text('{"properties": {"a": {"zzz": 1}}, "spec": {}}')
        return subprocess.run(["ruby", str(RENDER_RB), str(spec), str(tpl), str(ctx)], capture_output=True, text=True)

    assert run('<%= p("a.b") %>').stdout == "1"
    assert "not declared" in run('<%= p("a.zzz", 2) %>').stderr
    assert "Can't find property" in run('<%= p("a.c") %>').stderr
    assert run('<% if_p("a.c") { |v| %>set<% }.else { %>unset<% } %>').stdout == "unset"


@pytest.mark.parametrize("extra_paths", [[], ["/var/vcap/monit/monit.log", "/var/vcap/monit/*.log", "/var/vcap/sys/log/x/*.txt"]])
def test_bpm_yaml_runs_as_reader_with_a_read_only_log_volume(extra_paths):
    bpm = ruby_yaml(render("bpm.yml.erb", props(extra_paths=extra_paths, limits={"memory": "1G"})))
    (proc,) = bpm["processes"]
    assert proc["name"] == "log-shipper"
    spec = ruby_yaml((JOB / "spec").read_text())
    assert proc["executable"] == "/var/vcap/jobs/log-shipper/" + spec["templates"]["log-shipper.erb"]
    assert proc["args"] == ["run"]
    assert proc["capabilities"] == ["DAC_READ_SEARCH"]
    assert proc["ephemeral_disk"] is True  # gives /var/vcap/data/log-shipper
    assert proc["limits"]["memory"] == "1G"
    assert proc["limits"]["open_files"] == 4096
    volumes = proc["unsafe"]["unrestricted_volumes"]
    assert volumes[0] == {"path": "/var/vcap/sys/log", "writable": False, "mount_only": True}
    assert all(v["writable"] is False and v["mount_only"] is True for v in volumes)
    expected = ["/var/vcap/sys/log"] + (["/var/vcap/monit"] if extra_paths else [])
    assert [v["path"] for v in volumes] == expected
    assert "additional_volumes" not in proc  # bpm refuses paths outside /var/vcap/{data,store} there


def test_bpm_rejects_a_malformed_memory_limit():
    with pytest.raises(RenderError, match="log_shipper.limits.memory"):
        render("bpm.yml.erb", props(limits={"memory": "lots"}))


@pytest.mark.parametrize("use_bpm, start, user", [
    (True, "/var/vcap/jobs/bpm/bin/bpm start log-shipper", "vcap"),
    (False, "/var/vcap/jobs/log-shipper/bin/ctl start", "log-shipper"),
])
def test_monit_uses_bpm_or_ctl(use_bpm, start, user):
    monit = render("monit", props(use_bpm=use_bpm))
    assert f'start program "{start}"' in monit
    assert monit.count("check process log-shipper") == 1
    pidfile = re.search(r"with pidfile (\S+)", monit).group(1)
    drain = render("drain.erb", props(use_bpm=use_bpm))
    assert pidfile in drain, "drain must signal the process monit watches"
    # drain signals only a process of the user the agent runs as: bpm's vcap, or ctl's own user.
    assert f'run_as="${{LOG_SHIPPER_USER:-{user}}}"' in drain
    assert f"user={user}" in render("pre-start.erb", props(use_bpm=use_bpm))
