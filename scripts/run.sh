#!/usr/bin/env bash
# The main job: set up, then run a real local cluster (a bootstrap and 8 node daemons as separate
# processes on 127.0.0.1) on the reference setup (node/run.toml: 8-node ring, Momentum Tracking,
# Fashion-MNIST with 2 classes per node). Results land in runs/reference/, replacing the previous run's
# (--force). Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/peernet local --config node/run.toml --out runs/reference --force "$@"
