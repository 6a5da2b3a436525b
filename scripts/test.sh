#!/usr/bin/env bash
# Run the whole test suite (after set-up). Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is turned into a failure so an empty run never passes.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit "$rc"
