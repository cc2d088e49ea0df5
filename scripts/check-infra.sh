#!/usr/bin/env bash
# Offline checks of azure.yaml, infra/**/*.bicep, compose.yaml and the app-settings contract
# (tests/infra/check_infra.py says what each check proves). Needs python3 and PyPI once, to
# create the git-ignored venv .venv-infra; later runs reuse it and take a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-infra
# Pinned: the checks rely on these grammars/validators behaving the same everywhere.
requirements=(tree-sitter==0.26.1 tree-sitter-bicep==1.1.0 jsonschema==4.26.0 pyyaml==6.0.3)
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi

exec "$venv/bin/python" tests/infra/check_infra.py "$@"
