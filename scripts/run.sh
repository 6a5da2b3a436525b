#!/usr/bin/env bash
# The main job: set up, then train the reference setup (node/run.toml: 8-node ring, Momentum Tracking,
# Fashion-MNIST with 2 classes per node). Results land in runs/reference/. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/peernet simulate --config node/run.toml --out runs/reference "$@"
