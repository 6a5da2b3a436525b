#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (as root) or a developer checkout:
# system packages when missing, a virtual environment in .venv with pinned dependencies, and the
# Fashion-MNIST Debian package when the data are not already available.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
data_dir="${PEERNET_DATA:-/usr/share/datasets}"
if [ ! -e "$data_dir/fashion-mnist/train-images-idx3-ubyte.gz" ] && [ ! -e "$data_dir/train-images-idx3-ubyte.gz" ] \
   && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  need_apt+=(dataset-fashion-mnist)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need Debian packages ${need_apt[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.peernet-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing peernet and pinned dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev,ray]"  # ray: tests/study/test_ray_backend.py
  echo "$want" > "$stamp"
fi

# CURVE keys of the reference cluster in node/ (not in git: every checkout makes its own pairs).
if [ ! -d node/keys ]; then
  echo "setup: creating CURVE keys in node/keys" >&2
  .venv/bin/peernet keygen --cluster node >&2
fi
