#!/usr/bin/env bash
# Run the whole test suite (after set-up): ruff and mypy, then pytest. Extra arguments go to pytest (and
# skip the lint step, so a single test file can be rerun quickly).
# pytest's exit code 5 ("no tests collected") is turned into a failure so an empty run never passes.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# The chaos and deploy tests put processes in network namespaces (iproute2, nftables, openssh-server); as
# root, install what is missing.
if [ "$(id -u)" -eq 0 ]; then
  test_apt=()
  command -v ip >/dev/null 2>&1 || test_apt+=(iproute2)
  command -v nft >/dev/null 2>&1 || test_apt+=(nftables)
  # The Ansible deployment test runs an sshd per namespace host (tests/deploy).
  [ -x /usr/sbin/sshd ] || test_apt+=(openssh-server)
  if [ ${#test_apt[@]} -gt 0 ]; then
    echo "test.sh: installing ${test_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${test_apt[@]}"; } >/dev/null || exit 1
  fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Lint and types first (seconds): a style or type error fails the run like a failing test.
if [ $# -eq 0 ]; then
  .venv/bin/ruff check peernet tests bench scripts || exit 1
  .venv/bin/mypy || exit 1
fi
.venv/bin/python -m pytest -q --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit "$rc"
