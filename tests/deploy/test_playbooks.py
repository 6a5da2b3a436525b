"""deploy/ without SSH: ansible-lint, syntax checks, and the templates rendered by Ansible and read by peernet."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from peernet.bootstrap.config import load_bootstrap_config
from peernet.cli import main
from peernet.config import load_run_settings
from peernet.node.config import load_node_config
from peernet.security.keys import create_keypairs, load_public_key
from tests.deploy.sshlab import DEPLOY, VENV_BIN, ansible_env, recap, write_json

PLAYBOOKS = ["site.yml", "status.yml", "collect.yml", "stop.yml", "chaos.yml"]
FAKE_PEERNET = """#!/usr/bin/env bash
# Stands in for peernet: `fake node|bootstrap --config FILE`; a config holding "fail" fails like a bad key.
grep -q fail "$3" && { echo "error: secret key file is readable by others"; exit 2; }
trap 'echo "got SIGTERM"; exit 0' TERM
[ "$1" = node ] && echo "node 0 listening on tcp://x:1; registering with bootstrap tcp://y:2"
[ "$1" = bootstrap ] && echo "bootstrap listening on tcp://y:2"
while true; do sleep 0.05; done
"""


def test_ansible_lint_is_clean(tmp_path: Path) -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=DEPLOY, capture_output=True,
                          text=True, timeout=300, env=ansible_env(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    processed = int(re.search(r"in (\d+) files processed", output).group(1))  # type: ignore[union-attr]
    assert processed >= len([p for p in DEPLOY.rglob("*.yml") if ".ansible" not in p.parts])  # it did look


def test_every_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventory.example.ini", "--syntax-check",
                           *PLAYBOOKS], cwd=DEPLOY, capture_output=True, text=True, timeout=120,
                          env=ansible_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [f"playbook: {name}" for name in PLAYBOOKS] == re.findall(r"playbook: \S+", proc.stdout)


RENDER = """---
- name: Render the deploy templates as the roles do, on this machine
  hosts: nodes
  connection: local
  gather_facts: false
  tasks:
    - name: Node config
      ansible.builtin.template:
        src: "{deploy}/roles/node/templates/node.toml.j2"
        dest: "{{{{ peernet_run_dir }}}}/node{{{{ peernet_node_id }}}}.toml"
        mode: "0644"
    - name: Unit
      ansible.builtin.template:
        src: "{deploy}/roles/common/templates/peernet.service.j2"
        dest: "{{{{ peernet_run_dir }}}}/peernet-t-node{{{{ peernet_node_id }}}}.service"
        mode: "0644"
      vars:
        common_service: "node{{{{ peernet_node_id }}}}"
        common_service_command: node
    - name: Shared files
      ansible.builtin.template:
        src: "{deploy}/roles/{{{{ item.role }}}}/templates/{{{{ item.name }}}}.j2"
        dest: "{{{{ peernet_run_dir }}}}/{{{{ item.name }}}}"
        mode: "0755"
      loop:
        - {{role: keys, name: run.toml}}
        - {{role: bootstrap, name: bootstrap.toml}}
        - {{role: common, name: peernetctl}}
      run_once: true
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory the roles would write on a host, rendered by ansible-playbook with group_vars/all.yml."""
    tmp = tmp_path_factory.mktemp("render")
    control, run = tmp / "control", tmp / "run"
    run.mkdir()
    create_keypairs(control / "keys", ["node0", "node1", "node2", "bootstrap", "operator"])
    (tmp / "group_vars").symlink_to(DEPLOY / "group_vars")  # beside the inventory: the defaults apply
    hosts = {f"n{k}": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                       "ansible_host": f"192.0.2.{10 + k}", "peernet_node_id": k} for k in range(3)}
    hosts["n2"]["peernet_node_port"] = 5700
    hosts["n2"]["peernet_node_metrics_port"] = 9700
    inventory = write_json(tmp / "inventory.yml", {"all": {"children": {
        "bootstrap": {"hosts": {"n0": None}}, "nodes": {"hosts": hosts}}}})
    extra = write_json(tmp / "vars.yml", {"peernet_control_dir": str(control), "peernet_run_dir": str(run),
                                          "peernet_bin": str(VENV_BIN / "peernet"), "peernet_user": "root",
                                          "peernet_data_dir": "/srv/data", "peernet_metrics": True})
    (tmp / "render.yml").write_text(RENDER.format(deploy=DEPLOY))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra}",
                           str(tmp / "render.yml")], capture_output=True, text=True, timeout=120,
                          env=ansible_env(tmp))
    assert proc.returncode == 0 and recap(proc.stdout)["n0"]["failed"] == 0, proc.stdout + proc.stderr
    result = CliRunner().invoke(main, ["topology", "generate", "ring", "-n", "3", "--keys", str(control / "keys"),
                                       "-o", str(run / "topology.toml")])
    assert result.exit_code == 0, result.output
    return run


def test_rendered_configs_are_what_peernet_reads(rendered: Path) -> None:
    settings = load_run_settings(rendered / "run.toml")
    assert (settings.algorithm, settings.model, settings.epochs, settings.nodes) == ("momentum-tracking", "lenet",
                                                                                    3.0, 3)
    assert settings.topology == str(rendered / "topology.toml") and settings.lr == 0.005
    node = load_node_config(rendered / "node2.toml")
    assert (node.id, node.listen, node.advertise) == (2, "tcp://0.0.0.0:5700", "192.0.2.12")
    assert node.bootstrap == "tcp://192.0.2.10:5550" and node.state_dir == str(rendered / "nodes" / "node2")
    assert node.metrics_listen == "0.0.0.0:9700" and load_node_config(rendered / "node0.toml").metrics_listen == \
        "0.0.0.0:9600"
    assert node.secret_key == str(rendered / "keys" / "node2.key_secret")
    # Inline: the host gets no bootstrap.key file, and the key is the control machine's.
    control_keys = rendered.parent / "control" / "keys"
    assert node.bootstrap_public_key == load_public_key(control_keys / "bootstrap.key").decode()
    boot = load_bootstrap_config(rendered / "bootstrap.toml")
    assert boot.listen == "tcp://0.0.0.0:5550" and boot.max_nodes == 3 and boot.metrics_listen == "0.0.0.0:9550"
    assert boot.client_keys_files == [str(rendered / "keys" / "operator.key")]
    assert boot.secret_key == str(rendered / "keys" / "bootstrap.key_secret")


def test_systemd_unit(rendered: Path) -> None:
    unit = rendered / "peernet-t-node1.service"
    lines = [line for line in unit.read_text().splitlines() if line and not line.startswith(("#", "["))]
    pairs = [(key, value) for key, _, value in (line.partition("=") for line in lines)]
    single = dict(pairs)
    assert single["Restart"] == "on-failure" and single["RestartSec"] == "5" and single["Type"] == "simple"
    assert single["ExecStart"] == f"{VENV_BIN / 'peernet'} node --config {rendered}/node1.toml"
    assert single["User"] == "root" and single["WorkingDirectory"] == str(rendered)
    assert single["StandardOutput"] == f"append:{rendered}/node1.log" and single["KillSignal"] == "SIGTERM"
    environment = [value for key, value in pairs if key == "Environment"]
    assert "OMP_NUM_THREADS=1" in environment and "PEERNET_DATA=/srv/data" in environment
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit was checked by the template test above only")
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "peernet-t-node1" not in proc.stderr, proc.stderr


@pytest.fixture
def peernetctl(rendered: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The background mode's control script around a stand-in peernet; every process it starts is ended."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "peernet"
    fake.write_text(FAKE_PEERNET)
    fake.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    script = (rendered / "peernetctl").read_text()
    run = tmp_path / "run"
    run.mkdir()
    script = script.replace(str(rendered), str(run)).replace(str(VENV_BIN / "peernet"), str(fake))
    (run / "peernetctl").write_text(script)
    (run / "peernetctl").chmod(0o755)
    for name in ("node0", "bootstrap"):
        (run / f"{name}.toml").write_text("# ok\n")
    try:
        yield run / "peernetctl", run
    finally:
        for pidfile in run.glob("pids/*.pid"):
            pid = int(pidfile.read_text())
            with contextlib.suppress(OSError):  # gone already, or not ours (a test writes a foreign pid)
                if f"--config {run}" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    os.kill(pid, signal.SIGKILL)


def ctl(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60)


def wait_state(pid: int, state: str, timeout: float = 10.0) -> str:
    """The process's state letter (/proc/PID/stat) once it is ``state``, or the last one seen at the timeout:
    a signal is delivered asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        seen = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if seen == state or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def test_background_mode_start_is_idempotent_and_stop_ends_it(peernetctl: tuple[Path, Path]) -> None:
    script, run = peernetctl
    started = ctl(script, "node0", "start")
    assert started.returncode == 0 and started.stdout.startswith("started "), started.stderr
    pid = int(started.stdout.split()[1])
    assert ctl(script, "node0", "start").stdout.strip() == f"running {pid}"  # a running service is left alone
    status = ctl(script, "node0", "status")
    assert status.returncode == 0 and status.stdout.startswith(f"node0: running (pid {pid}), round 0")
    assert ctl(script, "node0", "pause").stdout.startswith(f"signalled {pid} with SIGSTOP")
    assert wait_state(pid, "T") == "T"
    assert ctl(script, "node0", "stop").stdout.strip() == f"stopped {pid}"  # SIGCONT first, so SIGTERM is acted on
    assert "got SIGTERM" in (run / "node0.log").read_text()
    assert ctl(script, "node0", "stop").stdout.strip() == "not running"
    status = ctl(script, "node0", "status")
    assert status.returncode == 3 and status.stdout.startswith("node0: not running")


