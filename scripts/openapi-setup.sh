#!/usr/bin/env bash
# Installs the OpenAPI 3.1 validator tests/openapi.rs runs on openapi.yaml: the Python
# openapi-spec-validator (python-openapi project; it checks a document against the official
# OpenAPI 3.1 JSON Schema), pinned, from PyPI into a virtual environment under target/ (never
# the system's Python). Does nothing when it is already there. .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/openapi-venv
version=0.9.0
if [ -x "$venv/bin/openapi-spec-validator" ] \
  && "$venv/bin/pip" show openapi-spec-validator 2>/dev/null | grep -qx "Version: $version"; then
  exit 0
fi
echo "openapi-setup: installing openapi-spec-validator $version into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$version"
