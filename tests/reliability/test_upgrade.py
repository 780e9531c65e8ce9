"""Issue 12: an upgrade in place from the agent as it was before the spool and the journal.

The old agent is the real code of that commit (`git archive`, run from its own directory), with
its registry and state directory as it leaves them; the files keep growing and rotating (the
real logrotate, copytruncate) across the switch. The new agent must carry on exactly where the
old one stopped: every line indexed once. Going back to the old agent, which cannot read the
journal, is refused: the old agent exits at once naming its registry path (which the new agent
made a directory holding a README), rather than starting afresh and missing what is only in
rotated copies.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path

import orjson

from tests.reliability.harness import Scenario
from tests.support.agentproc import AgentProcess

REPO = Path(__file__).resolve().parents[2]
OLD = "782ef38"  # main as issue 12 found it: registry.json (version 1), no spool


def _old_code(tmp: Path) -> Path:
    """The old `agent` package in a directory of its own, from this clone's history."""
    out = tmp / "old-agent"
    out.mkdir()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", OLD, "agent"], capture_output=True)
    assert tar.returncode == 0, f"the old agent ({OLD}) must be in this clone's history: {tar.stderr.decode()}"
    tarfile.open(fileobj=io.BytesIO(tar.stdout)).extractall(out)
    return out


def _old_config(sc: Scenario, tmp: Path) -> Path:
    """The same settings without the sections the old agent does not know (it refuses unknown fields)."""
    cfg = orjson.loads(sc.config.read_bytes())
    cfg.pop("fleet", None)
    path = tmp / "config-old.json"
    path.write_bytes(orjson.dumps(cfg))
    return path


def _run_old(sc: Scenario, code: Path, config: Path) -> AgentProcess:
    # cwd: `python -m` puts the working directory first on sys.path, so the old package is imported.
    sc.agent = AgentProcess(config, sc.tmp / "agent-old.log", cwd=code).start()
    return sc.agent


def test_upgrade_from_the_old_agent_carries_on_and_a_downgrade_duplicates_nothing(es, es_node, index_name, tmp_path):
    code = _old_code(tmp_path)
    sc = Scenario("upgrade", es, es_node.url, index_name, tmp_path)
    old_config = _old_config(sc, tmp_path)
    _run_old(sc, code, old_config)
    sc.start_rotator(size="40k")
    sc.start_writer(lines_per_s=300)
    time.sleep(8)
    assert sc.agent.stop() == 0  # as monit stops a job for an upgrade
    assert (sc.state / "registry.json").exists() and "journal" not in sc.agent.log()

    sc.start_agent()  # the new agent, on the old state directory, files still growing and rotating
    time.sleep(8)
    assert sc.agent.stop() == 0
    assert (sc.state / "registry.log").exists() and (sc.state / "registry.json").is_dir()

    old = _run_old(sc, code, old_config)  # the downgrade: refused, in one line
    assert old.proc.wait(30) == 1
    assert f"{sc.state / 'registry.json'}: Is a directory" in old.log()
    assert "Traceback" not in old.log()

    sc.start_agent()  # and the new agent again carries on
    time.sleep(4)
    sc.stop_load()
    s = sc.tally(timeout=60)
    sc.assert_clean(s)
    assert s.written > 5_000 and s.extra["rotations"] >= 3, s.row()
