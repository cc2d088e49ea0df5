#!/usr/bin/env bash
# The test command (README "Run the tests"): everything CI runs, on a fresh machine.
# Installs what it needs by itself: Azurite from npm (pinned), the Python tools for the
# infrastructure checks and the reader checks (in venvs). Needs: cargo, node/npm, python3 — all
# on the build image.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION=3.37.0
prefix="$PWD/.azurite-npm"
if [ -z "${AZURITE_BIN:-}" ]; then
  if [ ! -x "$prefix/node_modules/.bin/azurite-blob" ]; then
    echo "installing azurite@$AZURITE_VERSION from npm into $prefix"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$prefix" "azurite@$AZURITE_VERSION"
  fi
  export AZURITE_BIN="$prefix/node_modules/.bin/azurite-blob"
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
mkdir -p target
cargo test --workspace --lib --bins --tests --quiet 2>&1 | tee target/test-output.txt
echo "== infrastructure checks"
bash scripts/check-infra.sh
echo "== reader checks (docs/reading-the-files.md run by DuckDB, pandas, polars, pyarrow)"
bash scripts/check-readers.sh
