#!/usr/bin/env bash
# Run cdc-copy locally against SQL Server 2022 + Azurite in Docker (docs/local.md):
#   1. start the containers and wait until they are healthy
#   2. run sql/setup.sql (sample dbo.customers table, CDC, the cdc_copy.watermark table)
#   3. create local.settings.json from local.settings.example.json if it is missing
#   4. build the handler for this machine and put it at ./handler (host.json runs `handler`)
#   5. func start (Ctrl-C stops the host; `docker compose down` stops the containers)
#
# Options: --no-setup skips step 2 (setup.sql is meant to be re-runnable, but it is not needed
# twice), --no-start stops before `func start`.
set -euo pipefail
cd "$(dirname "$0")/.."

run_setup=1
start=1
for arg in "$@"; do
  case "$arg" in
    --no-setup) run_setup=0 ;;
    --no-start) start=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run-local: unknown option $arg" >&2; exit 2 ;;
  esac
done

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "run-local: '$1' not found: $2" >&2; exit 1; }
}
need docker "install Docker (with the compose plugin)"
need cargo "install Rust from https://rustup.rs"
if [[ $start -eq 1 ]]; then
  need func "install Azure Functions Core Tools v4 (npm i -g azure-functions-core-tools@4)"
fi

echo "run-local: starting SQL Server and Azurite (docker compose up -d --wait)"
docker compose up -d --wait mssql azurite

if [[ $run_setup -eq 1 ]]; then
  if [[ ! -f sql/setup.sql ]]; then
    echo "run-local: sql/setup.sql is missing" >&2
    exit 1
  fi
  echo "run-local: running sql/setup.sql"
  docker compose --profile setup run --rm mssql-setup
fi

if [[ ! -f local.settings.json ]]; then
  cp local.settings.example.json local.settings.json
  echo "run-local: created local.settings.json from local.settings.example.json"
fi
if [[ -n "${MSSQL_SA_PASSWORD:-}" ]] && ! grep -qF -- "$MSSQL_SA_PASSWORD" local.settings.json; then
  echo "run-local: note: MSSQL_SA_PASSWORD is set; make CDC_SQL_CONNECTION_STRING in local.settings.json use it" >&2
fi

echo "run-local: building the handler (cargo build --release)"
cargo build --release --bin handler
cp "${CARGO_TARGET_DIR:-target}/release/handler" ./handler
chmod 0755 ./handler

if [[ $start -eq 1 ]]; then
  echo "run-local: func start (FullLoad: POST http://localhost:7071/api/FullLoad)"
  exec func start
fi
