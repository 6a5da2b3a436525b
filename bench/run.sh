#!/usr/bin/env bash
# All benchmarks: one table on stdout, written to docs/performance.md (raw figures: docs/performance.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m bench.run "$@"
