"""Bad configuration: every command exits non-zero naming the file, the key and the reason, and touches nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from peernet.cli import main
from tests.clusters import run_cli

# A valid 4-node ring and run: every case below breaks exactly one thing in this set of files.
RING4 = 'name = "ring-4"\nedges = [[0, 1], [1, 2], [2, 3], [0, 3]]\n' + "".join(
    f"\n[[nodes]]\nid = {i}\n" for i in range(4))
RUN = {"topology": '"topo.toml"', "dataset": '"quadratic"', "rounds": "2"}
# Short bootstrap timeouts: a case that wrongly passes validation fails in about a second instead of hanging.
NODE = {"id": "0", "run": '"run.toml"', "state_dir": '"state"', "listen": '"tcp://127.0.0.1:*"',
        "bootstrap": '"tcp://127.0.0.1:9"', "bootstrap_timeout": "0.2", "bootstrap_retries": "1",
        "start_timeout": "1.0"}
BOOT = {"run": '"run.toml"', "state_dir": '"bootstate"', "listen": '"tcp://127.0.0.1:*"'}
EXISTING_OUTPUT = "# an existing topology file that a failed `topology generate -o` must leave alone\n"

COMMANDS: dict[str, list[str]] = {
    "node": ["node", "--config", "node.toml"],
    "bootstrap": ["bootstrap", "--config", "boot.toml"],
    "simulate": ["simulate", "--config", "run.toml", "--out", "out", "--quiet"],
    "local": ["local", "--config", "run.toml", "--out", "out", "--quiet"],
    "check": ["topology", "check", "topo.toml"],
}


def _toml(table: dict[str, str], **changes: str | None) -> str:
    """``key = value`` lines of ``table`` with ``changes`` applied (None removes a key; values are TOML text)."""
    merged = {**table, **changes}
    return "".join(f"{k} = {v}\n" for k, v in merged.items() if v is not None)


@dataclass(frozen=True)
class Case:
    """One broken file set, the command run on it, and what its error message must name."""

    command: str
    files: dict[str, str | None]  # file name -> new text; None deletes the file
    file: str | None  # the file the message must name (None: the bad value came from a command-line option)
    key: str | None  # the key it must name (None: a whole-file problem such as invalid TOML)
    reason: str  # a phrase of the reason
    args: list[str] = field(default_factory=list)  # replaces COMMANDS[command] when given


# -- cases ---------------------------------------------------------------------------------------------------------

# Defects of run.toml, reached by every command that reads run settings (the node and bootstrap through their own
# config file's `run` key).
RUN_DEFECTS: list[tuple[str, str | None, str | None, str]] = [
    # (id, run.toml text, key, reason)
    ("invalid-toml", "rounds = [\n", None, "invalid TOML"),
    ("unknown-key", _toml(RUN, treads="1"), "treads", "unknown key"),
    ("rounds-str", _toml(RUN, rounds='"ten"'), "rounds", "expected int"),
    ("rounds-float", _toml(RUN, rounds="1.5"), "rounds", "expected int"),
    ("model-int", _toml(RUN, model="3"), "model", "expected str"),
    ("beta-range", _toml(RUN, beta="1.5"), "beta", "must be in [0, 1)"),
    ("lr-negative", _toml(RUN, lr="-1"), "lr", "must be > 0"),
    ("rounds-negative", _toml(RUN, rounds="-1"), "rounds", "must be >= 1"),
    ("rounds-zero", _toml(RUN, rounds="0"), "rounds", "must be >= 1"),
    ("algorithm-choice", _toml(RUN, algorithm='"adam"'), "algorithm", "is not one of"),
    ("missing", None, None, "file not found"),
]

# Defects of the topology file that run.toml names, reached by every command (and `topology check` directly).
TOPOLOGY_DEFECTS: list[tuple[str, str | None, str | None, str]] = [
    ("unknown-node", "edges = [[0, 1], [1, 9]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n", "edges",
     "unknown node 9"),
    ("self-loop", "edges = [[0, 1], [1, 1]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n", "edges", "self-loop"),
    ("duplicate-edge", "edges = [[0, 1], [1, 0]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n", "edges", "duplicates edge"),
    ("disconnected", "edges = [[0, 1], [2, 3]]\n" + "".join(f"[[nodes]]\nid = {i}\n" for i in range(4)), "edges",
     "disconnected"),
    ("not-doubly-stochastic", 'weights = "explicit"\nedges = [[0, 1], [1, 2]]\n'
     "explicit_weights = [[0, 1, 0.5], [1, 2, 0.6]]\n" + "".join(f"[[nodes]]\nid = {i}\n" for i in range(3)),
     "explicit_weights", "not doubly stochastic"),
    ("row-sum", 'weights = "explicit"\nedges = [[0, 1]]\nexplicit_weights = [[0, 1, 0.5], [0, 0, 0.4]]\n'
     "[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n", "explicit_weights", "not doubly stochastic"),
    ("asymmetric", 'weights = "explicit"\nedges = [[0, 1], [1, 2]]\n'
     "explicit_weights = [[0, 1, 0.5], [1, 0, 0.4], [1, 2, 0.3]]\n"
     + "".join(f"[[nodes]]\nid = {i}\n" for i in range(3)),
     "explicit_weights", "not symmetric"),
    ("unknown-key", "edgez = [[0, 1]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1\n", "edgez", "unknown top-level key"),
    ("node-id-float", "edges = [[0, 1]]\n[[nodes]]\nid = 0\n[[nodes]]\nid = 1.5\n", "nodes[1].id",
     "non-negative integer"),
    ("invalid-toml", "edges = [[0, 1]\n", None, "invalid TOML"),
    ("missing", None, None, "file not found"),
]

NODE_DEFECTS: list[tuple[str, str | None, str | None, str]] = [
    ("invalid-toml", "id = = 0\n", None, "invalid TOML"),
    ("unknown-key", _toml(NODE, treads="1"), "treads", "unknown key"),
    ("id-float", _toml(NODE, id="1.5"), "id", "expected int"),
    ("id-str", _toml(NODE, id='"zero"'), "id", "expected int"),
    ("id-negative", _toml(NODE, id="-1"), "id", "must be >= 0"),
    ("id-missing", _toml(NODE, id=None), "id", "missing required key"),
    ("threads-bool", _toml(NODE, threads="true"), "threads", "expected int"),
    ("threads-zero", _toml(NODE, threads="0"), "threads", "must be >= 1"),
    ("checkpoint-negative", _toml(NODE, checkpoint_every="-1"), "checkpoint_every", "must be >= 0"),
    ("listen-nonsense", _toml(NODE, listen='"nonsense"'), "listen", "not an endpoint"),
    ("bootstrap-nonsense", _toml(NODE, bootstrap='"nonsense"'), "bootstrap", "not an endpoint"),
    ("deadline-floor-zero", _toml(NODE, deadline_floor="0"), "deadline_floor", "must be > 0"),
    ("max-abs-negative", _toml(NODE, max_abs="-1"), "max_abs", "must be >= 0"),
    ("log-level", _toml(NODE, log_level='"loud"'), "log_level", "is not one of"),
    ("device", _toml(NODE, device='"tpu"'), "device", "is not auto, cpu, cuda"),
    ("run-missing", _toml(NODE, run='"nowhere/run.toml"'), "run", "does not exist"),
    ("missing", None, None, "file not found"),
]

BOOT_DEFECTS: list[tuple[str, str | None, str | None, str]] = [
    ("invalid-toml", "listen = = 1\n", None, "invalid TOML"),
    ("unknown-key", _toml(BOOT, lisen='"tcp://127.0.0.1:*"'), "lisen", "unknown key"),
    ("ttl-str", _toml(BOOT, node_ttl='"x"'), "node_ttl", "expected float"),
    ("max-nodes-float", _toml(BOOT, max_nodes="1.5"), "max_nodes", "expected int"),
    ("ttl-zero", _toml(BOOT, node_ttl="0"), "node_ttl", "must be > 0"),
    ("max-nodes-zero", _toml(BOOT, max_nodes="0"), "max_nodes", "must be >= 1"),
    ("listen-nonsense", _toml(BOOT, listen='"nonsense"'), "listen", "expected an address"),
    ("missing", None, None, "file not found"),
]


def _cases() -> Iterator[object]:
    for name, text, key, reason in RUN_DEFECTS:
        for command in ("node", "bootstrap", "simulate", "local"):
            # The node checks its own `run` key first: "node.toml: key 'run': run settings file ... does not exist".
            own = ("run", "does not exist") if command == "node" and name == "missing" else (key, reason)
            yield pytest.param(Case(command, {"run.toml": text}, "run.toml", *own), id=f"{command}-run-{name}")
    for name, text, key, reason in TOPOLOGY_DEFECTS:
        for command in COMMANDS:
            yield pytest.param(Case(command, {"topo.toml": text}, "topo.toml", key, reason),
                               id=f"{command}-topology-{name}")
    for name, text, key, reason in NODE_DEFECTS:
        yield pytest.param(Case("node", {"node.toml": text}, "node.toml", key, reason), id=f"node-{name}")
    for name, text, key, reason in BOOT_DEFECTS:
        yield pytest.param(Case("bootstrap", {"boot.toml": text}, "boot.toml", key, reason), id=f"bootstrap-{name}")
    # Overrides on the command line are checked like the file's values. (The message blames the config file
    # although the value came from the option, so only the key and the reason are asserted.)
    yield pytest.param(Case("bootstrap", {}, None, "listen", "expected an address",
                            args=["bootstrap", "--config", "boot.toml", "--listen", "nonsense"]),
                       id="bootstrap-listen-option")
    yield pytest.param(Case("local", {}, None, "nodes", "must be >= 1",
                            args=["local", "--config", "run.toml", "--out", "out", "--quiet", "--nodes", "0"]),
                       id="local-nodes-option")
    # A --config that is a directory.
    for command, flag in (("node", "--config"), ("simulate", "--config"), ("bootstrap", "--config")):
        args = [command, flag, "adir"] + (["--out", "out"] if command == "simulate" else [])
        yield pytest.param(Case(command, {}, "adir", None, "is a directory", args=args), id=f"{command}-config-dir")


# `peernet topology generate` (bad kind or size): nothing written, an existing output file left as it was.
# Click's usage errors name the argument or option; peernet's own errors name the graph kind or the output file.
GENERATE_CASES = [
    pytest.param(["bogus", "-n", "4", "-o", "existing.toml"], ("'bogus'", "is not one of"), id="bad-kind"),
    pytest.param(["hypercube", "-n", "6", "-o", "existing.toml"], ("hypercube", "power-of-two"), id="hypercube-6"),
    pytest.param(["torus", "-n", "5", "-o", "existing.toml"], ("torus", "rows × cols"), id="torus-5"),
    pytest.param(["ring", "-n", "0", "-o", "existing.toml"], ("'--nodes'", "not in the range"), id="ring-0"),
    pytest.param(["ring", "-n", "x", "-o", "new.toml"], ("'--nodes'", "not a valid integer"), id="nodes-not-int"),
    pytest.param(["ring", "-n", "4", "--weights", "explicit", "-o", "existing.toml"], ("'--weights'", "is not one of"),
                 id="weights-choice"),
    pytest.param(["hypercube", "-n", "12", "-o", "new.toml"], ("hypercube", "power-of-two"), id="new-output"),
    pytest.param(["ring", "-n", "4", "-o", "nodir/x.toml"], ("nodir/x.toml", "cannot write file"),
                 id="output-dir-missing"),
]


# -- helpers -------------------------------------------------------------------------------------------------------


def _write_base(root: Path) -> None:
    (root / "topo.toml").write_text(RING4)
    (root / "run.toml").write_text(_toml(RUN))
    (root / "node.toml").write_text(_toml(NODE))
    (root / "boot.toml").write_text(_toml(BOOT))
    (root / "existing.toml").write_text(EXISTING_OUTPUT)
    (root / "adir").mkdir()


def _apply(root: Path, files: dict[str, str | None]) -> None:
    for name, text in files.items():
        if text is None:
            (root / name).unlink()
        else:
            (root / name).write_text(text)


def snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` with its kind, size, mtime and content hash: any creation or change shows."""
    out: dict[str, tuple[str, int, int, str]] = {".": ("dir", 0, root.stat().st_mtime_ns, "")}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "dir" if path.is_dir() else "file"
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "file" else ""
            out[str(path.relative_to(root))] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns, digest)
    return out


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=True)


