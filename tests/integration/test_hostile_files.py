"""Issues 13 and 14 on the file side: a job that writes where the agent reads plants links to
secrets, a linked directory, a FIFO and forged registry entries. The real agent (root here,
standing in for CAP_DAC_READ_SEARCH) ships the real logs to the real node, indexes nothing
from outside the root, reports each refused path once and shows it in `offsets`."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agent import health, identity
from tests.support.agentproc import AgentProcess, all_messages, wait_caught_up, write_config
from tests.support.esnode import free_port

pytestmark = pytest.mark.es

SECRET = b"root:$6$SECRET-MARKER-shadow-hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-MARKER-key\n-----END PRIVATE KEY-----\n"


def _events(agent: AgentProcess) -> list[dict]:
    return [orjson.loads(ln) for ln in agent.log().splitlines() if ln.startswith("{")]


def _forged(fid: str, path: Path, like: Path) -> dict:
    """A registry entry that claims `path` and the head of `like` (a root-only file)."""
    data = like.read_bytes()
    st = like.stat()
    return {"fid": fid, "path": str(path), "dev": st.st_dev, "ino": st.st_ino, "head_len": len(data[:256]),
            "head_hash": identity.digest(data[:256]), "offset": 0, "size": len(data), "gone": False}


def _wait(what: str, cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_links_fifos_and_forged_entries_are_refused_once_and_the_rest_ships(es, es_node, index_name, tmp_path):
    secret = tmp_path / "secret"  # root-only, outside the root
    secret.mkdir(mode=0o700)
    (secret / "shadow").write_bytes(SECRET)
    (secret / "shadow-").write_bytes(SECRET)  # /etc/shadow- beside /etc/shadow: a "rotated copy" by name
    (secret / "key.pem").write_bytes(KEY)
    (secret / "inner.log").write_bytes(SECRET)
    for f in secret.iterdir():
        f.chmod(0o600)

    root = tmp_path / "sys" / "log"
    job = root / "myjob"
    job.mkdir(parents=True)
    good, other = job / "good.log", root / "other" / "ok.log"
    other.parent.mkdir()
    good.write_text("".join(f"good line {i}\n" for i in range(300)))
    other.write_text("".join(f"other line {i}\n" for i in range(200)))
    planted = {
        job / "shadow.log": "a symbolic link",
        job / "key.log": "a symbolic link",
        job / "f.log": "a FIFO",
        job / "app.log.1": "a symbolic link",  # the "copy" a forged entry for app.log would read
    }
    (job / "shadow.log").symlink_to(secret / "shadow")
    (job / "key.log").symlink_to(secret / "key.pem")
    os.mkfifo(job / "f.log")
    (job / "app.log.1").symlink_to(secret / "shadow")
    (root / "linked").symlink_to(secret, target_is_directory=True)

    state = tmp_path / "state"
    state.mkdir()
    forged = [_forged("f1", secret / "shadow", secret / "shadow"),  # outside: its "copy" shadow- is not read
              _forged("f2", job / "app.log", secret / "shadow"),  # inside, gone: its copy is a link
              _forged("f3", root / "linked" / "inner.log", secret / "inner.log")]  # through a linked directory
    (state / "registry.json").write_bytes(orjson.dumps({"version": 1, "entries": forged}))

    cfg = write_config(tmp_path / "config.json", es_node.url, root, state, index_name,
                       formats=[{"glob": "**", "format": "raw"}])
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(state, [good, other])
        # Another rescan (every 2 s) and more lines: refused paths are looked at again, not reported again.
        with open(good, "a") as f:
            f.writelines(f"good line {i}\n" for i in range(300, 400))
        wait_caught_up(state, [good, other])
        time.sleep(4.5)
        assert agent.alive()
    finally:
        assert agent.stop() == 0

    messages = Counter(d["message"] for d in all_messages(es, index_name, ["message"]))
    expected = {f"good line {i}" for i in range(400)} | {f"other line {i}" for i in range(200)}
    assert set(messages) == expected and set(messages.values()) == {1}

    refused = Counter(e["path"] for e in _events(agent) if e.get("event") == "file_refused")
    assert all(n == 1 for n in refused.values()), refused
    for path in [*planted, secret / "shadow", root / "linked" / "inner.log"]:
        assert refused[str(path)] == 1, (path, refused)
    reasons = {e["path"]: e["reason"] for e in _events(agent) if e.get("event") == "file_refused"}
    for path, reason in planted.items():
        assert reasons[str(path)].startswith(reason), reasons[str(path)]
    assert "'linked' is a symbolic link" in reasons[str(root / "linked" / "inner.log")]
    assert all(e.get("hint") for e in _events(agent) if e.get("event") == "file_refused")

    out = subprocess.run([sys.executable, "-m", "agent.cli", "offsets", "--json", "--config", str(cfg)],
                         capture_output=True, timeout=60, check=True).stdout
    rows = {r["path"]: r for r in orjson.loads(out)["files"]}
    for path in [job / "shadow.log", job / "key.log", job / "f.log", secret / "shadow", root / "linked" / "inner.log"]:
        assert rows[str(path)]["state"] == "refused", rows.get(str(path))
        assert rows[str(path)]["reason"]
    assert rows[str(good)]["state"] == "live" and rows[str(good)]["lag_bytes"] == 0


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _status(port: int) -> int | None:
    """/healthz's status; None when the connection was closed unserved (the endpoint is busy)."""
    try:
        return _healthz(port)[0]
    except OSError:
        return None


