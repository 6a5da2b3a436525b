"""One exception tree: every exception class peernet defines lives in peernet/errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_exception_class_is_defined_in_errors_py() -> None:
    import peernet.errors as errors

    names = {n for n in dir(errors) if isinstance(getattr(errors, n), type)
             and issubclass(getattr(errors, n), BaseException)}
    outside = []
    for path in (ROOT / "peernet").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & (names | {"Exception", "BaseException", "ValueError", "RuntimeError"}):
                    outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not outside, "exceptions outside peernet/errors.py:\n" + "\n".join(outside)
