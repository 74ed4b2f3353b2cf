#!/usr/bin/env bash
# The AWS SAM CLI in its own virtual environment (.tools/sam): its pins conflict with ours.
set -euo pipefail
cd "$(dirname "$0")/.."
SAM_VERSION=1.170.0
if [ -x .tools/sam/bin/sam ] && .tools/sam/bin/sam --version 2>/dev/null | grep -q "$SAM_VERSION"; then
  exit 0
fi
PY=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
echo "install-sam: installing aws-sam-cli==$SAM_VERSION into .tools/sam (about a minute)" >&2
"$PY" -m venv .tools/sam
.tools/sam/bin/pip install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_VERSION"