def _lines(path: Path, start: int, n: int) -> None:
    with open(path, "a") as f:
        f.writelines(f"{path.stem} line {i}\n" for i in range(start, start + n))


def test_idle_health_connections_under_a_low_fd_limit_do_not_starve_the_agent(es, es_node, index_name, tmp_path):
    """80 idle local connections to the endpoint, the agent's fd limit a little above what it
    needs: it keeps shipping and saving offsets, and /healthz answers while they stay open."""
    root = tmp_path / "log"
    (root / "job").mkdir(parents=True)
    files = [root / "job" / f"f{i}.log" for i in range(3)]
    for f in files:
        _lines(f, 0, 100)
    port = free_port()
    cfg = write_config(tmp_path / "config.json", es_node.url, root, tmp_path / "state", index_name,
                       formats=[{"glob": "**", "format": "raw"}], health={"enabled": True, "port": port})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    idle: list[socket.socket] = []
    try:
        wait_caught_up(tmp_path / "state", files)
        _wait("/healthz", lambda: _status(port) == 200)
        in_use = len(os.listdir(f"/proc/{agent.proc.pid}/fd"))
        resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE, (in_use + 24, in_use + 24))
        for _ in range(80):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass  # not accepted in time: the endpoint is starved of descriptors
        assert len(idle) == 80
        _wait("the endpoint to turn connections away", lambda: any(e.get("event") == "health_busy" for e in _events(agent)))
        # The idle connections hold at most the endpoint's few slots of the agent's descriptors.
        assert len(os.listdir(f"/proc/{agent.proc.pid}/fd")) <= in_use + health.MAX_CONNECTIONS + 4
        for round_ in range(1, 4):  # more lines, more registry writes, while the connections stay open
            for f in files:
                _lines(f, round_ * 100, 100)
            wait_caught_up(tmp_path / "state", files)
            assert agent.alive()
        _wait("/healthz with the idle connections still open", lambda: _status(port) == 200)
        assert agent.alive()
    finally:
        for s in idle:
            s.close()
        assert agent.stop() == 0
    assert len(all_messages(es, index_name, ["message"])) == 3 * 400
    assert any(e.get("event") == "health_busy" and e.get("hint") for e in _events(agent))
    assert not any(e.get("level") == "error" for e in _events(agent))


class ConfinedAgent(AgentProcess):
    """The agent as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: permissions apply."""

    def start(self) -> ConfinedAgent:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
             sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT)
        return self


