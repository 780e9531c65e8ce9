"""Issue 31, finding 2: a job's user plants something at `<state_dir>/agent-id` (a link to a
root-only secret, a FIFO, an id file of its own) and the agent restarts. The real agent (root
here, standing in for CAP_DAC_READ_SEARCH) must not ship the secret as `agent.id`, must not
hang on the FIFO, and replaces what it refused with a fresh id of its own, saying so."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from agent.pipeline import AGENT_ID_RE
from tests.support.agentproc import AgentProcess, all_messages, wait_caught_up, write_config

pytestmark = pytest.mark.es

SECRET = '{"mbus": "nats://SECRET-MARKER:nats-password@10.0.0.6:4222"}\n'
JOB_ID = str(uuid.uuid4())  # an id the job's user chose, e.g. another VM's, to pass for it


def _as_job_user(*argv: str) -> None:
    """argv as "nobody", standing for vcap: an unprivileged uid that can write the state dir."""
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv],
                   check=True, capture_output=True, timeout=30)


def _plant(kind: str, target: Path, secret: Path) -> str:
    """What the job's user puts at `target`; the reason the agent gives for refusing it."""
    if kind == "link":
        _as_job_user("ln", "-s", str(secret), str(target))
        return "a symbolic link"
    if kind == "fifo":
        _as_job_user("mkfifo", str(target))
        return "not a regular file"
    _as_job_user("sh", "-c", 'printf %s "$1" >"$2"', "plant", JOB_ID, str(target))
    return "owned by uid"


@pytest.mark.parametrize("kind", ["link", "fifo", "foreign"])
def test_a_planted_agent_id_is_refused_and_replaced_never_shipped(es, es_node, index_name, tmp_path, kind):
    for d in [tmp_path, *tmp_path.parents][:-1]:
        d.chmod(d.stat().st_mode | 0o011)  # traversable by the job's user, as /var/vcap/data is
    secret = tmp_path / "settings.json"  # root-only, like /var/vcap/bosh/settings.json
    secret.write_text(SECRET)
    secret.chmod(0o600)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)  # a state dir the job's user can write: the boundary that was missing
    reason = _plant(kind, state / "agent-id", secret)

    log_file = tmp_path / "log" / "job" / "job.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("".join(f"line {i}\n" for i in range(50)))
    cfg = write_config(tmp_path / "config.json", es_node.url, tmp_path / "log", state, index_name,
                       formats=[{"glob": "**", "format": "raw"}])
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(state, [log_file], timeout=30)  # a FIFO read would block before the first line
    finally:
        assert agent.stop() == 0

    ids = {d["agent.id"] for d in all_messages(es, index_name, ["agent.id"])}
    assert len(ids) == 1, ids
    aid = ids.pop()
    assert AGENT_ID_RE.fullmatch(aid) and aid != JOB_ID and "SECRET" not in aid, aid
    written = state / "agent-id"
    assert not written.is_symlink() and written.is_file()
    assert (written.read_text(), written.stat().st_uid, written.stat().st_mode & 0o777) == (aid, 0, 0o600)
    assert secret.read_text() == SECRET and secret.stat().st_uid == 0
    warnings = [e for e in map(orjson.loads, agent.log().splitlines()) if e.get("event") == "agent_id_replaced"]
    assert len(warnings) == 1 and warnings[0]["path"] == str(written), warnings
    assert reason in warnings[0]["msg"] and warnings[0]["level"] == "warn", warnings[0]

    # The next start keeps the id it wrote.
    agent = AgentProcess(cfg, tmp_path / "agent2.log").start()
    try:
        with open(log_file, "a") as f:
            f.write("line 50\n")
        wait_caught_up(state, [log_file], timeout=30)
    finally:
        assert agent.stop() == 0
    assert {d["agent.id"] for d in all_messages(es, index_name, ["agent.id"])} == {aid}
    assert "agent_id_replaced" not in agent.log()
