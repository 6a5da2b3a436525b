"""Write docs/configuration.md from the config dataclasses' field metadata (run: python scripts/gen_config_docs.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from peernet.bootstrap.config import BootstrapConfig
from peernet.config import RunSettings, describe_bounds
from peernet.node.config import NodeConfig

INTRO = """# Configuration reference

peernet reads TOML. Every file is parsed into a frozen dataclass that rejects unknown keys, wrong types
and out-of-range values, and the error names the file, the key and the reason, e.g.
`error: node/node3.toml: key 'treads': unknown key; allowed keys: ...`. Keys may be written with `_` or
`-`. Relative paths are resolved against the directory of the file that names them. A config file must be
a regular file of at most 4 MiB (checked before reading: a FIFO or a device is refused, never read), UTF-8
without a byte-order mark, with dotted keys of at most 16 parts and nesting the parser can take; anything
else is an error naming the file (the same reader as topology files, `peernet/toml_files.py`).

This page is generated from the code (`.venv/bin/python scripts/gen_config_docs.py`); a test checks that
it lists every key.
"""

SIMULATOR_OPTIONS_INTRO = """## Simulator options (`peernet simulate`, `peernet sweep`; command line only)

How the simulator computes, not what it computes: they are not run settings and do not enter the
fingerprint (a run gives the same result with any of them, up to float32 rounding between modes).
"""

SIMULATOR_OPTIONS = [
    ("`--mode` (`simulate`)", "`auto`",
     "`loop`: gradients node by node on worker threads; `vectorized`: groups of nodes in one batched call; "
     "`auto`: vectorized on a GPU and for the quadratic task, loop for image models on a CPU "
     '(docs/algorithms.md, "Which mode")'),
    ("`--device`", "`auto`", "`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`; a CUDA device that is not "
     "there is an error naming the option"),
    ("`--threads` (`simulate`)", "`0`", "worker threads on a CPU, each running torch with one thread; 0 = every "
     "core the process may use. `sweep` gives each of its `--jobs` processes cores ÷ jobs threads"),
]


def _simulator_options() -> list[str]:
    rows = [f"| {name} | {default} | {meaning} |" for name, default, meaning in SIMULATOR_OPTIONS]
    return [SIMULATOR_OPTIONS_INTRO, "| option | default | meaning |", "|---|---|---|", *rows, ""]


SECTIONS = [
    ("Run settings (`run.toml`, `peernet simulate/local --config`)", RunSettings,
     "Shared by every node of a run and by the simulator. Their hash, together with the topology's, is the "
     "run fingerprint: the bootstrap refuses a node whose fingerprint differs (`data_dir` is excluded, since "
     "hosts may keep the data in different places). Each key is also a command-line option of "
     "`peernet simulate` and `peernet local` (`--classes-per-node` for `classes_per_node`)."),
    ("Node (`nodeN.toml`, `peernet node --config`)", NodeConfig,
     "One file per node daemon. `id` and `run` are required."),
    ("Bootstrap (`bootstrap.toml`, `peernet bootstrap --config`)", BootstrapConfig,
     "The rendezvous service. It is not in the data path: training continues if it dies after the start."),
]


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`".replace("'", '"')
    if f.default is dataclasses.MISSING:
        return "required"
    return "unset" if f.default is None else f"`{f.default!r}`".replace("'", '"')


def render() -> str:
    out = [INTRO]
    for title, cls, text in SECTIONS:
        out += [f"## {title}", "", text, "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            meaning = f.metadata.get("help", "")
            choices = f.metadata.get("choices")
            if choices:
                meaning += f" (one of: {', '.join(choices)})"
            allowed = describe_bounds(f.metadata)
            if allowed:
                meaning += f" (must be {allowed})"
            out.append(f"| `{f.name}` | {_default(f)} | {meaning} |")
        out.append("")
        if cls is RunSettings:
            out += _simulator_options()
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    path.write_text(render())
    print(f"wrote {path}")
