"""bench/gpu.sh on a machine without CUDA says so clearly and measures nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would really run")
def test_gpu_benchmark_without_cuda_exits_77_with_a_clear_message() -> None:
    res = subprocess.run([sys.executable, "-m", "bench.gpu"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 77
    assert "no CUDA device" in res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
