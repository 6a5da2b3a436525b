"""Docs that are generated from code stay in step with it."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    render = runpy.run_path(str(ROOT / "scripts" / "gen_config_docs.py"))["render"]
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/gen_config_docs.py")


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```bash") + 1:readme.index("```bash") + 3]
    assert block[0].startswith("bash scripts/run.sh") and block[1].startswith("bash scripts/test.sh")
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("exec ")]
    assert ci == ["exec bash scripts/test.sh"]


def test_every_document_cited_in_code_and_docs_is_in_the_repository() -> None:
    """References like docs/design.md or docs/node.md must resolve inside the repository, never outside it."""
    root = ROOT
    cited = re.compile(r"\b(docs/[\w.-]+\.md|[A-Z]+\.md)\b")
    missing = []
    for path in [*root.glob("peernet/**/*.py"), *root.glob("docs/*.md"), *root.glob("bench/*.py"),
                 root / "README.md"]:
        for ref in set(cited.findall(path.read_text())):
            if not (root / ref).exists():
                missing.append(f"{path.relative_to(root)} cites {ref}")
    assert not missing, "\n".join(missing)
