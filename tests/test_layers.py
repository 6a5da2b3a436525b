"""The layers of docs/design.md §5 hold: checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "peernet"

# What each layer may import from peernet (its own package always).
ALLOWED = {
    "core": {"peernet.errors"},
    "wire": {"peernet.errors", "peernet.core"},
    "transport": {"peernet.errors", "peernet.core", "peernet.wire", "peernet.config", "peernet.security"},
}
# What a layer must never import, whatever else it uses.
FORBIDDEN = {
    "node": ("peernet.sim", "peernet.cli", "peernet.study", "peernet.chaos", "peernet.bootstrap.registry",
             "peernet.bootstrap.service.", "peernet.bootstrap.protocol"),
    "core": ("peernet.security",),
}
# Core does no I/O: no files, no sockets, no clocks.
CORE_BANNED_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "time", "monotonic",
                     "perf_counter", "sleep"}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return out


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_only_what_is_below_them(layer: str) -> None:
    bad = []
    for path in _modules(layer):
        for name in _imports(path):
            if not name.startswith("peernet") or name.startswith(f"peernet.{layer}"):
                continue
            if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[layer]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_forbidden_imports(layer: str) -> None:
    bad = [f"{path.relative_to(ROOT)} imports {name}" for path in _modules(layer) for name in _imports(path)
           if any(name == f or name.startswith(f.rstrip(".") + ".") for f in FORBIDDEN[layer])]
    assert not bad, "\n".join(bad)


def test_core_does_no_io() -> None:
    bad = []
    for path in _modules("core"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in CORE_BANNED_CALLS:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}()")
        for name in _imports(path):
            if name.split(".")[0] in ("socket", "zmq", "pathlib", "tomllib", "subprocess"):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)
