#!/usr/bin/env bash
# The simulator on CUDA: throughput against the CPU and agreement of a short LeNet run with the CPU.
# Without a CUDA device it says so and exits 77 (nothing measured); results go to stdout as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m bench.gpu "$@"