def _check_result(result: Result, file: str | None, key: str | None, reason: str) -> None:
    err = result.stderr
    assert result.exit_code != 0, f"exit 0 on a bad config; output:\n{result.output}"
    # A clean exit with a message, never an exception escaping the command.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if file is not None:
        assert file in err, f"file {file!r} not named in: {err!r}"
    if key is not None:
        assert key in err, f"key {key!r} not named in: {err!r}"
    assert reason in err, f"reason {reason!r} not in: {err!r}"


# -- tests ---------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # a bootstrap whose config wrongly passed would serve forever
@pytest.mark.parametrize("case", list(_cases()))
def test_bad_config_is_refused_and_changes_nothing(case: Case, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _write_base(tmp_path)
    _apply(tmp_path, case.files)
    monkeypatch.chdir(tmp_path)  # a default output directory (e.g. runs/local-*) would land here too
    before = snapshot(tmp_path)
    result = _invoke(case.args or COMMANDS[case.command])
    _check_result(result, case.file, case.key, case.reason)
    if case.key is not None:
        assert f"key '{case.key}'" in result.stderr
    assert snapshot(tmp_path) == before, "a command that refused its configuration created or changed files"


@pytest.mark.parametrize(("args", "phrases"), GENERATE_CASES)
def test_topology_generate_refuses_and_writes_nothing(args: list[str], phrases: tuple[str, ...], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _write_base(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = _invoke(["topology", "generate", *args])
    _check_result(result, None, None, phrases[1])
    assert phrases[0] in result.stderr, result.stderr
    assert snapshot(tmp_path) == before
    assert (tmp_path / "existing.toml").read_text() == EXISTING_OUTPUT


def test_node_id_not_in_topology_names_the_node_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_base(tmp_path)
    _apply(tmp_path, {"node.toml": _toml(NODE, id="7")})
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = _invoke(COMMANDS["node"])
    assert snapshot(tmp_path) == before
    _check_result(result, "node.toml", "id", "not in the topology")


@pytest.mark.parametrize("command", ["node", "bootstrap", "simulate", "local"])
def test_unknown_topology_kind_names_the_run_file(command: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _write_base(tmp_path)
    _apply(tmp_path, {"run.toml": _toml(RUN, topology='"rng"')})  # a typo of "ring"
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = _invoke(COMMANDS[command])
    assert snapshot(tmp_path) == before
    assert "neither a generator" in result.stderr
    _check_result(result, "run.toml", "topology", "neither a generator")


# Real processes, where the exit status and stderr are what a shell or a service manager sees.
REAL = [
    pytest.param(["node", "--config", "node.toml"], {"node.toml": _toml(NODE, threads="0")}, "node.toml", "threads",
                 "must be >= 1", id="node-threads-zero"),
    pytest.param(["bootstrap", "--config", "boot.toml"], {"topo.toml": TOPOLOGY_DEFECTS[3][1]}, "topo.toml",
                 "edges", "disconnected", id="bootstrap-disconnected-topology"),
    pytest.param(["local", "--config", "run.toml", "--out", "out"], {"run.toml": _toml(RUN, beta="1.5")}, "run.toml",
                 "beta", "must be in [0, 1)", id="local-beta"),
]


@pytest.mark.parametrize(("args", "files", "file", "key", "reason"), REAL)
def test_real_process_exits_2_with_one_line(args: list[str], files: dict[str, str | None], file: str, key: str,
                                            reason: str, tmp_path: Path) -> None:
    _write_base(tmp_path)
    _apply(tmp_path, files)
    before = snapshot(tmp_path)
    proc = run_cli(args, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert file in lines[0] and f"key '{key}'" in lines[0] and reason in lines[0], lines[0]
    assert proc.stdout == ""
    assert snapshot(tmp_path) == before
