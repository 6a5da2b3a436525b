"""Hosts for the Ansible tests: network namespaces with their own address and sshd, and a control namespace."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peernet.chaos.netns import NetnsLab

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent  # ansible-core and ansible-lint come with the dev extra
SSHD = "/usr/sbin/sshd"
SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def missing_tools() -> str | None:
    """Why the SSH tests cannot run here (CI installs all of it: scripts/test.sh, pyproject's dev extra)."""
    for tool in (SSHD, shutil.which("ssh-keygen") or "ssh-keygen", str(VENV_BIN / "ansible-playbook")):
        if not Path(tool).exists():
            return f"{tool} is not installed (Debian: openssh-server; PyPI: ansible-core, in the dev extra)"
    return None


def ansible_env(tmp: Path) -> dict[str, str]:
    """ansible-playbook's environment: our config, and its sockets and temp files under the test's directory."""
    return dict(os.environ, ANSIBLE_CONFIG=str(DEPLOY / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp / "cp"), ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
                ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-remote"), ANSIBLE_HOME=str(tmp / "ansible-home"),
                ANSIBLE_LOG_PATH=str(tmp / "ansible.log"),
                PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines as {host: {"ok": n, "changed": n, "failed": n, ...}}."""
    hosts: dict[str, dict[str, int]] = {}
    for line in output[output.rfind("PLAY RECAP"):].splitlines()[1:]:
        match = re.match(r"(\S+)\s+:\s+(.*)", line)
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


@dataclass
class SshLab:
    """``hosts`` namespaces, each with sshd on its own address and port, plus ``ctl`` for ansible-playbook.

    The root namespace cannot reach the lab's addresses (its bridge has a namespace of its own, so nothing
    is added to this machine's network): the control machine is one more namespace on the bridge.
    """

    tmp: Path
    hosts: list[str]
    lab: NetnsLab = field(init=False)
    sshd: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)  # (playbook, seconds), in order

    def __post_init__(self) -> None:
        self.lab = NetnsLab(["ctl", *self.hosts], tag=f"pnd{os.getpid() % 100000}")

    def address(self, host: str) -> str:
        return self.lab.address(host)

    def ssh_port(self, host: str) -> int:
        return 2200 + self.hosts.index(host)

    @property
    def client_key(self) -> Path:
        return self.tmp / "ssh" / "client"

    def open(self) -> SshLab:
        self.lab.open()
        ssh_dir = self.tmp / "ssh"
        ssh_dir.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)], check=True)
        shutil.copy(f"{self.client_key}.pub", ssh_dir / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for host in self.hosts:
            host_dir = ssh_dir / host
            host_dir.mkdir()
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_dir / "host_key")],
                           check=True)
            config = host_dir / "sshd_config"
            config.write_text(SSHD_CONFIG.format(port=self.ssh_port(host), address=self.address(host),
                                                 host_key=host_dir / "host_key", dir=host_dir,
                                                 authorized_keys=ssh_dir / "authorized_keys"))
            with (host_dir / "sshd.log").open("wb") as log:
                self.sshd[host] = subprocess.Popen([*self.lab.exec_prefix(host), SSHD, "-D", "-e", "-f", str(config)],
                                                   stdout=log, stderr=subprocess.STDOUT)
        for host in self.hosts:
            self._wait_listening(host)
        return self

    def _wait_listening(self, host: str, timeout: float = 20.0) -> None:
        log = self.tmp / "ssh" / host / "sshd.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Server listening" in log.read_text(errors="replace"):
                return
            if self.sshd[host].poll() is not None:
                raise RuntimeError(f"sshd of {host} exited: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd of {host} did not listen within {timeout}s: {log.read_text(errors='replace')}")

    def host_vars(self, host: str) -> dict[str, Any]:
        """How ansible reaches a host: root by key, host keys not checked (they are made for this test only)."""
        return {"ansible_host": self.address(host), "ansible_port": self.ssh_port(host), "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.client_key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3"}

    def playbook(self, name: str, inventory: Path, extra_vars: Path, *args: str,
                 timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """ansible-playbook deploy/NAME from the control namespace; its output is kept in the test directory."""
        cmd = [*self.lab.exec_prefix("ctl"), str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
               "-e", f"@{extra_vars}", *args, str(DEPLOY / name)]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=DEPLOY,
                              env=ansible_env(self.tmp))
        self.timings.append((name, round(time.monotonic() - start, 1)))
        (self.tmp / f"ansible-{len(self.timings):02d}-{name}.out").write_text(proc.stdout + proc.stderr)
        return proc

    def close(self) -> None:
        """End every process in the lab's namespaces (sshd, its sessions, what they started), then the lab."""
        for proc in self.sshd.values():
            proc.kill()
            proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.lab_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while pids and self.lab_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.lab.close()

    def lab_pids(self) -> list[int]:
        pids = []
        for ns in self.lab.created:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            pids += [int(p) for p in out.split()]
        return pids


def write_json(path: Path, data: Any) -> Path:
    """YAML is a superset of JSON: inventories and extra-vars files without a YAML writer."""
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
