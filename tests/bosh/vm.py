"""A BOSH VM's /var/vcap on this machine, inside a private mount namespace: the host sees
none of it. Used by the VM lifecycle test to drive the job the way the BOSH agent does.

The namespace is held by one `sleep` process made with `unshare --mount` (private
propagation). Inside it, /var is a tmpfs carrying bind mounts of the host's /var entries
plus /var/vcap; /etc is a bind-mounted copy with a vcap user (so the job's pre-start may add
its own user with useradd, which replaces /etc/passwd by rename, without touching the host's); the
cgroup tree is hidden behind an empty tmpfs, so bin/ctl cannot create a cgroup on the host.
Commands run in it through `nsenter`; the test reads and writes its files through
/proc/<holder>/root, which resolves paths in the namespace's mounts.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import textwrap
import time
from pathlib import Path

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}

SETUP = r"""
set -euo pipefail
stage="$1" uid="$2"
mount -t tmpfs -o mode=0755 vm-var "$stage"
for e in /var/* /var/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n="${e##*/}"
  if [ -L "$e" ]; then cp -P "$e" "$stage/$n"
  elif [ -d "$e" ]; then mkdir "$stage/$n" && mount --rbind "$e" "$stage/$n"
  else touch "$stage/$n" && mount --bind "$e" "$stage/$n"; fi
done
mkdir -p "$stage/vcap/bosh"
cp -a /etc "$stage/vcap/bosh/vm-etc"
echo "vcap:x:$uid:$uid:BOSH vcap:/var/vcap:/bin/bash" >>"$stage/vcap/bosh/vm-etc/passwd"
echo "vcap:x:$uid:" >>"$stage/vcap/bosh/vm-etc/group"
mount --move "$stage" /var
mount --bind /var/vcap/bosh/vm-etc /etc
mount -t tmpfs -o mode=0755 vm-no-cgroups /sys/fs/cgroup
"""


def _free_id() -> int:
    taken = {p.pw_uid for p in pwd.getpwall()} | {p.pw_gid for p in pwd.getpwall()}
    return next(i for i in range(2000, 60000) if i not in taken)


class VM:
    def __init__(self, stage: Path):
        stage.mkdir(parents=True, exist_ok=True)
        self.vcap_uid = _free_id()
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"])
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare --mount did not make a namespace"
            time.sleep(0.01)
        self.sh(SETUP, str(stage), str(self.vcap_uid))

    def run(self, *argv: str, check: bool = True, timeout: float = 120, env: dict | None = None,
            cwd: str = "/") -> subprocess.CompletedProcess:
        """argv inside the VM, as root, with the clean environment the BOSH agent gives scripts."""
        result = subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--",
                                 "bash", "-c", 'cd "$0" && exec "$@"', cwd, *argv],
                                env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("bash", "-c", textwrap.dedent(script), "vm-sh", *args, **kw)

    def uid(self, user: str) -> int:
        """A user's uid in the VM's /etc/passwd."""
        for line in self.path("/etc/passwd").read_text().splitlines():
            name, _, uid, *_ = line.split(":")
            if name == user:
                return int(uid)
        raise AssertionError(f"no user {user} in the VM")

    def path(self, p: str) -> Path:
        """A path of the VM as seen from the host (through the namespace's mounts). An absolute
        symlink on the way resolves on the host, so name paths without one (data/..., not sys/...)."""
        return Path(f"/proc/{self.holder.pid}/root{p}")

    def pids(self) -> list[int]:
        """Every process in the VM's namespace but the holder."""
        ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != self.holder.pid:
                try:
                    if os.readlink(d / "ns/mnt") == ns:
                        out.append(int(d.name))
                except OSError:
                    pass
        return out

    def destroy(self) -> None:
        """Kill what runs in the VM, then the holder: the namespace and its tmpfs go with them."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.holder.kill()
        self.holder.wait()