def test_unlistable_directories_and_unreadable_files_are_reported_and_unhealthy(es, es_node, index_name, tmp_path):
    root = tmp_path / "log"
    for d in ("job", "locked"):
        (root / d).mkdir(parents=True)
    good, hidden, closed = root / "job" / "good.log", root / "locked" / "hidden.log", root / "job" / "closed.log"
    for f in (good, hidden, closed):
        _lines(f, 0, 50)
    for path, mode in ((hidden, 0o600), (closed, 0o600), (root / "locked", 0o700)):
        os.chown(path, 65534, 65534)  # nobody's, and closed to others
        path.chmod(mode)
    port = free_port()
    cfg = write_config(tmp_path / "config.json", es_node.url, root, tmp_path / "state", index_name,
                       formats=[{"glob": "**", "format": "raw"}], health={"enabled": True, "port": port})
    agent = ConfinedAgent(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(tmp_path / "state", [good])
        _wait("unhealthy", lambda: _status(port) == 503)
        reasons = _healthz(port)[1]["reasons"]
        assert any("cannot be listed" in r and str(root / "locked") in r and "Permission denied" in r
                   for r in reasons), reasons
        assert any("cannot be read" in r and str(closed) in r for r in reasons), reasons
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/offsets", timeout=5) as r:
            rows = {row["path"]: row for row in orjson.loads(r.read())}
        assert rows[str(closed)]["state"] == "unreadable" and rows[str(closed)]["reason"] == "Permission denied"
        time.sleep(4.5)  # two more rescans: reported once
        assert agent.alive()
    finally:
        assert agent.stop() == 0
    events = _events(agent)
    assert [e["path"] for e in events if e.get("event") == "dir_unreadable"] == [str(root / "locked")]
    assert [e["path"] for e in events if e.get("event") == "file_unreadable"] == [str(closed)]
    assert {d["message"] for d in all_messages(es, index_name, ["message"])} == {f"good line {i}" for i in range(50)}


def test_forty_files_with_sixteen_slots_all_ship_exactly_once(es, es_node, index_name, tmp_path):
    root = tmp_path / "log"
    files = [root / f"job{i % 4}" / f"f{i}.log" for i in range(40)]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        _lines(f, 0, 50)
    cfg = write_config(tmp_path / "config.json", es_node.url, root, tmp_path / "state", index_name,
                       formats=[{"glob": "**", "format": "raw"}], reader={"max_open_files": 16})
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    try:
        wait_caught_up(tmp_path / "state", files, timeout=120)
        for f in files[::3]:  # written again after being closed for others
            _lines(f, 50, 10)
        wait_caught_up(tmp_path / "state", files, timeout=120)
        assert agent.alive()
    finally:
        assert agent.stop() == 0
    messages = Counter(d["message"] for d in all_messages(es, index_name, ["message"]))
    expected = {f"{f.stem} line {i}" for f in files for i in range(50)}
    expected |= {f"{f.stem} line {i}" for f in files[::3] for i in range(50, 60)}
    assert set(messages) == expected and set(messages.values()) == {1}


def test_a_file_name_that_is_not_utf8_ships_checkpoints_and_survives_restarts(es, es_node, index_name, tmp_path):
    """`bad\\xff.log`: shipped with its name shown escaped, its offset saved (the registry keeps
    the raw bytes), and a restart neither crashes nor ships it again."""
    root = tmp_path / "log"
    job = root / "odd"
    job.mkdir(parents=True)
    raw = os.path.join(os.fsencode(job), b"bad\xff.log")
    with open(raw, "wb") as f:
        f.writelines(b"odd name line %d\n" % i for i in range(20))
    cfg = write_config(tmp_path / "c.json", es_node.url, root, tmp_path / "state", index_name)
    for rnd in range(2):
        agent = AgentProcess(cfg, tmp_path / f"agent{rnd}.log").start()
        try:
            agent.wait_started()  # the second round's lines are indexed already: the agent itself is waited for
            _wait("every line indexed", lambda: es.indices.exists(index=index_name)
                  and len(all_messages(es, index_name, ["message"])) >= 20)
            time.sleep(1.0)  # checkpoints run (once they crashed on this name)
            assert agent.alive()
        finally:
            assert agent.stop() == 0
    docs = all_messages(es, index_name, ["message", "log.file.path"])
    assert len(docs) == 20  # once, though the agent started twice
    assert {d["log"]["file"]["path"] if "log" in d else d["log.file.path"] for d in docs} == {str(job / "bad\\xff.log")}
