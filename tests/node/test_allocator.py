"""The daemon's malloc settings: a round's freed tensors are reused instead of fresh pages every round."""

from __future__ import annotations

import subprocess
import sys

import pytest

from peernet.node.allocator import reuse_freed_memory

_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from peernet.node.allocator import reuse_freed_memory
    assert reuse_freed_memory()
def round_():  # a round's activations: several blocks of 2 MB alive at once, written, then all freed
    blocks = [np.ones(2 << 20, dtype=np.uint8) for _ in range(6)]
    del blocks
for _ in range(5):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    res = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    assert reuse_freed_memory()
    default, tuned = _page_faults("default"), _page_faults("tuned")
    # By default the freed blocks go back to the system (or were fresh mappings): every round faults ~12 MB in.
    assert default >= 50 * 1000, default
    assert tuned <= default // 20, (tuned, default)