def test_background_mode_kill_restart_and_a_failing_start(peernetctl: tuple[Path, Path]) -> None:
    script, run = peernetctl
    first = int(ctl(script, "bootstrap", "start").stdout.split()[1])
    assert ctl(script, "bootstrap", "kill").stdout.startswith(f"signalled {first} with SIGKILL")
    deadline = time.monotonic() + 10
    while ctl(script, "bootstrap", "status").returncode != 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    restarted = ctl(script, "bootstrap", "restart")
    assert restarted.returncode == 0 and restarted.stdout.splitlines()[0] == "not running"
    second = int(restarted.stdout.splitlines()[1].split()[1])
    assert second != first
    assert ctl(script, "bootstrap", "stop").stdout.strip() == f"stopped {second}"
    # A pid file naming another live process (a reused id) is not this service: nothing is signalled.
    (run / "pids" / "bootstrap.pid").write_text(f"{os.getpid()}\n")
    assert ctl(script, "bootstrap", "kill").stdout.strip() == "not running"
    (run / "node0.toml").write_text("fail\n")
    failed = ctl(script, "node0", "start")
    assert failed.returncode == 1 and "exited with status 2" in failed.stderr
    assert "secret key file is readable by others" in failed.stderr


def test_site_refuses_an_inventory_whose_node_ids_are_not_0_to_n_minus_1(tmp_path: Path) -> None:
    hosts = {name: {"ansible_connection": "local", "peernet_node_id": node_id}
             for name, node_id in (("a", 0), ("b", 2), ("c", 2))}
    inventory = write_json(tmp_path / "inventory.yml", {"all": {"children": {
        "bootstrap": {"hosts": {"a": None}}, "nodes": {"hosts": hosts}}}})
    control = tmp_path / "control"
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e",
                           f"peernet_control_dir={control}", str(DEPLOY / "site.yml")], capture_output=True,
                          text=True, timeout=120, env=ansible_env(tmp_path))
    assert proc.returncode == 2 and "are 0 .. N-1, each once (got [0, 2, 2])" in proc.stdout, proc.stdout
    assert not control.exists()  # checked before anything is made
