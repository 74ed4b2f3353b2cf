#!/usr/bin/env bash
# Set up the project's environment from nothing: a Python 3.12 virtual environment in .venv
# with the locked dependencies (requirements.lock, hash-checked). Safe to run again; it only
# syncs what changed. `--lock` re-resolves requirements.lock from pyproject.toml instead.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python312() {
  local candidate
  for candidate in "${PYTHON:-}" python3.12; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12' | sort -rV); do
      candidate=$(PYENV_VERSION="$version" pyenv which python3.12 2>/dev/null) || continue
      [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
  fi
  return 1
}

PY=$(find_python312) || {
  echo "bootstrap: Python 3.12 is required (the Lambda runtime is python3.12); set PYTHON=/path/to/python3.12" >&2
  exit 1
}

# `uv --version`, not `command -v uv`: a pyenv shim answers the latter even where its uv lives
# only under another Python version, and then fails when run.
if ! uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "uv==0.13.8" >&2
  UV="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv"
else
  UV=uv
fi

export UV_PYTHON_DOWNLOADS=never
if [ "${1:-}" = "--client-wheel" ]; then
  # The tenant client library's wheel (and sdist) into clients/python/dist, for CI.
  exec "$UV" build --quiet --python "$PY" --out-dir clients/python/dist clients/python
fi
if [ "${1:-}" = "--lock" ]; then
  "$UV" pip compile pyproject.toml --all-extras --group dev --generate-hashes --python "$PY" \
    --custom-compile-command "make lock" -o requirements.lock
  exit 0
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  "$UV" venv --quiet --python "$PY" .venv
fi
echo "bootstrap: syncing .venv with requirements.lock (Python: $("$PY" --version))" >&2
# Exactly the locked, hash-checked packages; then meterbridge itself, editable.
"$UV" pip sync --quiet --python .venv/bin/python --require-hashes requirements.lock
"$UV" pip install --quiet --python .venv/bin/python --no-deps -e .
# The tenant client library (clients/python), editable; its only dependency, httpx, is locked.
"$UV" pip install --quiet --python .venv/bin/python --no-deps -e clients/python
