#!/usr/bin/env bash
# Create the project virtualenv (.venv) and sync it to requirements.lock.
# Every package is checked against the hashes in the lock (--require-hashes).
# A stamp keyed by the hash of the lock and pyproject makes a second run a no-op.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
UV_VERSION=0.13.9
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "setup: Python 3.11 is required (found $("$python" --version 2>&1))" >&2; exit 2; }

key=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.synced-$key
if [[ -f $stamp ]]; then
  echo "setup: virtualenv up to date"
  exit 0
fi
# uv lives in its own versioned venv in the cache, so syncing .venv never removes it.
uv_home=${OPSCTL_CACHE_DIR:-$root/.cache}/tools/uv-$UV_VERSION
if [[ ! -x $uv_home/bin/uv ]]; then
  echo "setup: installing uv $UV_VERSION"
  "$python" -m venv "$uv_home"
  "$uv_home/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
[[ -x .venv/bin/python ]] || { echo "setup: creating .venv"; "$python" -m venv .venv; }
echo "setup: syncing .venv to requirements.lock"
# Precompile bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI), every run would recompile.
"$uv_home/bin/uv" pip sync -q --require-hashes --compile-bytecode --python .venv/bin/python requirements.lock
# compat mode: a .pth with the repo root, so packages added later import without reinstalling.
"$uv_home/bin/uv" pip install -q --python .venv/bin/python --no-deps \
  --config-settings editable_mode=compat -e .
rm -f .venv/.synced-*
touch "$stamp"
echo "setup: virtualenv ready"
