#!/usr/bin/env bash
# The reader test: loads the files the real sinks wrote (every SQL Server type, edge values)
# with the snippets of docs/reading-the-files.md, run exactly as documented, and checks every
# value against what the Rust side wrote, CSV and Parquet. `cargo test --test readers` writes the files and the
# expected values into target/readers/; this script reads them with DuckDB, pandas, polars and
# pyarrow from a pinned venv under target/ (made once, reused while the pins are unchanged).
# CDC_READERS_SPARK=1 adds PySpark on the machine's Java 17 (a long mode, off in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/venv-readers
requirements=(duckdb==2.0.0 pandas==3.1.1 polars==2.1.0 pyarrow==26.0.1)
if [[ "${CDC_READERS_SPARK:-}" == 1 ]]; then
  requirements+=(pyspark==4.3.0)
fi
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi
if [[ "${1:-}" == "--install-only" ]]; then
  exit 0
fi
# The files: written by `cargo test --test readers` (scripts/test.sh has just run it).
if [[ ! -f target/readers/cases.json ]]; then
  cargo test --quiet --test readers
fi

exec "$venv/bin/python" scripts/readers/check_readers.py "$@"
